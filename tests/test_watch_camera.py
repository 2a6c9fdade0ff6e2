"""`edgeemo watch --camera`: a real cv2.VideoCapture source (a video file standing in for the camera, which
also 'disappears' at its end), frame records, the frame disk cap, back-off on a missing camera."""
from __future__ import annotations

import datetime as dt
import importlib.util
import json
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon_harness import DEADLINE, wait_until


def make_video(path: Path, frames: int = 6, size: int = 64) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size, size))
    assert w.isOpened()
    rng = np.random.default_rng(5)
    for _ in range(frames):
        w.write(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    w.release()
    return path


class Camera:
    def __init__(self, tmp: Path, model: Path, *args: str):
        self.out = tmp / "out"
        self.log_path = tmp / "camera.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "edgeemo.cli", "watch", "--out", str(self.out),
                                      "--model", str(model), *args], stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict]:
        p = self.out / "results.jsonl"
        return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(DEADLINE)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def camera(tmp_path, device_model):
    made = []

    def start(*args):
        c = Camera(tmp_path, device_model, *args)
        made.append(c)
        return c
    yield start
    for c in made:
        c.kill()


def test_frames_are_recorded_with_frame_time_and_kept_under_the_cap(tmp_path, camera):
    video = make_video(tmp_path / "cam.avi", frames=12)
    cap_mb = 0.008
    c = camera("--camera", str(video), "--fps", "20", "--detector", "none", "--save-frames", "all",
               "--frames-max-mb", str(cap_mb))
    # a recorded video: every frame once, in order, and the daemon stops by itself at its end (exit 0)
    assert c.proc.wait(DEADLINE) == 0
    c._log.close()
    recs = c.records()
    assert len(recs) == 12
    assert all(r["camera"] == str(video) and r["status"] == "ok" for r in recs)
    times = [dt.datetime.fromisoformat(r["frame_time"]) for r in recs]
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)
    frames = sorted((tmp_path / "out" / "frames").glob("frame-*.jpg"))
    assert frames and sum(f.stat().st_size for f in frames) <= cap_mb * 1024 * 1024
    assert len(frames) < len(recs)                      # the oldest were deleted to stay under the cap
    assert [Path(r["file"]).name for r in recs[-len(frames):]] == [f.name for f in frames]
    assert "the end of the video, after 12 frames; stopping" in c.log() and "opened" in c.log()


def test_with_faces_keeps_only_frames_that_have_a_face(tmp_path, camera):
    video = make_video(tmp_path / "noise.avi")
    c = camera("--camera", str(video), "--fps", "20", "--detector", "haar", "--save-frames", "with-faces")
    assert c.proc.wait(DEADLINE) == 0                     # the 6-frame video ends: the daemon stops by itself
    recs = c.records()
    assert len(recs) == 6
    assert {r["status"] for r in recs} == {"no_face"} and all(r["file"] is None for r in recs)
    assert list((tmp_path / "out" / "frames").iterdir()) == []


def test_a_missing_camera_is_retried_with_back_off_not_fatal(camera):
    c = camera("--camera", "9", "--detector", "none")
    wait_until(lambda: "retrying in 2 s" in c.log(), "the second retry")
    assert c.proc.poll() is None                         # still running
    assert c.stop() == 0
    assert "camera 9 cannot be opened" in c.log() and "retrying in 1 s" in c.log()
    assert "video group" in c.log() or "'video' group" in c.log()


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed here")
def test_picamera2_missing_is_a_clear_start_error(tmp_path):
    from typer.testing import CliRunner
    from edgeemo.cli import app
    r = CliRunner().invoke(app, ["watch", "--camera", "picamera2", "--out", str(tmp_path)])
    assert r.exit_code == 2
    assert "picamera2" in r.output and "apt install python3-picamera2" in r.output


