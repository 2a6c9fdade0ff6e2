"""`edgeemo watch` end to end: a real daemon process, real watchdog events, real files, real signals."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from daemon_harness import (DEADLINE, ROOT, Daemon, by_name, jpeg_bytes, png_bytes, sha, visible,  # noqa: F401
                            wait_until, waiting, write)


# --- tests ------------------------------------------------------------------------------------------------------

def test_burst_of_500_files_each_recorded_once_and_moved(daemon_factory):
    # a queue of 32 makes the burst overflow it: the dropped events must be found again by rescanning
    d = daemon_factory("--queue-size", "32").start()
    expected = {}
    for i in range(500):
        data = png_bytes(i)
        write(d.inbox / f"img{i:04d}.png", data)
        expected[f"img{i:04d}.png"] = sha(data)
    wait_until(lambda: d.n_records() >= 500 and not waiting(d), "500 records", d)
    assert d.signal(signal.SIGTERM) == 0

    recs = d.records()
    assert len(recs) == 500
    names = by_name(recs)
    assert set(names) == set(expected)
    assert all(len(v) == 1 for v in names.values())
    assert {n: v[0]["sha256"] for n, v in names.items()} == expected
    assert {r["status"] for r in recs} == {"ok"}
    assert visible(d.inbox) == ["done", "failed", "results"]
    assert visible(d.inbox / "done") == sorted(expected)
    assert all(sha((d.inbox / "done" / n).read_bytes()) == s for n, s in expected.items())
    assert visible(d.inbox / "failed") == []
    rows = d.csv_rows()
    assert sorted(r["sha256"] for r in rows) == sorted(expected.values())
    assert "more files than the queue holds (32)" in d.log_text()      # the overflow path was taken
    assert "ERROR" not in d.log_text()


@pytest.mark.parametrize("mode", ["inotify", "poll"])
def test_slow_chunked_write_is_processed_once_and_complete(daemon_factory, mode):
    args = ("--poll", "--settle", "1.0") if mode == "poll" else ()
    d = daemon_factory(*args).start()
    data = png_bytes(7, size=200)
    parts = np.array_split(np.frombuffer(data, np.uint8), 6)
    with open(d.inbox / "slow.png", "wb") as fh:          # one writer, pausing between chunks
        for part in parts:
            fh.write(part.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
            time.sleep(0.25)
    wait_until(lambda: (d.inbox / "done" / "slow.png").exists() or (d.inbox / "failed" / "slow.png").exists(),
               "slow.png to be processed", d)
    time.sleep(0.5)                                        # room for a (wrong) second record
    assert d.signal(signal.SIGTERM) == 0
    recs = by_name(d.records())["slow.png"]
    assert len(recs) == 1
    assert recs[0]["status"] == "ok" and recs[0]["sha256"] == sha(data)
    assert (d.inbox / "done" / "slow.png").read_bytes() == data
    assert f"({mode})" in d.log_text()


def test_temporary_names_wait_for_the_rename(daemon_factory):
    d = daemon_factory().start()
    data = {n: png_bytes(100 + i) for i, n in enumerate(["a.png", "b.png", "c.png", "d.png", "ctrl.png"])}
    write(d.inbox / "a.png.part", data["a.png"])
    write(d.inbox / ".b.png", data["b.png"])
    write(d.inbox / "c.png.tmp", data["c.png"])
    write(d.inbox / "d.png~", data["d.png"])
    write(d.inbox / "ctrl.png", data["ctrl.png"])       # written last: once it is done, the others were seen
    wait_until(lambda: (d.inbox / "done" / "ctrl.png").exists(), "ctrl.png", d)
    time.sleep(0.5)
    assert {".b.png", "a.png.part", "c.png.tmp", "d.png~"} <= {p.name for p in d.inbox.iterdir()}
    assert set(by_name(d.records())) == {"ctrl.png"}

    os.rename(d.inbox / "a.png.part", d.inbox / "a.png")
    os.rename(d.inbox / ".b.png", d.inbox / "b.png")
    wait_until(lambda: {"a.png", "b.png"} <= set(visible(d.inbox / "done")), "the renamed files", d)
    assert d.signal(signal.SIGTERM) == 0
    recs = by_name(d.records())
    assert set(recs) == {"ctrl.png", "a.png", "b.png"}
    assert recs["a.png"][0]["sha256"] == sha(data["a.png"]) and recs["b.png"][0]["sha256"] == sha(data["b.png"])
    assert (d.inbox / "c.png.tmp").exists() and (d.inbox / "d.png~").exists()


def test_bad_files_go_to_failed_with_their_reason(daemon_factory):
    d = daemon_factory()
    good = jpeg_bytes(1, 96)
    damaged = bytearray(png_bytes(2, 96))
    damaged[60:400] = bytes(340)                         # zeroed image data inside an intact PNG frame
    files = {"truncated.jpg": good[: len(good) // 2], "empty.png": b"", "notes.txt": b"shopping: milk, eggs\n",
             "damaged.png": bytes(damaged)}
    for n, b in files.items():
        write(d.inbox / n, b)
    os.mkfifo(d.inbox / "pipe.jpg")                      # must not be opened: reading a FIFO would block forever
    (d.inbox / "failed").mkdir()
    write(d.inbox / "failed" / "empty.png", b"an older file that must survive")
    d.start()
    everything = set(files) | {"pipe.jpg"}
    wait_until(lambda: d.n_records() >= len(everything) and not waiting(d),
               "the bad files to be processed", d)
    assert d.signal(signal.SIGTERM) == 0

    recs = {n: v[0] for n, v in by_name(d.records()).items()}
    assert set(recs) == everything
    assert {r["status"] for r in recs.values()} == {"unreadable"}
    reasons = {"truncated.jpg": "truncated JPEG", "empty.png": "empty file", "notes.txt": "not a supported image",
               "damaged.png": "PNG", "pipe.jpg": "not a regular file (a FIFO)"}
    failed = d.inbox / "failed"
    assert (failed / "empty.png").read_bytes() == b"an older file that must survive"
    where = {"empty.png": "empty-1.png"}
    for name, reason in reasons.items():
        moved = failed / where.get(name, name)
        assert os.path.lexists(moved), name
        info = json.loads((failed / f"{moved.name}.error.json").read_text())
        assert reason in info["error"] and name in info["error"]
        assert info["error"] == recs[name]["error"] and info["moved_to"] == str(moved)
        assert info["status"] == "unreadable"
    assert recs["empty.png"]["sha256"] == sha(b"")
    assert (failed / "truncated.jpg").read_bytes() == files["truncated.jpg"]
    assert visible(d.inbox / "done") == []
    assert "moved to" in d.log_text() and "WARNING" in d.log_text()


def test_same_name_again_gets_a_suffix_not_an_overwrite(daemon_factory):
    d = daemon_factory().start()
    first, second = png_bytes(11), png_bytes(12)
    write(d.inbox / "same.png", first)
    wait_until(lambda: (d.inbox / "done" / "same.png").exists(), "the first same.png", d)
    write(d.inbox / "same.png", second)
    wait_until(lambda: (d.inbox / "done" / "same-1.png").exists(), "the second same.png", d)
    assert d.signal(signal.SIGTERM) == 0
    assert (d.inbox / "done" / "same.png").read_bytes() == first
    assert (d.inbox / "done" / "same-1.png").read_bytes() == second
    assert [r["sha256"] for r in d.records()] == [sha(first), sha(second)]


def test_kill_9_in_mid_run_then_restart_gives_exactly_one_record_per_file(daemon_factory):
    d = daemon_factory("--workers", "2")
    expected = {}
    for i in range(400):
        data = png_bytes(1000 + i)
        write(d.inbox / f"k{i:03d}.png", data)
        expected[sha(data)] = f"k{i:03d}.png"
    killed_at = []
    for _ in range(2):                                   # two crashes at arbitrary moments
        d.start()
        target = d.n_records() + 60
        wait_until(lambda: d.n_records() >= target, "progress before the kill", d)
        d.kill9()
        killed_at.append(d.n_records())
    assert killed_at[-1] < 400, "the daemon finished before it could be killed; the test proves nothing"
    d.start()
    wait_until(lambda: d.n_records() >= 400 and not waiting(d), "all 400 files", d)
    time.sleep(0.5)
    assert d.signal(signal.SIGTERM) == 0

    raw = (d.results / "results.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    recs = d.records()                                   # every line parses: no torn line left behind
    assert sorted(r["sha256"] for r in recs) == sorted(expected)
    assert {os.path.basename(r["file"]) for r in recs} == set(expected.values())
    assert sorted(visible(d.inbox / "done")) == sorted(expected.values())
    assert sorted(r["sha256"] for r in d.csv_rows()) == sorted(expected)


def test_restart_recognises_a_recorded_file_still_in_the_inbox(daemon_factory):
    """The states a crash can leave, made exactly: recorded but not moved (to done/; to failed/ with its
    error file already written; linked into done/ but not yet unlinked), a torn JSON line, CSV rows cut off."""
    d = daemon_factory().start()
    files = {"one.png": png_bytes(21), "two.png": png_bytes(22), "bad.txt": b"not an image", "three.png": png_bytes(23)}
    for n in ("one.png", "two.png", "bad.txt", "three.png"):
        write(d.inbox / n, files[n])
        wait_until(lambda n=n: n in by_name(d.records()), n, d)
    wait_until(lambda: not waiting(d), "the moves", d)
    assert d.signal(signal.SIGTERM) == 0
    assert d.n_records() == 4

    os.replace(d.inbox / "failed" / "bad.txt", d.inbox / "bad.txt")         # error file stays behind
    os.link(d.inbox / "done" / "two.png", d.inbox / "two.png")              # linked, not yet unlinked
    os.replace(d.inbox / "done" / "three.png", d.inbox / "three.png")       # the last record
    from edgeemo.ledger import Attempts
    from edgeemo.watch import STATE_DIR
    marks = Attempts(d.inbox / "results" / STATE_DIR)     # a file in hand keeps its marker until it is moved
    for n in ("bad.txt", "two.png", "three.png"):
        marks.begin(n)
    csv_path = d.results / "results.csv"
    lines = csv_path.read_bytes().splitlines(keepends=True)
    csv_path.write_bytes(b"".join(lines[:-1]) + lines[-1][:25])             # its row cut short
    with open(d.results / "results.jsonl", "ab") as fh:
        fh.write(b'{"file": "' + str(d.inbox / "four.png").encode() + b'", "sha256": "ab')   # torn write
    four = png_bytes(24)
    write(d.inbox / "four.png", four)

    d.start()
    wait_until(lambda: "four.png" in by_name(d.records()) and not waiting(d), "four.png", d)
    assert d.signal(signal.SIGTERM) == 0
    log = d.run_log()
    assert "already recorded before the restart" in log and "removed an incomplete last line" in log
    assert "completed the rows of the last record" in log

    recs = by_name(d.records())
    assert {n: len(v) for n, v in recs.items()} == {"one.png": 1, "two.png": 1, "bad.txt": 1, "three.png": 1,
                                                     "four.png": 1}
    assert recs["four.png"][0]["sha256"] == sha(four)
    assert (d.inbox / "done" / "three.png").read_bytes() == files["three.png"]
    assert visible(d.inbox / "done") == ["four.png", "one.png", "three.png", "two.png"]   # no two-1.png
    assert visible(d.inbox / "failed") == ["bad.txt", "bad.txt.error.json"]   # the orphan error file reused
    rows = d.csv_rows()
    assert sorted(r["sha256"] for r in rows) == sorted(r[0]["sha256"] for r in recs.values())


def test_a_file_the_daemon_died_on_three_times_is_set_aside(daemon_factory):
    from edgeemo.ledger import Attempts
    from edgeemo.watch import STATE_DIR
    d = daemon_factory()
    poison, fine = png_bytes(31), png_bytes(32)
    write(d.inbox / "poison.png", poison)
    write(d.inbox / "fine.png", fine)
    marks = Attempts(d.inbox / "results" / STATE_DIR)     # what three runs that died on poison.png leave
    for _ in range(3):
        marks.begin("poison.png")
    marks.begin("fine.png")                              # died once on this one: it is simply tried again
    d.start()
    wait_until(lambda: not waiting(d) and d.n_records() == 2, "both files", d)
    assert d.signal(signal.SIGTERM) == 0
    recs = {n: v[0] for n, v in by_name(d.records()).items()}
    assert recs["poison.png"]["status"] == "error" and "stopped 3 times" in recs["poison.png"]["error"]
    assert recs["poison.png"]["sha256"] == sha(poison)
    assert (d.inbox / "failed" / "poison.png").read_bytes() == poison
    assert recs["fine.png"]["status"] == "ok" and (d.inbox / "done" / "fine.png").exists()
    assert "attempt 1 of 3" in d.log_text()
    assert list((d.inbox / "results" / STATE_DIR).iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_finishes_the_file_in_hand_and_exits_0(daemon_factory, sig):
    d = daemon_factory()
    for i in range(300):
        write(d.inbox / f"s{i:03d}.png", png_bytes(2000 + i))
    d.start()
    wait_until(lambda: d.n_records() >= 20, "some progress", d)
    assert d.signal(sig) == 0
    log = d.run_log()
    assert f"{signal.Signals(sig).name}: finishing the work in hand" in log and "stopped:" in log

    assert (d.results / "results.jsonl").read_bytes().endswith(b"\n")
    recorded = set(by_name(d.records()))
    left = waiting(d)
    assert recorded == set(visible(d.inbox / "done"))    # every record's file was moved, and only those
    assert recorded.isdisjoint(left) and len(recorded) + len(left) == 300
    assert left, "the daemon finished everything before the signal; the test proves nothing"
    assert list((d.results / ".edgeemo-state").iterdir()) == []


def test_config_file_keys_are_options_and_the_command_line_wins(tmp_path, device_model):
    inbox = tmp_path / "in"
    inbox.mkdir()
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "edgeemo.toml").write_text(
        f'inbox = "../in"\nout = "from-config"\nmodel = "{device_model}"\ndetector = "haar"\n'
        f'save-frames = "none"\nlog-level = "warning"\n')
    data = png_bytes(41)
    write(inbox / "x.png", data)
    log = tmp_path / "stderr.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "edgeemo.cli", "watch", "--config",
                                 str(etc / "edgeemo.toml"), "--out", str(tmp_path / "from-cli"), "--detector",
                                 "none", "--log-level", "info", "--settle", "0.2"],
                                stderr=fh, stdout=subprocess.DEVNULL, cwd=tmp_path)
        try:
            wait_until(lambda: (inbox / "done" / "x.png").exists(), "x.png")
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=DEADLINE)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    err = log.read_text(errors="replace")
    assert proc.returncode == 0, err[-2000:]
    assert not (etc / "from-config").exists()           # --out on the command line won over the file
    rec = json.loads((tmp_path / "from-cli" / "results.jsonl").read_text())
    assert rec["sha256"] == sha(data) and rec["faces"][0]["box"] == [0, 0, 48, 48]   # --detector none won
    assert "detector none" in err and "INFO" in err                                   # --log-level info won
    imported = [line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")]
    assert "cv2" in imported and "watchdog.observers.inotify" in imported
    assert not [m for m in imported if m.split(".")[0] in ("tensorflow", "keras")]


def _cli(*args):
    from typer.testing import CliRunner
    from edgeemo.cli import app
    return CliRunner().invoke(app, ["watch", *map(str, args)])


@pytest.mark.parametrize("content, message", [
    ('wrokers = 2\n', "unknown key 'wrokers' (did you mean 'workers'?)"),
    ('workers = "two"\n', "workers = 'two' is not valid; expected an integer from 1 to 64"),
    ('poll = "yes"\n', "poll = 'yes' is not valid; expected true or false"),
    ('format = "csv"\n', 'includes "jsonl"'),
    ('detector = "retina"\n', "expected one of auto, yunet, haar, none"),
    ('[watch]\nworkers = 2\n', "unexpected table [watch]"),
    ('workers = \n', "not valid TOML"),
    ('[mqtt]\nhost = "x"\n', "unknown key 'host' in [mqtt]"),
])
def test_config_errors_stop_the_start_with_exit_2(tmp_path, content, message):
    cfg = tmp_path / "edgeemo.toml"
    cfg.write_text(content)
    (tmp_path / "in").mkdir()
    result = _cli(tmp_path / "in", "--config", cfg)
    assert result.exit_code == 2
    assert message in result.output and str(cfg) in result.output


def test_start_errors_say_what_to_do(tmp_path, daemon_factory):
    missing = _cli(tmp_path / "nowhere")
    assert missing.exit_code == 2 and "the inbox folder does not exist; create it" in missing.output
    assert _cli(tmp_path, "--config", tmp_path / "none.toml").exit_code == 2
    both = _cli(tmp_path, "--camera", "0")
    assert both.exit_code == 2 and "not both" in both.output
    bad_cli = _cli(tmp_path, "--workers", "0")
    assert bad_cli.exit_code == 2 and "--workers 0" in bad_cli.output

    d = daemon_factory().start()
    second = _cli(d.inbox, "--detector", "none")
    assert second.exit_code == 2 and f"in use by another edgeemo watch (pid {d.proc.pid})" in second.output
    assert d.signal(signal.SIGTERM) == 0

    shm = Path("/dev/shm")
    if shm.is_dir() and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        other = shm / f"edgeemo-test-{os.getpid()}"
        try:
            # (/dev/shm lies under /dev, a system folder: allowed here on purpose)
            r = _cli(tmp_path / "inbox", "--done", other, "--detector", "none", "--allow-system-path")
            assert r.exit_code == 2 and "another filesystem" in r.output
        finally:
            shutil.rmtree(other, ignore_errors=True)


def test_shipped_example_configs_are_valid():
    from edgeemo import config
    main = config.load_file(ROOT / "deploy" / "edgeemo.toml")
    assert main["inbox"] == Path("/var/lib/edgeemo/inbox") and "camera" not in main
    cam = config.load_file(ROOT / "deploy" / "edgeemo-camera.toml")
    assert cam["camera"] == "0" and "inbox" not in cam
    s = config.resolve({}, ROOT / "deploy" / "edgeemo.toml")
    assert (s.done, s.failed, s.out) == (Path("/var/lib/edgeemo/done"), Path("/var/lib/edgeemo/failed"),
                                         Path("/var/lib/edgeemo/results"))


def test_move_falls_back_to_a_rename_where_a_link_is_refused(tmp_path):
    """fs.protected_hardlinks refuses a link to a file the service may read but not write (a producer's 0644
    file): the move is then an os.replace, and a taken name still gets a suffix."""
    setpriv = shutil.which("setpriv")
    guard = Path("/proc/sys/fs/protected_hardlinks")
    if os.geteuid() != 0 or setpriv is None or not guard.exists() or guard.read_text().strip() != "1":
        pytest.skip("needs root, setpriv and fs.protected_hardlinks=1")
    import tempfile
    box = Path(tempfile.mkdtemp(prefix="edgeemo-link-"))     # pytest's own folders are private to root
    try:
        box.chmod(0o755)
        for sub in ("inbox", "done", "failed"):
            (box / sub).mkdir()
            os.chown(box / sub, 65534, 65534)
        script = (
            "import sys; from pathlib import Path; from edgeemo.ledger import Mover\n"
            "m = Mover(Path(sys.argv[1]) / 'done', Path(sys.argv[1]) / 'failed')\n"
            "src = Path(sys.argv[1]) / 'inbox' / 'a.png'\n"
            "print(m.finish(src, {'status': 'ok', 'file': str(src), 'sha256': sys.argv[2]}))\n")
        for content in (b"first", b"second"):
            write(box / "inbox" / "a.png", content)          # owned by root, mode 0644
            r = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                                script, str(box), sha(content)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == str(box / "done" / "a-1.png")
        assert (box / "done" / "a.png").read_bytes() == b"first" and (box / "done" / "a-1.png").read_bytes() == b"second"
        assert list((box / "inbox").iterdir()) == []
    finally:
        shutil.rmtree(box, ignore_errors=True)


def test_passes_from_the_config_file_reach_the_daemon(daemon_factory, tmp_path, data_dir):
    """`passes = 1` in the config file: the daemon runs one pass per face and says so; its record matches the
    Python API's at the same setting (and the command line's --passes wins over the file)."""
    from edgeemo.pipeline import Classifier
    face = data_dir / "fer2013" / "val" / "fear" / "PublicTest_10150476.jpg"    # an unsure face: averaging moves it
    cfg = tmp_path / "edgeemo.toml"
    cfg.write_text("passes = 1\n")
    d = daemon_factory("--config", str(cfg), "--log-level", "info").start()
    write(d.inbox / "face.jpg", face.read_bytes())
    wait_until(lambda: d.n_records() == 1, "the record", d)
    assert d.signal(signal.SIGTERM) == 0
    assert "up to 1 pass per face" in d.run_log()
    got = d.records()[0]["faces"][0]["probs"]
    model = d.args[d.args.index("--model") + 1]
    want = Classifier(model, detector="none", passes=1).classify_image(face)
    assert got == want["faces"][0]["probs"]
    full = Classifier(model, detector="none")
    offered = full.model.offered_passes()
    if offered > 1:
        assert full.classify_image(face)["faces"][0]["probs"] != got    # the averaging, off here, moves it
    d.args += ["--passes", "2"]
    d.start()
    write(d.inbox / "again.jpg", face.read_bytes())
    wait_until(lambda: d.n_records() == 2, "the second record", d)
    assert d.signal(signal.SIGTERM) == 0
    assert ("up to 2 passes per face" if offered > 1 else "up to 1 pass per face") in d.run_log()

