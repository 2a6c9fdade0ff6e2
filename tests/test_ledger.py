"""edgeemo.ledger on its own: the hand-off of a recorded file to done/ or failed/, and the crash-loop guard."""
from __future__ import annotations

import json
import os

import pytest

from edgeemo.ledger import ERROR_SUFFIX, Attempts, FileChanged, Mover


@pytest.fixture
def folders(tmp_path):
    inbox, done, failed = (tmp_path / n for n in ("inbox", "done", "failed"))
    for f in (inbox, done, failed):
        f.mkdir()
    return inbox, Mover(done, failed)


def test_ok_files_go_to_done_and_a_taken_name_gets_a_suffix(folders):
    inbox, mover = folders
    for i in range(3):
        (inbox / "a.jpg").write_bytes(b"photo %d" % i)
        dst = mover.finish(inbox / "a.jpg", {"status": "ok"})
        assert dst.name == ("a.jpg", "a-1.jpg", "a-2.jpg")[i] and dst.read_bytes() == b"photo %d" % i
    assert sorted(os.listdir(inbox)) == []
    assert sorted(os.listdir(mover.done)) == ["a-1.jpg", "a-2.jpg", "a.jpg"]


def test_failed_files_get_their_error_file_with_the_record(folders):
    inbox, mover = folders
    (inbox / "bad.jpg").write_bytes(b"junk")
    rec = {"status": "unreadable", "file": str(inbox / "bad.jpg"), "sha256": "x", "error": "not an image"}
    dst = mover.finish(inbox / "bad.jpg", rec)
    err = json.loads((dst.parent / ("bad.jpg" + ERROR_SUFFIX)).read_text())
    assert dst == mover.failed / "bad.jpg" and err["error"] == "not an image" and err["moved_to"] == str(dst)


def test_a_crash_between_link_and_unlink_is_finished_without_a_copy(folders):
    inbox, mover = folders
    (inbox / "c.jpg").write_bytes(b"once")
    os.link(inbox / "c.jpg", mover.done / "c.jpg")            # the link was made, then the daemon died
    dst = mover.finish(inbox / "c.jpg", {"status": "ok"})
    assert dst == mover.done / "c.jpg" and os.listdir(mover.done) == ["c.jpg"] and not os.listdir(inbox)


def test_a_name_that_now_points_at_another_file_is_not_moved(folders):
    inbox, mover = folders
    (inbox / "d.jpg").write_bytes(b"first")
    st = os.lstat(inbox / "d.jpg")                            # the bytes the record describes
    os.link(inbox / "d.jpg", inbox.parent / "kept")           # (kept alive, so its inode is not reused)
    (inbox / "d.jpg").unlink()
    (inbox / "d.jpg").write_bytes(b"second, written meanwhile")
    with pytest.raises(FileChanged):
        mover.finish(inbox / "d.jpg", {"status": "unreadable"}, expect=(st.st_dev, st.st_ino))
    assert (inbox / "d.jpg").read_bytes() == b"second, written meanwhile"     # left for a new record
    assert os.listdir(mover.failed) == []                     # no link, no error file left behind
    with pytest.raises(FileNotFoundError):
        mover.finish(inbox / "gone.jpg", {"status": "ok"})


def test_attempts_count_runs_on_a_file_and_survive_a_restart(tmp_path):
    a = Attempts(tmp_path / "attempts")
    name = "odd\nname \udcff.jpg"
    assert a.begin(name) == 1 and a.begin(name) == 2
    again = Attempts(tmp_path / "attempts")                   # the daemon died: the marker is left over
    assert again.left_over() == [(name, 2)] and again.count(name) == 2
    again.end(name)
    assert again.count(name) == 0 and again.left_over() == []


def test_damaged_attempt_markers_are_dropped_not_fatal(tmp_path):
    a = Attempts(tmp_path / "attempts")
    for i, junk in enumerate((b"", b"not json", b"[" * 100_000, b'{"name": "x"}', b'{"name": "x", "count": "y"}')):
        (tmp_path / "attempts" / f"junk{i}").write_bytes(junk)
    assert a.left_over() == [] and os.listdir(tmp_path / "attempts") == []
