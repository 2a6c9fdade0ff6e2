"""Benchmark of the `edgeemo watch` daemon, in one run over N files (default 5,000):

* latency from close-after-write to the file's line in results.jsonl, p50/p95, for files sent one at a time
  (the first --serial files: nothing else queued) and for the rest, sent with --backlog files outstanding;
* sustained throughput (files/s) of that second phase, which keeps the daemon busy;
* the daemon's resident memory (VmRSS) after every 1,000 files, and after the last one.

    python bench/watch_bench.py --model MODEL.tflite --images ../shared/data/scenes --detector yunet \\
        --detector-model ../shared/models/face_detection_yunet_2026may.onnx

Images are copied from --images (cycled, under new names) or, without it, generated (48x48 gray noise, for
the 'none' detector). Prints a table and one JSON line. Not a test: nothing here asserts a timing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def source_images(folder: Path | None, n: int) -> list[tuple[str, bytes]]:
    if folder is not None:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            sys.exit(f"{folder}: no images")
        return [(p.suffix.lower(), p.read_bytes()) for p in files]
    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    out = []
    for _ in range(min(n, 500)):
        ok, buf = cv2.imencode(".png", rng.integers(0, 256, (48, 48), dtype=np.uint8))
        out.append((".png", buf.tobytes()))
    return out


class ResultTail:
    """Follows results.jsonl; records when each file's line appeared."""

    def __init__(self, path: Path):
        self.path, self.pos, self.buf = path, 0, b""
        self.seen: dict[str, float] = {}

    def poll(self) -> int:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.pos)
                data = fh.read()
        except FileNotFoundError:
            return 0
        if not data:
            return 0
        now = time.perf_counter()
        self.pos += len(data)
        lines = (self.buf + data).split(b"\n")
        self.buf = lines.pop()
        for line in lines:
            if line.strip():
                self.seen[os.path.basename(json.loads(line)["file"])] = now
        return len(lines)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="files in the run")
    ap.add_argument("--serial", type=int, default=500, help="first files sent one at a time (latency)")
    ap.add_argument("--backlog", type=int, default=32, help="files outstanding in the loaded phase")
    ap.add_argument("--images", type=Path, help="folder of photos to cycle through (default: generated noise)")
    ap.add_argument("--model", type=Path, help="a .tflite model (default: the shipped one)")
    ap.add_argument("--detector", default="none")
    ap.add_argument("--detector-model", type=Path)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", type=Path, help="where to make the inbox (default: a temporary folder)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgeemo-bench-", dir=args.workdir))
    inbox = work / "inbox"
    inbox.mkdir()
    images = source_images(args.images, args.n)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_name = f"edgeemo-bench-{os.getpid()}"
    notify.bind("\0" + notify_name)
    notify.settimeout(120)
    cmd = [sys.executable, "-m", "edgeemo.cli", "watch", str(inbox), "--log-level", "warning",
           "--detector", args.detector, "--workers", str(args.workers), "--threads", str(args.threads)]
    if args.model:
        cmd += ["--model", str(args.model)]
    if args.detector_model:
        cmd += ["--detector-model", str(args.detector_model)]
    log = open(work / "daemon.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "NOTIFY_SOCKET": "@" + notify_name})
    try:
        while not notify.recv(4096).startswith(b"READY=1"):
            pass
        tail = ResultTail(inbox / "results" / "results.jsonl")
        closed: dict[str, float] = {}
        rss: list[tuple[int, float]] = []
        t_loaded = None

        def send(i: int) -> None:
            suffix, data = images[i % len(images)]
            name = f"b{i:06d}{suffix}"
            with open(inbox / name, "wb") as fh:
                fh.write(data)
            closed[name] = time.perf_counter()

        def outstanding() -> int:
            return len(closed) - len(tail.seen)

        notify.setblocking(False)                      # drained as we go: STATUS and WATCHDOG messages

        def drain() -> None:
            try:
                while notify.recv(4096):
                    pass
            except BlockingIOError:
                pass

        for i in range(args.n):
            drain()
            if i == args.serial:
                t_loaded = time.perf_counter()
            limit = 1 if i < args.serial else args.backlog
            while outstanding() >= limit:
                if not tail.poll():
                    time.sleep(0.0005)
                if proc.poll() is not None:
                    sys.exit(f"the daemon stopped: see {work / 'daemon.log'}")
            send(i)
            if (i + 1) % 1000 == 0:
                rss.append((i + 1, rss_mb(proc.pid)))
        while outstanding():
            if not tail.poll():
                time.sleep(0.0005)
        t_end = time.perf_counter()
        rss.append((args.n, rss_mb(proc.pid)))          # after the last file's result
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        log.close()

    names = sorted(closed)
    lat = {n: (tail.seen[n] - closed[n]) * 1000 for n in names}
    serial = [lat[f"b{i:06d}{images[i % len(images)][0]}"] for i in range(min(args.serial, args.n))]
    loaded = [lat[f"b{i:06d}{images[i % len(images)][0]}"] for i in range(args.serial, args.n)]
    loaded_n = args.n - args.serial
    summary = {
        "files": args.n, "detector": args.detector, "workers": args.workers, "threads": args.threads,
        "images": str(args.images) if args.images else "generated 48x48 noise PNG",
        "serial_latency_ms": {"n": len(serial), "p50": round(pct(serial, 50), 1), "p95": round(pct(serial, 95), 1)},
        "loaded_latency_ms": ({"n": len(loaded), "backlog": args.backlog, "p50": round(pct(loaded, 50), 1),
                               "p95": round(pct(loaded, 95), 1)} if loaded else None),
        "sustained_files_per_s": round(loaded_n / (t_end - t_loaded), 1) if loaded_n else None,
        "rss_mb": {str(k): round(v, 1) for k, v in dict(rss).items()},
        "daemon_exit": rc,
    }
    print(f"edgeemo watch benchmark: {args.n} files ({summary['images']}), detector {args.detector}, "
          f"{args.workers} worker(s) x {args.threads} thread(s)")
    s = summary["serial_latency_ms"]
    print(f"  latency, one file at a time ({s['n']} files): p50 {s['p50']} ms, p95 {s['p95']} ms")
    if loaded:
        ll = summary["loaded_latency_ms"]
        print(f"  latency, {args.backlog} outstanding ({ll['n']} files): p50 {ll['p50']} ms, p95 {ll['p95']} ms")
        print(f"  sustained throughput: {summary['sustained_files_per_s']} files/s")
    print("  RSS after: " + ", ".join(f"{k} files {v} MB" for k, v in summary["rss_mb"].items()))
    print(json.dumps(summary))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
