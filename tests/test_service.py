"""edgeemo.service's small parts on their own: Backoff, Health, Tally."""
from __future__ import annotations

from edgeemo.service import MAX_BACKOFF, Backoff, Health, Tally


def test_backoff_doubles_up_to_the_most_and_resets():
    b = Backoff(1.0, 8.0)
    assert [b.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    b.reset()
    assert b.next() == 1.0
    d = Backoff()
    waits = [d.next() for _ in range(20)]
    assert waits[0] == 1.0 and max(waits) == MAX_BACKOFF and waits == sorted(waits)


def test_health_names_the_workers_stuck_on_one_file():
    import time
    h = Health(3)
    h.busy(0)
    h.busy(2)
    h.idle(2)
    now = time.monotonic()
    assert h.stuck(now, limit=60.0) == []                  # busy for a moment only
    assert h.stuck(now + 61.0, limit=60.0) == [0]           # worker 0 on one file for over a minute
    h.idle(0)
    assert h.stuck(now + 61.0, limit=60.0) == []


def test_tally_counts_and_snapshots():
    t = Tally()
    t.add("ok")
    t.add("ok", 2)
    t.add("error")
    snap = t.snapshot()
    t.add("ok")
    assert snap == {"ok": 3, "error": 1} and t.snapshot()["ok"] == 4
