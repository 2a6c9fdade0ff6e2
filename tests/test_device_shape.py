"""The device package's shape (issue 9): one results encoder for files and stdout, one options object with
its checks, one error base with exit statuses, the detector interface, and the breakages that used to slip
past the suite (a changed file not looked at again, done/ and failed/ allowed to be one folder)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time

import pytest
from typer.testing import CliRunner

from edgeemo.cli import app

from test_watch import daemon_factory, png_bytes, wait_until  # noqa: F401 - daemon_factory is a fixture

TIME = re.compile(rb'"time":"[^"]*"|^[^,\n]*(?=,)', re.M)


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture()
def photos(tmp_path, data_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("Tom_Cruise_avp_2014_4.jpg", "2008_001322.jpg", "dogs.jpg"):
        shutil.copy(data_dir / "scenes" / name, folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "=formula.png").write_bytes((data_dir / "scenes" / "dogs.jpg").read_bytes())
    return folder


@pytest.mark.parametrize("fmt, name", [("jsonl", "results.jsonl"), ("csv", "results.csv")])
def test_stdout_carries_the_bytes_of_the_result_files(photos, tmp_path, device_model, yunet_model, fmt, name):
    common = ["--model", device_model, "--detector", "yunet", "--detector-model", yunet_model, "--format", fmt,
              "--jobs", 1]                                     # name order: the two runs line up record by record
    to_stdout = run("classify", photos, *common)
    to_file = run("classify", photos, *common, "--out", tmp_path / "out")
    assert to_stdout.exit_code == 0 and to_file.exit_code == 0, to_stdout.output + to_file.output
    on_disk = (tmp_path / "out" / name).read_bytes()
    printed = to_stdout.stdout_bytes
    assert len(on_disk.splitlines()) == len(printed.splitlines()) >= 5
    # the records differ only in the time they were made
    assert TIME.sub(b"T", printed) == TIME.sub(b"T", on_disk)


def test_options_are_checked_in_one_place(device_model):
    from edgeemo.errors import SetupError
    from edgeemo.pipeline import Classifier, ClassifierOptions
    with pytest.raises(SetupError, match="--threads 0: must be an integer of at least 1"):
        ClassifierOptions(threads=0)
    with pytest.raises(SetupError, match="--detector 'retina': must be one of auto, yunet, haar, none"):
        Classifier(device_model, detector="retina")
    with pytest.raises(SetupError, match=r"--score-threshold 1.5: must be a number in \(0, 1\]"):
        ClassifierOptions(score_threshold=1.5)
    bad = run("classify", "x.jpg", "--model", device_model, "--min-face", 0)
    assert bad.exit_code == 2 and "edgeemo: error: --min-face 0: must be an integer of at least 1" in bad.output
    opts = ClassifierOptions(model=device_model, detector="none", min_face=30)
    clf = Classifier(opts)
    assert clf.options is opts and clf.detector.precropped and clf.detector.model_path is None


def test_every_error_has_one_base_and_an_exit_status(tmp_path):
    from edgeemo.detect import DetectorError
    from edgeemo.errors import EdgeemoError, SetupError
    from edgeemo.modelfile import ModelFileError
    from edgeemo.results import ResultsError
    from edgeemo.runtime import RuntimeUnavailable
    for cls in (DetectorError, ModelFileError, ResultsError, RuntimeUnavailable, SetupError):
        assert issubclass(cls, EdgeemoError)
    assert SetupError.exit_code == 2 and ModelFileError.exit_code == 1
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"not a model at all")
    res = run("info", fake)
    assert res.exit_code == 1 and res.output.startswith("edgeemo: error: ") and str(fake) in res.output
    res = run("classify", tmp_path, "--model", fake)
    assert res.exit_code == 1 and "not a TFLite model" in res.output


def test_every_detector_states_the_interface(yunet_model):
    from edgeemo.detect import BACKENDS, DETECTORS, make_detector
    assert set(BACKENDS) | {"auto"} == set(DETECTORS)
    for name in BACKENDS:
        det = make_detector(name, yunet_model if name == "yunet" else None)
        assert det.name == name and isinstance(det.precropped, bool) and callable(det.detect)
        expected = {"yunet": yunet_model, "none": None}.get(name)
        if name == "haar":
            assert det.model_path.name == "haarcascade_frontalface_default.xml" and det.model_path.is_file()
        else:
            assert det.model_path == expected
        assert det.precropped == (name == "none")


def test_done_and_failed_must_be_two_folders(tmp_path):
    from edgeemo.config import resolve
    from edgeemo.errors import SetupError
    inbox = tmp_path / "in"
    inbox.mkdir()
    same = {"inbox": str(inbox), "done": str(tmp_path / "x"), "failed": str(tmp_path / "x")}
    with pytest.raises(SetupError, match="done and failed are the same folder"):
        resolve(same)       # checked before anything starts (the CLI turns it into exit status 2)
    assert resolve({**same, "failed": str(tmp_path / "y")}).failed == tmp_path / "y"


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


def test_records_of_rejected_files_have_the_record_schema(tmp_path, device_model):
    from edgeemo.record import STATUSES
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    os.symlink(folder / "nowhere.jpg", folder / "dangling.jpg")
    res = run("classify", folder, "--model", device_model, "--detector", "none")
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert {r["status"] for r in recs} <= set(STATUSES) and len(recs) == 2
    keys = {"file", "sha256", "status", "error", "width", "height", "faces", "model", "time"}
    # classify adds the input's size and mtime_ns where it is a regular file (what --resume compares)
    assert all(set(r) - {"size", "mtime_ns"} == keys for r in recs)
    assert all(r["status"] == "unreadable" and r["error"] for r in recs)


def test_csv_cells_with_line_breaks_are_quoted_and_formulas_escaped():
    """Issue 10, defect 8: a carriage return in a file name must not split a row, and no cell may start a
    formula."""
    import csv
    import io

    from edgeemo.results import csv_bytes
    rec = {"time": "2026-01-01T00:00:00.000+00:00", "file": "a.jpg\r=cmd|' /C calc'!A0", "sha256": None,
           "status": "unreadable", "error": "line one\nline two\r+2", "width": None, "height": None, "faces": []}
    data = csv_bytes(rec, ["happy"])
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert len(rows) == 1 and rows[0][1] == rec["file"] and rows[0][4] == rec["error"]
    assert b'"a.jpg\r=cmd' in data and data.count(b"\n") == 2          # quoted; the row's own end, and "\n" in error
    escaped = csv_bytes({**rec, "file": "=cmd|x", "error": "@SUM(1)"}, ["happy"]).decode()
    assert ",'=cmd|x," in escaped and ",'@SUM(1)," in escaped


def test_a_zero_filled_tail_is_cut_from_both_result_files(tmp_path):
    """Issue 10, defect 8: a power cut can leave zeros after the last complete record."""
    from edgeemo.results import ResultFiles, csv_bytes, csv_header_bytes, jsonl_bytes
    rec = {"file": "x.jpg", "sha256": "ab", "status": "no_face", "error": None, "width": 4, "height": 4,
           "faces": [], "model": {"name": "m", "sha256": "cd"}, "time": "2026-01-01T00:00:00.000+00:00"}
    (tmp_path / "results.jsonl").write_bytes(jsonl_bytes(rec) + b"\0" * 300)
    (tmp_path / "results.csv").write_bytes(csv_header_bytes(["happy"]) + csv_bytes(rec, ["happy"]) + b"\0" * 300)
    files = ResultFiles(tmp_path, ("jsonl", "csv"), ["happy"], fsync=True, repair=True)
    files.close()
    assert (tmp_path / "results.jsonl").read_bytes() == jsonl_bytes(rec)
    assert (tmp_path / "results.csv").read_bytes() == csv_header_bytes(["happy"]) + csv_bytes(rec, ["happy"])


def test_a_name_that_is_not_utf8_gets_its_record_losslessly(tmp_path, data_dir, device_model):
    """Issue 10, defect 3 (in part): a non-UTF-8 file name crashed `classify --out`."""
    folder = tmp_path / "in"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9-\xff.jpg"
    with open(raw, "wb") as fh:
        fh.write((data_dir / "scenes" / "dogs.jpg").read_bytes())
    res = run("classify", folder, "--model", device_model, "--detector", "none", "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "out" / "results.jsonl").read_bytes().splitlines()
    assert len(lines) == 1 and b"\\udcff" in lines[0]
    rec = json.loads(lines[0])
    assert os.fsencode(rec["file"]) == raw and rec["status"] == "ok"
    assert b"\\udcff" in (tmp_path / "out" / "results.csv").read_bytes()


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


def test_conditions_that_clear_by_themselves_exit_1_not_2(tmp_path):
    """Issue 10, defect 7: exit status 2 (which the unit never restarts) was also given for a results folder
    that cannot be created or written at start; 2 is kept for configuration errors."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    blocked = CliRunner().invoke(app, ["watch", str(inbox), "--out", "/proc/edgeemo-cannot-be-here",
                                       "--detector", "none"])
    assert blocked.exit_code == 1 and "cannot create the results folder" in blocked.output
    typo = CliRunner().invoke(app, ["watch", str(tmp_path / "no-such-inbox")])
    assert typo.exit_code == 2 and "does not exist" in typo.output


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


