"""The folder daemon against a hostile or unlucky inbox: links, loops, FIFOs, lock files replaced or
deleted, names too long, files changed in hand or half-written, lost events, restarts and replays."""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import pytest
from typer.testing import CliRunner

from edgeemo.cli import app

from daemon_harness import png_bytes, wait_until

TIME = re.compile(rb'"time":"[^"]*"|^[^,\n]*(?=,)', re.M)


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_file_changed_while_in_hand_is_looked_at_again(tmp_path, device_model):
    """An event for a name that a worker is classifying must bring the name back once the worker is done
    (the new bytes get their own record)."""
    from edgeemo.config import WatchSettings
    from edgeemo.watch import FolderDaemon
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.jpg").write_bytes(b"first version")
    d = FolderDaemon(WatchSettings(inbox=inbox, out=tmp_path / "out", done=tmp_path / "done",
                                   failed=tmp_path / "failed", model=device_model, detector="none", settle=0.0))
    calls = []

    def handle(clf, name, worker=None):
        calls.append(name)
        if len(calls) == 1:
            (inbox / name).write_bytes(b"second version")
            d.intake.add(name, ready=False)         # the watcher's event for the rewrite, while in hand

    d.handle = handle
    d.intake.add("a.jpg", ready=True)
    worker = threading.Thread(target=d._work, args=(0, d.classifiers[0]))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            d.intake.check_pending(lambda n: os.stat(inbox / n), time.monotonic())
            time.sleep(0.02)
    finally:
        d.stop_event.set()
        worker.join()
        d.shutdown()
    assert calls == ["a.jpg", "a.jpg"]


def test_a_link_planted_as_the_lock_file_cannot_touch_the_ledger(daemon_factory):
    """Issue 10, defect 2: inbox/.edgeemo.lock replaced by a symlink to results.jsonl truncated the ledger."""
    d = daemon_factory().start()
    (d.inbox / "a.png").write_bytes(png_bytes(1))
    wait_until(lambda: d.n_records() == 1, "one record", d)
    assert d.signal(signal.SIGTERM) == 0
    ledger = d.results / "results.jsonl"
    before = ledger.read_bytes()
    lock = d.inbox / ".edgeemo.lock"
    lock.unlink(missing_ok=True)
    os.symlink(ledger, lock)
    d.start()
    (d.inbox / "b.png").write_bytes(png_bytes(2))
    wait_until(lambda: d.n_records() == 2, "two records", d)
    assert d.signal(signal.SIGTERM) == 0
    assert ledger.read_bytes().startswith(before) and len(d.records()) == 2


def test_no_second_watcher_even_when_every_lock_file_is_deleted(daemon_factory, tmp_path, device_model):
    """Issue 10, defect 2: deleting the lock files let a second watcher run on the same inbox."""
    import subprocess
    import sys
    d = daemon_factory().start()
    for p in tmp_path.rglob(".edgeemo.lock"):
        p.unlink()
    try:
        second = subprocess.run([sys.executable, "-m", "edgeemo.cli", "watch", str(d.inbox), "--model", str(device_model),
                                 "--detector", "none", "--out", str(tmp_path / "out2"), "--done", str(tmp_path / "d2"),
                                 "--failed", str(tmp_path / "f2")], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("a second watcher ran on an inbox that another one holds")
    assert second.returncode == 2 and "is in use by another edgeemo watch" in second.stderr
    assert d.signal(signal.SIGTERM) == 0


def test_a_symlink_loop_in_the_inbox_gets_a_record_and_the_daemon_starts(daemon_factory):
    """Issue 10, defect 4: a link to itself in the inbox stopped the daemon from starting."""
    d = daemon_factory()
    os.symlink("loop.jpg", d.inbox / "loop.jpg")
    os.symlink(d.root, d.inbox / "to-a-folder")
    d.start()
    (d.inbox / "a.png").write_bytes(png_bytes(3))
    wait_until(lambda: d.n_records() == 3, "three records", d)
    recs = {os.path.basename(r["file"]): r for r in d.records()}
    assert recs["loop.jpg"]["status"] == "unreadable" and "a symbolic link" in recs["loop.jpg"]["error"]
    assert recs["to-a-folder"]["status"] == "unreadable" and recs["a.png"]["status"] in ("ok", "no_face")
    wait_until(lambda: os.path.islink(d.inbox / "failed" / "loop.jpg"), "the loop set aside", d)
    assert d.signal(signal.SIGTERM) == 0


def test_links_made_while_running_are_noticed_and_symlinks_never_followed(daemon_factory, tmp_path):
    """Issue 10, defects 4 and 11: `ln -s` and `ln` into a running inbox were not noticed until a restart, and
    a symlink's target outside the inbox was read."""
    d = daemon_factory().start()
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(4))
    os.symlink(secret, d.inbox / "peek.png")
    outside = tmp_path / "photo.png"
    outside.write_bytes(png_bytes(5))
    os.link(outside, d.inbox / "linked.png")
    wait_until(lambda: d.n_records() == 2, "two records", d)
    recs = {os.path.basename(r["file"]): r for r in d.records()}
    assert recs["peek.png"]["status"] == "unreadable" and recs["peek.png"]["sha256"] is None
    assert "not followed" in recs["peek.png"]["error"] and "secret" not in recs["peek.png"]["error"]
    assert recs["linked.png"]["status"] in ("ok", "no_face") and recs["linked.png"]["width"] == 48
    assert d.signal(signal.SIGTERM) == 0


