"""edgeemo.intake.Intake, the folder daemon's queue, on its own: order, capacity, settling, names in hand."""
from __future__ import annotations

import os
import threading
import time

from edgeemo.intake import Intake


def test_ready_names_come_out_in_arrival_order_once():
    q = Intake(capacity=10, settle=1.0)
    for name in ("b.jpg", "a.jpg", "b.jpg", "c.jpg"):
        assert q.add(name, ready=True)
    assert [q.take(0.01) for _ in range(4)] == ["b.jpg", "a.jpg", "c.jpg", None]


def test_a_full_queue_drops_and_asks_for_a_rescan_when_half_empty():
    q = Intake(capacity=4, settle=1.0)
    assert all(q.add(f"{i}.jpg", ready=True) for i in range(4))
    assert not q.add("late.jpg", ready=True) and q.overflowed and not q.needs_rescan()
    q.take(0.01)
    assert not q.needs_rescan()                 # 3 of 4 still held
    q.take(0.01)
    assert q.needs_rescan()                     # half empty: the owner rescans for what was dropped
    q.clear_overflow()
    assert not q.needs_rescan()


def test_a_name_seen_again_while_in_hand_is_looked_at_once_more():
    q = Intake(capacity=4, settle=1.0)
    q.add("x.jpg", ready=True)
    assert q.take(0.01) == "x.jpg" and "x.jpg" in q
    assert q.add("x.jpg", ready=True) and q.take(0.01) is None      # not queued twice while in hand
    assert q.release("x.jpg") is True           # ...but the worker is told to look again
    q.add("y.jpg", ready=True)
    assert q.take(0.01) == "y.jpg" and q.release("y.jpg") is False


def test_pending_names_wait_until_size_and_mtime_hold_for_settle_seconds(tmp_path):
    q = Intake(capacity=4, settle=5.0)
    f = tmp_path / "p.jpg"
    f.write_bytes(b"12")
    q.add("p.jpg", ready=False)

    def stat(name):
        return os.stat(tmp_path / name)
    q.check_pending(stat, now=100.0)            # first look: remembered
    assert q.counts() == (0, 1, 0)
    q.check_pending(stat, now=104.0)
    assert q.counts() == (0, 1, 0)              # unchanged for 4 s of 5
    f.write_bytes(b"1234")                      # still being written: the clock starts again
    q.check_pending(stat, now=106.0)
    q.check_pending(stat, now=110.0)
    assert q.counts() == (0, 1, 0)
    q.check_pending(stat, now=111.0)
    assert q.counts() == (1, 0, 0) and q.take(0.01) == "p.jpg"
    q.add("gone.jpg", ready=False)              # a pending name whose file vanished is dropped
    q.check_pending(stat, now=120.0)
    assert q.counts() == (0, 0, 1)


def test_trusted_old_mtime_is_ready_at_once(tmp_path):
    f = tmp_path / "old.jpg"
    f.write_bytes(b"x")
    os.utime(f, (time.time() - 60, time.time() - 60))
    q = Intake(capacity=4, settle=5.0, trust_mtime=True)
    q.add("old.jpg", ready=False)
    q.check_pending(lambda n: os.stat(tmp_path / n), now=0.0)
    assert q.take(0.01) == "old.jpg"


def test_take_wakes_on_add_and_on_close():
    q = Intake(capacity=4, settle=1.0)
    got = []
    t = threading.Thread(target=lambda: got.append(q.take(5.0)))
    t.start()
    time.sleep(0.05)
    q.add("now.jpg", ready=True)
    t.join(2)
    assert got == ["now.jpg"]
    t = threading.Thread(target=lambda: got.append(q.take(5.0)))
    t.start()
    time.sleep(0.05)
    q.close()
    t.join(2)
    assert got == ["now.jpg", None] and not t.is_alive()