def test_face_fraction_is_the_central_part_of_the_frame_on_both_paths():
    import numpy as np
    from edgeemo import crop
    from edgeemo.modelfile import DEFAULTS, ModelFileError, validate
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    half = crop.FaceGeometry(24, 1, 0.0, None, 0.5)
    whole = crop.model_inputs(img, None, half)[0, :, :, 0]
    assert np.array_equal(whole, img[12:36, 12:36])                    # pre-cropped: the central half
    photo = np.zeros((100, 100), np.uint8)
    photo[20:68, 30:78] = img
    boxed = crop.model_inputs(photo, [(30, 20, 48, 48)], half)[0, :, :, 0]
    assert np.array_equal(boxed, whole)                                # a detector box: the same pixels
    wide = crop.model_inputs(photo, [(42, 32, 24, 24)], crop.FaceGeometry(24, 1, 0.5, None, 0.5))[0, :, :, 0]
    assert np.array_equal(wide, whole)                                 # margin first, then the fraction
    assert np.array_equal(crop.model_inputs(img, None, crop.FaceGeometry(48))[0, :, :, 0], img)
    with pytest.raises(ModelFileError, match="face_fraction"):
        validate({**DEFAULTS, "face_fraction": 1.5})
    # further views: view 0 is model_inputs' face; view k is the face at fraction views[k-1], on both paths
    views = crop.FaceGeometry(24, 1, 0.0, None, 0.5, (0.25, 1.0))
    for pixels, boxes in ((img, None), (photo, [(30, 20, 48, 48), (30, 20, 48, 48)])):
        got = crop.model_views(pixels, boxes, views)
        assert got.shape == (1 if boxes is None else 2, 3, 24, 24, 1) and got.dtype == np.uint8
        assert np.array_equal(got[:, 0], crop.model_inputs(pixels, boxes, half))
        assert np.array_equal(got[0, 1, :, :, 0], crop._resize(img[18:30, 18:30], 24))
        assert np.array_equal(got[0, 2], crop.model_inputs(pixels, boxes, crop.FaceGeometry(24, 1, 0.0, None, 1.0))[0])
        assert np.array_equal(crop.further_views(pixels, boxes, views), got[:, 1:])   # the views alone
    for bad in ([1.5], [0.9, "x"], 0.9, [True]):
        with pytest.raises(ModelFileError, match="view_fractions"):
            validate({**DEFAULTS, "view_fractions": bad})


