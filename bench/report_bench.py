"""`edgeemo report` on a million records: time and peak RSS (the records are read as a stream).

    python bench/report_bench.py [--records 1000000]

Writes a results.jsonl of --records realistic records (one to three faces each, a few no-face and error
records, a month of timestamps, two cameras), then runs `edgeemo report` on it in a child process and prints
its wall time, records/s and peak RSS (VmHWM), beside the same for 10,000 records: the RSS must not grow
with the number of records.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
PEAK = ("import atexit, runpy, sys\n"
        "atexit.register(lambda: sys.stderr.write(next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))))\n"
        "sys.argv = ['edgeemo', *sys.argv[1:]]\nrunpy.run_module('edgeemo.cli', run_name='__main__')\n")


def write_records(path: Path, n: int) -> None:
    rng = random.Random(0)
    t0 = 1_793_000_000
    with open(path, "w") as fh:
        for i in range(n):
            t = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t0 + i * 2_592_000 // max(n, 1)))
            r = rng.random()
            if r < 0.02:
                rec = {"time": t, "file": f"/in/p{i}.jpg", "sha256": None, "status": "unreadable",
                       "error": f"/in/p{i}.jpg: truncated JPEG file", "width": None, "height": None, "faces": []}
            else:
                faces = []
                for _ in range(0 if r < 0.15 else rng.randint(1, 3)):
                    lab = rng.choice(LABELS)
                    w = rng.randint(20, 300)
                    faces.append({"box": [rng.randint(0, 400), rng.randint(0, 300), w, w], "score": 0.9,
                                  "label": lab, "confidence": round(rng.random(), 4)})
                rec = {"time": t, "file": f"/in/p{i}.jpg", "sha256": "0" * 64, "status": "ok" if faces else "no_face",
                       "error": None, "width": 640, "height": 480, "faces": faces}
            rec["model"] = {"name": "edgeemo-fer2013-res40", "sha256": "1" * 64}
            rec["camera"] = "door" if i % 2 else "hall"
            fh.write(json.dumps(rec) + "\n")


def report(path: Path, out: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", PEAK, "report", str(path), "--out", str(out), "--by", "day"],
                         capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(res.stderr[-2000:])
    return dt, int(re.search(r"VmHWM:\s+(\d+)", res.stderr).group(1)) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for n in (10_000, args.records):
            p = Path(tmp) / f"r{n}.jsonl"
            write_records(p, n)
            dt, rss = report(p, Path(tmp) / f"r{n}.html")
            rows.append((n, p.stat().st_size, dt, rss))
        for n, size, dt, rss in rows:
            print(f"{n:>9,} records ({size / 1e6:6.0f} MB): {dt:6.1f} s, {n / dt:8,.0f} records/s, peak RSS {rss:5.0f} MB")
        print(f"peak RSS ratio, {rows[1][0]:,} to {rows[0][0]:,} records: {rows[1][3] / rows[0][3]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