def test_camera_tracks_blurred_saved_frames_and_old_frames_expire(tmp_path, camera, data_dir):
    """Issue 32: the camera daemon tracks faces (ids, steady emotions, tracks.jsonl); faces in saved frames
    are blurred by default (YuNet finds none of them there); --frames-max-age deletes older frames."""
    import os
    import time

    from synth_video import make

    from edgeemo.detect import SHIPPED_YUNET
    from edgeemo.detect.yunet import YuNet
    video = make(tmp_path / "group.avi", cv2.imread(str(data_dir / "scenes" / "2008_002079.jpg")), frames=4,
                 pan=0, scale=1.0).path
    frames_dir = tmp_path / "out" / "frames"
    frames_dir.mkdir(parents=True)
    old = frames_dir / "frame-20200101T000000.000Z-000000.jpg"
    old.write_bytes(b"an old frame")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    c = camera("--camera", str(video), "--fps", "100", "--detector", "yunet", "--save-frames", "with-faces",
               "--frames-max-age", "1")
    assert c.proc.wait(DEADLINE) == 0, c.log()
    # the camera tracks faces too: steady ids across its frames, and their timelines when it stops
    recs = c.records()
    ids = [sorted(f["track"] for f in r["faces"]) for r in recs]
    assert len(recs) == 4 and len(ids[0]) >= 4 and all(i == ids[0] for i in ids)
    assert all("track_label" in f and r["frame"] == n for n, r in enumerate(recs) for f in r["faces"])
    tracks = [json.loads(x) for x in (tmp_path / "out" / "tracks.jsonl").read_text().splitlines()]
    assert {t["track"] for t in tracks} == set(ids[0]) and all(t["file"] == str(video) for t in tracks)
    saved = sorted(frames_dir.glob("frame-*.jpg"))
    assert not old.exists() and len(saved) == 4
    from edgeemo.track import iou
    det = YuNet(SHIPPED_YUNET)
    original = [f.xywh for f in det.detect(cv2.VideoCapture(str(video)).read()[1])]
    assert len(original) >= 4

    def found_again(path) -> int:
        """The original faces YuNet finds again in a saved frame (a blurred blob may still look like a face
        to it, but not where a face was: IoU >= 0.5)."""
        boxes = [f.xywh for f in det.detect(cv2.imread(str(path)))]
        return sum(any(iou(o, b) >= 0.5 for b in boxes) for o in original)
    assert [found_again(p) for p in saved] == [0, 0, 0, 0]
    shown = tmp_path / "shown"
    c2 = camera("--camera", str(video), "--fps", "100", "--detector", "yunet", "--save-frames", "all",
                "--no-blur-faces", "--frames-dir", str(shown))
    assert c2.proc.wait(DEADLINE) == 0
    assert found_again(sorted(shown.glob("frame-*.jpg"))[0]) >= 4