def _bit_flipped(jpeg: bytes, seed: int, flips: int = 3) -> bytes:
    """The photo with ``flips`` random bits flipped in its compressed data (after the start of scan)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    data = bytearray(jpeg)
    sos = data.find(b"\xff\xda")
    for _ in range(flips):
        i = int(rng.integers(sos + 20, len(data) - 2))
        data[i] ^= 1 << int(rng.integers(0, 8))
    return bytes(data)


def test_corrupt_jpeg_data_is_recorded_not_classified(tmp_path, data_dir, device_model):
    """Issue 10, defect 9: 56 of 60 bit-flipped JPEGs got `ok` or `no_face` with no warning. libjpeg's
    corrupt-data warnings now make the record `unreadable`, naming the damage. A flip that leaves a stream
    libjpeg decodes without complaint cannot be told from a real photo by any decoder and stays `ok`."""
    folder = tmp_path / "flipped"
    folder.mkdir()
    photo = (data_dir / "scenes" / "Tom_Cruise_avp_2014_4.jpg").read_bytes()
    (folder / "intact.jpg").write_bytes(photo)
    # bytes lost in the middle of the compressed data: the classic damage of a bad card or transfer
    sos = photo.find(b"\xff\xda")
    (folder / "gap.jpg").write_bytes(photo[:sos + 2000] + photo[sos + 2600:])
    for seed in range(40):
        (folder / f"flip{seed:02d}.jpg").write_bytes(_bit_flipped(photo, seed))
    res = run("classify", folder, "--model", device_model, "--detector", "haar", "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    recs = {os.path.basename(r["file"]): r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").open())}
    assert len(recs) == 42
    assert recs["intact.jpg"]["status"] == "ok"
    assert recs["gap.jpg"]["status"] == "unreadable" and "corrupt JPEG data" in recs["gap.jpg"]["error"]
    damaged = [r for n, r in recs.items() if n.startswith("flip") and r["status"] == "unreadable"]
    assert all("corrupt JPEG data" in r["error"] and "libjpeg: " in r["error"] for r in damaged)
    # measured with these seeds: libjpeg warns on 26 of these 40 photos with 3 bits flipped
    assert len(damaged) >= 20, [r["status"] for r in recs.values()]
    # the decoder's warnings went into the records, not onto the terminal
    assert "Corrupt JPEG data:" not in res.stderr


# Runs the CLI and, at exit, writes the process's peak RSS (VmHWM: counted from exec, unlike ru_maxrss, which
# a child forked from this large test process inherits) on stderr.
PEAK_RSS = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: sys.stderr.write(next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))))\n"
            "sys.argv = ['edgeemo', *sys.argv[1:]]\n"
            "runpy.run_module('edgeemo.cli', run_name='__main__')\n")


def _peak_rss_mb(args, env) -> tuple[float, str]:
    """Run `edgeemo ARGS`; (its peak RSS in MB, its stdout)."""
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-c", PEAK_RSS, *map(str, args)], capture_output=True, text=True,
                         env=env, timeout=120)
    hwm = re.search(r"VmHWM:\s+(\d+) kB", res.stderr)
    assert hwm, res.stderr[-2000:]
    return int(hwm.group(1)) / 1024, res.stdout


def test_a_png_bomb_is_refused_by_its_header_within_the_decode_budget(tmp_path, device_model):
    """Issue 10, defect 6: a few hundred KB of RGBA PNG under 50 megapixels took `classify` to 2.47 GB. Its
    header says what decoding needs; over the budget (a quarter of MemoryMax, here set directly) it gets an
    `error` record and is never decoded."""
    import cv2
    import numpy as np
    flat = np.full((7000, 7000, 4), 40000, np.uint16)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(cv2.imencode(".png", flat, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes())
    assert bomb.stat().st_size < 1 << 20
    env = {**os.environ, "EDGEEMO_DECODE_BUDGET_MB": "256"}
    rss, out = _peak_rss_mb(["classify", bomb, "--model", device_model, "--detector", "none"], env)
    rec = json.loads(out.splitlines()[0])
    assert rec["status"] == "error" and "7000x7000 PNG needs about" in rec["error"], rec
    assert "256 MiB decode budget" in rec["error"]
    assert rss < 200, f"peak RSS {rss:.0f} MB: the bomb was decoded"


def test_a_large_jpeg_is_decoded_reduced_and_recorded_in_its_own_pixels(tmp_path, data_dir, device_model, yunet_model):
    """Issue 10, defect 6: JPEGs over 16 megapixels are decoded by libjpeg at 1/2 (1/4, 1/8) scale; the
    record still gives the file's size, and the face box in the file's own pixels."""
    import cv2
    src = cv2.imread(str(data_dir / "scenes" / "Tom_Cruise_avp_2014_4.jpg"))
    h, w = src.shape[:2]
    k = (24e6 / (w * h)) ** 0.5                    # 24 megapixels
    big = cv2.resize(src, (round(w * k), round(h * k)), interpolation=cv2.INTER_CUBIC)
    assert big.shape[0] * big.shape[1] > 16_000_000
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "small.jpg"), src)
    cv2.imwrite(str(tmp_path / "in" / "big.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    from edgeemo import imageio
    assert imageio.read_image(tmp_path / "in" / "big.jpg").scale == 0.5
    res = run("classify", tmp_path / "in", "--model", device_model, "--detector", "yunet",
              "--detector-model", yunet_model, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    recs = {os.path.basename(r["file"]): r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").open())}
    assert (recs["big.jpg"]["width"], recs["big.jpg"]["height"]) == (big.shape[1], big.shape[0])
    small_box = recs["small.jpg"]["faces"][0]["box"]
    big_box = recs["big.jpg"]["faces"][0]["box"]
    for a, b in zip(small_box, big_box):
        assert abs(b / k - a) <= max(4, 0.08 * small_box[2]), (small_box, big_box)
    assert recs["big.jpg"]["faces"][0]["label"] == recs["small.jpg"]["faces"][0]["label"]


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
