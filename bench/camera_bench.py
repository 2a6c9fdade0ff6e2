"""A live camera at its own pace, `edgeemo watch --camera` as fast as this CPU allows: how many frames it
analyses a second, how many it drops, and whether it falls behind.

    python bench/camera_bench.py [--seconds 20] [--stream-fps 30] [--fps 100] [--model default|fast]

A thread writes JPEG frames of a 640x480 window on a real group photo (about 6 faces) into a FIFO at
``--stream-fps``, as a camera delivers them; the daemon reads it through OpenCV's FFmpeg backend (a live
stream, like a USB camera or an RTSP URL), one interpreter thread, YuNet, tracking on. Prints the CPU's int8
instructions, then from the daemon's own summary at stop: frames captured, analysed and dropped, analysed
frames/s, and the delay of the last record behind the stream (a backlog would grow it; the newest-frame rule
keeps it under one analysis). Measured on this machine: a CPU without int8 dot product analyses fewer frames
and drops more, by the ratio that bench/video_bench.py derives.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEEMO_SHARED", ROOT.parent / "shared"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--stream-fps", type=float, default=30.0)
    ap.add_argument("--fps", type=float, default=100.0, help="the daemon's cap (100: as fast as the CPU allows)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--photo", default=str(SHARED / "data" / "scenes" / "2008_002079.jpg"))
    args = ap.parse_args()
    import cv2

    from edgeemo import cost
    print(cost.cpu_note())
    photo = cv2.imread(args.photo)
    big = cv2.resize(photo, (max(640, photo.shape[1]), max(480, photo.shape[0])))
    ok, buf = cv2.imencode(".jpg", big[:480, :640])
    data = buf.tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        fifo, out = Path(tmp) / "camera.mjpeg", Path(tmp) / "out"
        os.mkfifo(fifo)
        stop, written = threading.Event(), [0]

        def camera():
            try:
                with open(fifo, "wb") as fh:
                    while not stop.is_set():
                        fh.write(data)
                        fh.flush()
                        written[0] += 1
                        time.sleep(1 / args.stream_fps)
            except OSError:
                pass
        threading.Thread(target=camera, daemon=True).start()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        log = Path(tmp) / "daemon.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "edgeemo.cli", "watch", "--camera", str(fifo), "--out",
                                     str(out), "--fps", str(args.fps), "--model", args.model, "--threads", "1",
                                     "--format", "jsonl"], stdout=fh, stderr=subprocess.STDOUT, env=env)
            time.sleep(args.seconds)
            proc.terminate()
            proc.wait(60)
            stop.set()
        text = log.read_text(errors="replace")
        m = re.search(r"stopped: .*?(\d+) frames analysed .*?, (\d+) dropped of (\d+) captured; (\d+) faces "
                      r"classified, (\d+) face tracks", text)
        if not m:
            sys.exit(f"no summary in the daemon's log:\n{text[-3000:]}")
        analysed, dropped, captured, classified, tracks = map(int, m.groups())
        recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines() if x.strip()]
        span = (_t(recs[-1]["time"]) - _t(recs[0]["time"])) if len(recs) > 1 else 0.0
        faces = sum(len(r["faces"]) for r in recs)
        print(f"stream: {args.stream_fps:g} frames/s for {args.seconds:g} s ({written[0]} written); daemon cap "
              f"--fps {args.fps:g}, model {args.model}, one thread")
        print(f"frames: {captured} captured, {analysed} analysed, {dropped} dropped "
              f"({dropped / max(1, captured):.0%}); {(len(recs) - 1) / span if span else 0:.1f} analysed frames/s")
        print(f"faces: {faces / max(1, len(recs)):.1f} per analysed frame, {classified / max(1, analysed):.2f} "
              f"classified per frame (tracks reuse their answer), {tracks} tracks")
        print(f"the stream's last frame number {captured - 1}, the last analysed {recs[-1]['frame']}: "
              f"{captured - 1 - recs[-1]['frame']} frames behind at stop (no backlog)")


def _t(s: str) -> float:
    import datetime as dt
    return dt.datetime.fromisoformat(s).timestamp()


if __name__ == "__main__":
    main()
