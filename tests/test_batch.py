"""`edgeemo classify` at scale (issue 14): --jobs N worker processes, --resume after kill -9, a worker that
dies on a file, Ctrl-C. Real processes and real signals throughout."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from edgeemo import batch
from daemon_harness import png_bytes, wait_until


def classify(*args, env=None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeemo.cli", "classify", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, **kw)


def records(out: Path) -> list[dict]:
    p = out / "results.jsonl"
    return [json.loads(x) for x in p.read_bytes().splitlines() if x.strip()] if p.exists() else []


@pytest.fixture()
def small_files(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for i in range(240):
        (folder / ("sub" if i % 3 == 0 else "") / f"f{i:04d}.png").write_bytes(png_bytes(1000 + i))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return folder


def test_jobs_2_gives_the_records_of_jobs_1(tmp_path, data_dir, device_model, yunet_model):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in sorted((data_dir / "scenes").iterdir()):
        shutil.copy(p, folder / p.name)
    for lab in ("happy", "sad"):
        for p in sorted((data_dir / "fer2013" / "val" / lab).glob("*.jpg"))[:10]:
            shutil.copy(p, folder / f"{lab}-{p.name}")
    common = [folder, "--model", device_model, "--detector", "yunet", "--detector-model", yunet_model]
    outs = {}
    for jobs in (1, 2):
        p = classify(*common, "--jobs", jobs, "--out", tmp_path / f"j{jobs}")
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert f"{jobs} process" in err
        outs[jobs] = {(r["file"], r["status"], r["sha256"], json.dumps(r["faces"], sort_keys=True))
                      for r in records(tmp_path / f"j{jobs}")}
    assert outs[1] == outs[2] and len(outs[1]) == len(list(folder.iterdir()))


def test_kill_9_then_resume_gives_one_record_per_input(small_files, tmp_path, device_model):
    out = tmp_path / "out"
    args = [small_files, "--recursive", "--model", device_model, "--detector", "none", "--jobs", 2, "--out", out]
    p = classify(*args)
    wait_until(lambda: len(records(out)) >= 60, "60 records before the kill", timeout=120)
    p.kill()                                         # the parent; its workers exit when their pipes close
    p.communicate()
    first = len(records(out))
    assert 0 < first < 241
    r = classify(*args, "--resume")
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0, err
    assert "skipped (already recorded)" in err
    recs = records(out)
    names = Counter(os.path.basename(x["file"]) for x in recs)
    assert len(names) == 241 and set(names.values()) == {1}, [n for n, c in names.items() if c > 1][:5]
    again = classify(*args, "--resume")              # nothing left to do
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0 and len(records(out)) == 241 and "241 skipped" in err


def test_resume_by_hash_skips_a_file_touched_since(tmp_path, device_model):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        (folder / f"a{i}.png").write_bytes(png_bytes(i))
    out = tmp_path / "out"
    base = [folder, "--model", device_model, "--detector", "none", "--jobs", 1, "--out", out]
    assert classify(*base).wait(120) == 0
    os.utime(folder / "a0.png", (time.time() + 100, time.time() + 100))     # same bytes, new mtime
    assert classify(*base, "--resume=hash").wait(120) == 0
    assert len(records(out)) == 4                    # by content: nothing new
    p = classify(*base, "--resume")
    assert p.wait(120) == 0
    assert [os.path.basename(r["file"]) for r in records(out)][4:] == ["a0.png"]   # by path, size and mtime: redone


def test_a_worker_killed_by_a_file_costs_one_error_record(small_files, tmp_path, device_model):
    (small_files / "poison.png").write_bytes(png_bytes(7))
    out = tmp_path / "out"
    p = classify(small_files, "--recursive", "--model", device_model, "--detector", "none", "--jobs", 2, "--out", out,
                 env={batch.CRASH_ENV: "poison.png"})
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    recs = records(out)
    assert len(recs) == 242 and len({r["file"] for r in recs}) == 242
    poison = [r for r in recs if r["file"].endswith("poison.png")]
    assert poison[0]["status"] == "error" and "worker process classifying it exited with status 3" in poison[0]["error"]
    assert sum(r["status"] == "ok" for r in recs) == 240


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_writes_what_is_in_hand_and_says_how_to_go_on(small_files, tmp_path, device_model, sig, code):
    out = tmp_path / "out"
    p = classify(small_files, "--recursive", "--model", device_model, "--detector", "none", "--jobs", 2, "--out", out)
    wait_until(lambda: len(records(out)) >= 20, "20 records", timeout=120)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    n = len(records(out))
    assert n < 241 and f"stopped by {signal.Signals(sig).name}: {241 - n} inputs left" in err
    assert "--resume" in err
    raw = (out / "results.jsonl").read_bytes()
    assert raw.endswith(b"\n") and all(json.loads(x) for x in raw.splitlines())     # nothing torn


def test_the_walk_streams_and_sorts_only_small_folders(tmp_path, monkeypatch):
    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(50):
        (folder / f"{i:03d}.png").write_bytes(b"x")
    (folder / ".hidden").write_bytes(b"x")
    assert [p.name for p in batch.walk([folder])] == [f"{i:03d}.png" for i in range(50)]
    monkeypatch.setattr(batch, "SORT_LIMIT", 10)      # over the limit: the filesystem's order, each file once
    names = [p.name for p in batch.walk([folder])]
    assert sorted(names) == [f"{i:03d}.png" for i in range(50)] and len(set(names)) == 50
    assert batch.count([folder, tmp_path / "missing.jpg"], False) == 51


def test_a_bad_model_with_workers_is_one_clear_error(small_files, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model at all")
    p = classify(small_files, "--model", bad, "--detector", "none", "--jobs", 2, "--out", tmp_path / "out")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1
    assert err.strip().splitlines() == [f"edgeemo: error: {bad}: not a TFLite model (the file identifier TFL3 is "
                                        f"missing)"], err       # said once, by the parent; no worker traceback
    assert not records(tmp_path / "out")


def test_batch_run_is_the_python_api_of_classify(tmp_path, data_dir, device_model):
    """`edgeemo classify` is batch.run: callable from Python, with a summary, --resume and a stop request."""
    import shutil

    from edgeemo import batch
    from edgeemo.pipeline import ClassifierOptions
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("2008_001322.jpg", "dogs.jpg"):
        shutil.copy(data_dir / "scenes" / name, photos / name)
    (photos / "junk.jpg").write_bytes(b"not a picture")
    opts = ClassifierOptions(device_model, "yunet")
    said = []
    s = batch.run([photos], opts, tmp_path / "out", ("jsonl", "csv"), jobs=1, echo=said.append)
    assert (s.images, s.status["unreadable"], s.skipped, s.stopped) == (3, 1, 0, False)
    assert s.faces == sum(s.labels.values()) >= 3 and "3 images in" in s.text()
    assert s.result_paths == [tmp_path / "out" / "results.jsonl", tmp_path / "out" / "results.csv"]
    again = batch.run([photos], opts, tmp_path / "out", ("jsonl", "csv"), jobs=1, resume="stat", echo=said.append)
    assert (again.images, again.skipped) == (0, 3) and any("resuming: 3 inputs" in m for m in said)
    stopped = batch.run([photos], opts, tmp_path / "out2", ("jsonl",), jobs=1, stop=lambda: True)
    assert stopped.stopped and stopped.images == 0 and stopped.left == 3