def test_classify_refuses_a_fifo_and_never_echoes_file_content(tmp_path, device_model):
    """Issue 10, defect 11: `classify` on a FIFO named on the command line blocked forever, and error records
    copied the first bytes of a file."""
    import subprocess
    import sys
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    text = tmp_path / "notes.jpg"
    text.write_bytes(b"SECRET-TOKEN-123 not an image")
    try:
        res = subprocess.run([sys.executable, "-m", "edgeemo.cli", "classify", str(fifo), str(text), "--model",
                              str(device_model), "--detector", "none"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("classify blocked on a FIFO")
    recs = {os.path.basename(r["file"]): r for r in map(json.loads, res.stdout.splitlines())}
    assert res.returncode == 0 and [r["status"] for r in recs.values()] == ["unreadable", "unreadable"]
    assert "not a regular file (a FIFO)" in recs["pipe.jpg"]["error"]
    assert "SECRET" not in res.stdout + res.stderr and "not a supported image" in recs["notes.jpg"]["error"]


def test_a_name_too_long_for_its_error_file_does_not_wedge_the_daemon(daemon_factory):
    """Issue 10, defect 3: an undecodable file named over 239 bytes could not get its <name>.error.json, and
    its move was retried forever while the files behind it waited."""
    d = daemon_factory().start()
    long_name = "x" * 245 + ".jpg"
    (d.inbox / long_name).write_bytes(b"not an image at all")
    (d.inbox / "after.png").write_bytes(png_bytes(6))
    wait_until(lambda: d.n_records() == 2, "two records", d)
    wait_until(lambda: not os.path.lexists(d.inbox / long_name), "the long name moved on", d)
    failed = [p.name for p in (d.inbox / "failed").iterdir()]
    assert len(failed) == 2 and all(len(os.fsencode(n)) <= 255 for n in failed)
    error = json.loads(next(p for p in (d.inbox / "failed").iterdir() if p.name.endswith(".error.json")).read_text())
    assert error["file"].endswith(long_name) and error["status"] == "unreadable"
    assert d.signal(signal.SIGTERM) == 0


def test_the_crash_loop_guard_keeps_any_name(tmp_path):
    """Issue 10, defect 3: a newline in a name split the attempt marker, defeating the crash-loop guard."""
    from edgeemo.ledger import Attempts
    a = Attempts(tmp_path / "state")
    odd = ["a\nb.jpg", "caf\udce9.jpg", "plain.jpg"]
    for name in odd:
        a.begin(name)
        a.begin(name)
    assert sorted(Attempts(tmp_path / "state").left_over()) == sorted((n, 2) for n in odd)
    a.end(odd[0])
    assert a.count(odd[0]) == 0 and a.count(odd[1]) == 2


def test_an_inbox_removed_and_created_again_is_watched_again(daemon_factory, tmp_path):
    """Issue 10, defect 5: after the inbox was replaced by a new folder the daemon stayed up, fed the watchdog
    and never saw a new file."""
    inbox = tmp_path / "in"
    d = daemon_factory("--out", tmp_path / "out", "--done", tmp_path / "done", "--failed", tmp_path / "failed",
                       "--rescan", "0", inbox=inbox).start()
    os.rename(inbox, tmp_path / "old-in")
    inbox.mkdir()
    wait_until(lambda: "was replaced by a new folder" in d.run_log(), "the new inbox noticed", d)
    (inbox / "new.png").write_bytes(png_bytes(7))
    ledger = tmp_path / "out" / "results.jsonl"
    wait_until(lambda: ledger.exists() and ledger.read_bytes().count(b"\n") == 1, "a record", d)
    assert d.proc.poll() is None and d.signal(signal.SIGTERM) == 0


def test_a_periodic_scan_finds_files_whose_events_were_lost(tmp_path, device_model):
    """Issue 10, defect 5: a file the watcher never announced (an inotify overflow) waited for a restart."""
    from edgeemo.config import WatchSettings
    from edgeemo.watch import FolderDaemon
    inbox = tmp_path / "in"
    inbox.mkdir()
    d = FolderDaemon(WatchSettings(inbox=inbox, out=tmp_path / "out", done=tmp_path / "done",
                                   failed=tmp_path / "failed", model=device_model, detector="none", rescan=5.0))
    try:
        st = os.stat(inbox)
        d._inbox_id, d._last_scan = (st.st_dev, st.st_ino), 100.0
        (inbox / "unannounced.png").write_bytes(png_bytes(8))
        d.tick(101.0)                   # before the interval: nothing
        assert "unannounced.png" not in d.intake
        d.tick(106.0)
        assert "unannounced.png" in d.intake
    finally:
        d.shutdown()


def test_sighup_does_not_stop_the_daemon(daemon_factory):
    """Issue 10, defect 11: SIGHUP killed the daemon; it is logged and ignored (settings are read at start)."""
    d = daemon_factory("--log-level", "info").start()
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "SIGHUP ignored" in d.run_log(), "the SIGHUP logged", d)
    (d.inbox / "a.png").write_bytes(png_bytes(9))
    wait_until(lambda: d.n_records() == 1, "a record after the SIGHUP", d)
    assert d.proc.poll() is None and d.signal(signal.SIGTERM) == 0


def test_a_photo_closed_half_written_and_appended_later_gets_one_record(daemon_factory, data_dir):
    """Issue 10, defect 10: half a JPEG closed, the rest appended 1.5 s later, gave a 'truncated' record in
    failed/ and a second file and record for the rest."""
    d = daemon_factory("--settle", "3").start()
    data = (data_dir / "scenes" / "2008_001322.jpg").read_bytes()
    target = d.inbox / "slow.jpg"
    with open(target, "wb") as fh:
        fh.write(data[: len(data) // 2])
    time.sleep(1.5)
    with open(target, "ab") as fh:
        fh.write(data[len(data) // 2:])
    wait_until(lambda: d.n_records() >= 1 and not target.exists(), "the photo processed", d)
    time.sleep(1.0)
    recs = d.records()
    assert len(recs) == 1 and recs[0]["status"] in ("ok", "no_face"), recs
    assert [p.name for p in (d.inbox / "done").iterdir()] == ["slow.jpg"]
    assert d.signal(signal.SIGTERM) == 0


def test_a_photo_that_stays_incomplete_is_recorded_truncated(daemon_factory, data_dir):
    d = daemon_factory("--settle", "1").start()
    data = (data_dir / "scenes" / "2008_001322.jpg").read_bytes()
    (d.inbox / "cut.jpg").write_bytes(data[: len(data) // 2])
    wait_until(lambda: d.n_records() == 1, "a record", d, timeout=30)
    rec = d.records()[0]
    assert rec["status"] == "unreadable" and "truncated JPEG" in rec["error"]
    assert d.signal(signal.SIGTERM) == 0


def test_the_record_describes_the_bytes_that_are_archived(daemon_factory, tmp_path):
    """Issue 10, defect 1: a 49-megapixel photo renamed into the inbox and replaced under the same name 0.3 s
    later by a small photo gave one record with the big file's sha256, while done/ held the small file."""
    import cv2
    import hashlib
    import numpy as np
    rng = np.random.default_rng(0)
    big = cv2.resize(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8), (8000, 6100), interpolation=cv2.INTER_LINEAR)
    ok, enc = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (tmp_path / "big.jpg").write_bytes(enc.tobytes())
    (tmp_path / "small.png").write_bytes(png_bytes(10))
    d = daemon_factory().start()
    os.rename(tmp_path / "big.jpg", d.inbox / "x.jpg")
    time.sleep(0.3)
    os.rename(tmp_path / "small.png", d.inbox / "x.jpg")
    small_sha = hashlib.sha256(png_bytes(10)).hexdigest()
    wait_until(lambda: small_sha in {r["sha256"] for r in d.records()}, "a record of the small file", d)
    wait_until(lambda: not (d.inbox / "x.jpg").exists(), "the inbox emptied", d)
    assert d.signal(signal.SIGTERM) == 0
    archived = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (d.inbox / "done").iterdir()}
    recorded = {r["sha256"] for r in d.records()}
    assert archived <= recorded and small_sha in archived, (archived, recorded)
    for r in d.records():           # a record whose bytes were archived names the archived file's size
        if r["sha256"] == small_sha:
            assert (r["width"], r["height"]) == (48, 48)


def test_an_inotify_queue_overflow_is_followed_by_a_scan_at_once(daemon_factory):
    """Issue 10, defect 5: an inotify queue overflow stranded thousands of files until a restart. Here the
    kernel's queue is made small for this daemon (fs.inotify.max_queued_events is read when its watch is
    created; root only), the daemon is stopped, more files arrive than the queue holds, and it resumes with
    the periodic scan turned off: the overflow alone must bring every file in."""
    knob = "/proc/sys/fs/inotify/max_queued_events"
    try:
        before = open(knob).read().strip()
        with open(knob, "w") as f:
            f.write("64")
    except OSError:
        pytest.skip("needs root to make the kernel's inotify queue small (fs.inotify.max_queued_events)")
    try:
        d = daemon_factory("--rescan", "0").start()
    finally:
        with open(knob, "w") as f:
            f.write(before)
    d.proc.send_signal(signal.SIGSTOP)
    try:
        for i in range(300):
            (d.inbox / f"img{i:03d}.png").write_bytes(png_bytes(i))
    finally:
        d.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: d.n_records() == 300, "300 records after the overflow", d)
    assert "inotify queue overflow" in d.log_text()
    assert d.signal(signal.SIGTERM) == 0
    assert len({r["file"] for r in d.records()}) == 300


def test_a_photo_dropped_again_while_stopped_gets_a_new_record(daemon_factory):
    """Issue 10, defect 11: the same photo dropped again (same name, same bytes) while the daemon was stopped
    was taken for a replay of a crash and moved on without a record. A replay is a file still in hand when
    the daemon died (its attempt marker is there); this one is a new arrival."""
    d = daemon_factory().start()
    photo = png_bytes(41)
    (d.inbox / "again.png").write_bytes(photo)
    wait_until(lambda: d.n_records() == 1 and not os.path.lexists(d.inbox / "again.png"), "the first drop", d)
    assert d.signal(signal.SIGTERM) == 0
    (d.inbox / "again.png").write_bytes(photo)
    d.start()
    wait_until(lambda: d.n_records() == 2 and not os.path.lexists(d.inbox / "again.png"), "the second drop", d)
    assert d.signal(signal.SIGTERM) == 0
    assert sorted(p.name for p in (d.inbox / "done").iterdir()) == ["again-1.png", "again.png"]
    assert "dropped again" in d.run_log()


def test_a_replay_of_files_never_read_is_recognised_without_reading_them(daemon_factory):
    """Found by bench/hostile_soak.py: after a kill -9 between the record and the move, a file refused unread
    (over 256 MiB; here sparse) was hashed whole at restart, did not match its record (no sha256) and got a
    second record; a FIFO in the same state would have blocked the restart."""
    from edgeemo.ledger import Attempts
    from edgeemo.watch import STATE_DIR
    d = daemon_factory().start()
    with open(d.inbox / "huge.png", "wb") as fh:
        fh.truncate(300 << 20)
    os.mkfifo(d.inbox / "pipe.jpg")
    wait_until(lambda: d.n_records() == 2 and not os.listdir(d.inbox / "failed") == [], "two records", d)
    wait_until(lambda: not any(os.path.lexists(d.inbox / n) for n in ("huge.png", "pipe.jpg")), "the moves", d)
    assert d.signal(signal.SIGTERM) == 0
    marks = Attempts(d.inbox / "results" / STATE_DIR)
    for n in ("huge.png", "pipe.jpg"):            # the state a kill -9 after the record leaves
        os.replace(d.inbox / "failed" / n, d.inbox / n)
        marks.begin(n)
    d.start()
    wait_until(lambda: not any(os.path.lexists(d.inbox / n) for n in ("huge.png", "pipe.jpg")), "moved again", d)
    assert d.signal(signal.SIGTERM) == 0
    assert d.n_records() == 2
    assert d.run_log().count("already recorded before the restart") == 2