class LiveStream:
    """A live camera stream, as OpenCV's FFmpeg backend reads one: JPEG frames written into a FIFO at a
    steady rate by a thread, for as long as the test wants (it never ends by itself, like a camera)."""

    def __init__(self, path: Path, frame: np.ndarray, fps: float):
        import os
        import threading
        import time
        os.mkfifo(path)
        self.path, self.written = path, 0
        self.stop = threading.Event()
        ok, buf = cv2.imencode(".jpg", frame)
        assert ok
        data = buf.tobytes()

        def write():
            try:
                with open(path, "wb") as fh:         # blocks until the daemon opens the stream
                    while not self.stop.is_set():
                        fh.write(data)
                        fh.flush()
                        self.written += 1
                        time.sleep(1 / fps)
            except (BrokenPipeError, OSError):
                pass                                  # the daemon closed the stream
        self.thread = threading.Thread(target=write, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def test_a_live_camera_analyses_the_newest_frame_and_counts_the_dropped_ones(tmp_path, camera, data_dir):
    """Issue 32: a live stream faster than --fps: the daemon analyses at most --fps frames a second, always
    the newest (the frame numbers jump over the frames it dropped), never builds a backlog, and says how many
    frames it captured, analysed and dropped in its metrics, `edgeemo status` and its summary at stop."""
    import time
    pytest.importorskip("prometheus_client")
    stream = LiveStream(tmp_path / "camera.mjpeg", cv2.imread(str(data_dir / "scenes" / "2008_002079.jpg")), 50)
    metrics = tmp_path / "edgeemo.prom"
    try:
        c = camera("--camera", str(stream.path), "--fps", "4", "--detector", "yunet", "--metrics-file", str(metrics))
        wait_until(lambda: len(c.records()) >= 8, what="8 analysed frames")
        time.sleep(5.5)                               # the metrics file is written every 5 s
        assert c.stop() == 0, c.log()
    finally:
        stream.close()
    recs = c.records()
    frames = [r["frame"] for r in recs]
    gaps = [b - a for a, b in zip(frames, frames[1:])]
    # the newest frame each time: at 50 frames/s in and 4 analysed a second, about 12 skipped between two
    assert all(g >= 2 for g in gaps) and sum(gaps) / len(gaps) >= 5, frames
    elapsed = (dt.datetime.fromisoformat(recs[-1]["time"]) - dt.datetime.fromisoformat(recs[0]["time"])).total_seconds()
    assert (len(recs) - 1) / elapsed <= 4 * 1.25, (len(recs), elapsed)           # the --fps cap holds
    # the same faces keep their tracks from one analysed frame to the next
    assert len(recs[0]["faces"]) >= 4 and all(sorted(f["track"] for f in r["faces"])
                                              == sorted(f["track"] for f in recs[0]["faces"]) for r in recs)
    # an honest count: the summary at stop, the metrics file, and `edgeemo status` reading it
    import re
    m = re.search(r"stopped: .*?(\d+) frames analysed .*?, (\d+) dropped of (\d+) captured", c.log())
    assert m, c.log()
    analysed, dropped, captured = map(int, m.groups())
    assert analysed == len(recs) and dropped > analysed and captured >= analysed + dropped
    assert captured <= stream.written
    text = metrics.read_text()
    got = {k: float(v) for k, v in re.findall(r'edgeemo_camera_frames_total\{outcome="(\w+)"\} (\S+)', text)}
    assert set(got) == {"captured", "analysed", "dropped"} and got["dropped"] > got["analysed"] > 0
    st = subprocess.run([sys.executable, "-m", "edgeemo.cli", "status", str(metrics)],
                        capture_output=True, text=True, timeout=60)
    assert re.search(r"camera  \d+ frames analysed, \d+ dropped of \d+ captured", st.stdout), st.stdout + st.stderr


def test_a_video_in_the_inbox_is_analysed_and_continued_after_a_stop(tmp_path, daemon_factory, data_dir):
    """Issue 32: a video dropped into the watched inbox gets a record per analysed frame (one in --every), its
    face tracks' timelines in tracks.jsonl, and is moved to done/ after its last frame; stopped half-way
    (SIGTERM), it is continued after its last recorded frame at the next start: no frame twice, none lost."""
    import os
    import shutil

    from synth_video import make
    made = make(tmp_path / "group.avi", cv2.imread(str(data_dir / "scenes" / "2008_002079.jpg")), frames=80, pan=2)
    d = daemon_factory("--detector", "yunet", "--every", "2", "--fps", "100")
    d.start()
    shutil.copy(made.path, d.inbox / ".group.avi.part")
    os.rename(d.inbox / ".group.avi.part", d.inbox / "group.avi")
    wait_until(lambda: d.n_records() >= 5, what="the first frames of the video")
    assert d.signal(signal.SIGTERM) == 0
    first = d.records()
    assert 5 <= len(first) < 40 and (d.inbox / "group.avi").exists(), d.log_text()
    d.start()
    wait_until(lambda: (d.inbox / "done" / "group.avi").exists(), what="the video moved to done/")
    assert d.signal(signal.SIGTERM) == 0
    recs = d.records()
    assert [r["frame"] for r in recs] == list(range(0, 80, 2)), d.log_text()      # each analysed frame once
    assert all(r["status"] == "ok" and r["file"] == str(d.inbox / "group.avi") for r in recs)
    assert "continuing from frame" in d.log_text()
    # within each run the same people keep their tracks; their timelines are written
    run2 = recs[len(first):]
    people = {person for r in run2 for person, _ in made.truth[r["frame"]]}
    assert len({f["track"] for r in run2 for f in r["faces"]}) <= len(people)
    tracks = [json.loads(x) for x in (d.results / "tracks.jsonl").read_text().splitlines()]
    assert len(tracks) >= 8 and all(t["file"] == str(d.inbox / "group.avi") for t in tracks)
    assert max(t["last_frame"] for t in tracks) == 78
    # a video that cannot be decoded is recorded as unreadable and set aside, like a broken photo
    data = made.path.read_bytes()
    (d.inbox / "broken.avi").write_bytes(data[:300] + bytes(5000))
    d.start()
    wait_until(lambda: (d.inbox / "failed" / "broken.avi.error.json").exists(), what="the broken video set aside")
    assert d.signal(signal.SIGTERM) == 0
    last = d.records()[-1]
    assert last["status"] == "unreadable" and last["file"].endswith("broken.avi") and "video" in last["error"]


def test_the_camera_settings_from_a_config_file(tmp_path, camera, data_dir):
    """Issue 32: camera, fps, every, privacy (blur-faces) and retention (frames-max-age) from the config file:
    one frame in 3 of the recorded video, in order, its saved frames kept with faces unblurred as asked."""
    from synth_video import make
    video = make(tmp_path / "group.avi", cv2.imread(str(data_dir / "scenes" / "2008_002079.jpg")), frames=9,
                 pan=0, scale=1.0).path
    cfg = tmp_path / "cam.toml"
    cfg.write_text(f'camera = "{video}"\nfps = 50\nevery = 3\ndetector = "yunet"\nsave-frames = "all"\n'
                   f'blur-faces = false\nframes-max-age = 2\n')
    c = camera("--config", str(cfg))
    assert c.proc.wait(DEADLINE) == 0, c.log()
    recs = c.records()
    assert [r["frame"] for r in recs] == [0, 3, 6] and all(len(r["faces"]) >= 4 for r in recs)
    saved = sorted((tmp_path / "out" / "frames").glob("frame-*.jpg"))
    assert len(saved) == 3
    from edgeemo.detect import SHIPPED_YUNET
    from edgeemo.detect.yunet import YuNet
    assert len(YuNet(SHIPPED_YUNET).detect(cv2.imread(str(saved[0])))) >= 4      # not blurred: as configured
    assert "up to 50/s" in c.log() and "of 3 in order" in c.log()
