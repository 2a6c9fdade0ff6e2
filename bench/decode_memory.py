"""Memory per image size: the peak RSS of one `edgeemo classify` process per picture, and what happens to
each picture under a memory limit like the unit's MemoryMax.

    python bench/decode_memory.py [--limit-mb 1024 512] [--detector yunet|haar|none]

Each row is one fresh process classifying one generated picture (a scene photo scaled up, so the JPEGs
compress like photos; the PNG "bombs" are a few hundred KB of flat colour that decode to hundreds of MB).
Columns: the record's status, the JPEG decode scale, and the process's peak RSS (ru_maxrss) with no limit.
Then, where this machine lets a process create a memory cgroup (cgroup v1 ``memory.limit_in_bytes`` or v2
``memory.max``, i.e. root), the same pictures again inside a cgroup of each ``--limit-mb``: the decode
budget is derived from the limit, and the row says whether the process was OOM-killed (it must never be).
The README's table of image sizes per MemoryMax comes from this script.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edgeemo import imageio  # noqa: E402
SHARED = Path(os.environ.get("EDGEEMO_SHARED", ROOT.parent / "shared"))
SCENES = SHARED / "data" / "scenes"
YUNET = SHARED / "models" / "face_detection_yunet_2026may.onnx"


def photo(w: int, h: int) -> np.ndarray:
    base = cv2.imread(str(SCENES / "Tom_Cruise_avp_2014_4.jpg"))
    big = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(0).integers(0, 6, big.shape, dtype=np.uint8)   # sensor-like grain
    return cv2.add(big, noise)


def make_cases(folder: Path) -> list[tuple[str, Path]]:
    cases = []

    def add(label, name, data: bytes):
        p = folder / name
        p.write_bytes(data)
        cases.append((label, p))

    for mp, (w, h) in (("0.3", (640, 480)), ("12", (4000, 3000)), ("24", (6000, 4000)), ("48", (8000, 6000))):
        add(f"JPEG {mp} MP photo", f"photo{w}.jpg", cv2.imencode(".jpg", photo(w, h), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    add("PNG 24 MP RGB 8-bit", "rgb24.png", cv2.imencode(".png", photo(6000, 4000))[1].tobytes())
    for side, depth in ((5000, 8), (7000, 8), (7000, 16)):
        flat = np.full((side, side, 4), 200, np.uint8 if depth == 8 else np.uint16)
        flat[..., 3] = 128 if depth == 8 else 32768
        add(f"PNG bomb {side}x{side} RGBA {depth}-bit", f"bomb{side}_{depth}.png",
            cv2.imencode(".png", flat, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes())
    return cases


class Cgroup:
    """A memory cgroup with a limit, made under this process's own (needs root); None where impossible."""

    def __init__(self, limit: int):
        self.path, self.v1 = None, False
        own = Path("/proc/self/cgroup").read_text().splitlines()
        v1 = next((ln.split(":", 2)[2] for ln in own if ":memory:" in ln), None)
        tries = []
        if v1 is not None:
            tries.append((Path("/sys/fs/cgroup/memory") / v1.lstrip("/"), "memory.limit_in_bytes", True))
        v2 = next((ln.split(":", 2)[2] for ln in own if ln.startswith("0::")), None)
        if v2 is not None:
            tries.append((Path("/sys/fs/cgroup") / v2.lstrip("/"), "memory.max", False))
        for parent, knob, is_v1 in tries:
            path = parent / f"edgeemo-bench-{os.getpid()}-{limit >> 20}"
            try:
                path.mkdir()
                (path / knob).write_text(str(limit))
                if is_v1:
                    try:
                        (path / "memory.memsw.limit_in_bytes").write_text(str(limit))   # no escape into swap
                    except OSError:
                        pass
                self.path, self.v1 = path, is_v1
                return
            except OSError:
                try:
                    path.rmdir()
                except OSError:
                    pass

    def enter(self):
        """For preexec_fn: move the child into the cgroup before it runs."""
        (self.path / ("tasks" if self.v1 else "cgroup.procs")).write_text(str(os.getpid()))

    def close(self):
        if self.path:
            for _ in range(20):
                try:
                    self.path.rmdir()
                    return
                except OSError:
                    time.sleep(0.1)


def run_measured(path, detector, cgroup):
    """Run `edgeemo classify` on one picture in a child (inside ``cgroup`` if given); the record's status and
    error, the exit status (negative: killed by that signal) and the child's own peak RSS from wait4."""
    cmd = [sys.executable, "-m", "edgeemo.cli", "classify", str(path), *detector]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if cgroup:
                cgroup.enter()
            os.dup2(w, 1)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.execv(sys.executable, cmd)
        finally:
            os._exit(127)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status, usage = os.wait4(pid, 0)
    out = b"".join(chunks).decode()
    rec = json.loads(out.splitlines()[0]) if out.strip() else {}
    killed = os.WIFSIGNALED(status)
    return {"rc": -os.WTERMSIG(status) if killed else os.WEXITSTATUS(status), "rss_mb": usage.ru_maxrss / 1024,
            "status": rec.get("status", "(killed)" if killed else "(none)"), "error": rec.get("error") or ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit-mb", type=int, nargs="*", default=[1024, 512])
    ap.add_argument("--detector", default="yunet")
    args = ap.parse_args()
    det = ["--detector", args.detector] + (["--detector-model", str(YUNET)] if args.detector == "yunet" else [])
    with tempfile.TemporaryDirectory() as tmp:
        cases = make_cases(Path(tmp))
        print(f"{'picture':32} {'file':>9}  {'status':10} {'decoded at':>10} {'peak RSS':>9}")
        for label, p in cases:
            r = run_measured(p, det, None)
            data = p.read_bytes()
            fmt = imageio.sniff(data)
            scale = f"1/{imageio.decode_plan(data, fmt, *imageio.header_size(data, fmt))[0]}"
            print(f"{label:32} {p.stat().st_size / 1e6:7.1f}MB  {r['status']:10} {scale:>10} {r['rss_mb']:7.0f}MB"
                  + (f"   {r['error'][:90]}" if r["error"] else ""))
        print("\nLargest picture decoded whole, by MemoryMax (megapixels; from imageio.decode_plan, which the rows "
              "above check; the 50-megapixel limit applies to all):")
        kinds = (("JPEG", "jpeg", None), ("PNG RGB 8-bit", "png", (8, 2)), ("PNG RGBA 8-bit", "png", (8, 6)),
                 ("PNG RGBA 16-bit", "png", (16, 6)))
        print(f"  {'MemoryMax':>9}  {'budget':>7}  " + "  ".join(f"{k:>15}" for k, _, _ in kinds))
        for limit in sorted({256, 512, 1024, 2048, *args.limit_mb}):
            budget = max(32 << 20, (limit << 20) // 4)
            cells = []
            for _, fmt, png in kinds:
                head = (b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + b"\0" * 8 + bytes(png)) if png else b"\xff\xd8\xff"
                fits = [mp for mp in range(1, 51) if imageio.decode_plan(head, fmt, mp * 1000, 1000)[1] <= budget]
                cells.append(f"{max(fits) if fits else 0:>15}")
            print(f"  {limit:>7}MB  {budget >> 20:>5}MB  " + "  ".join(cells))
        for limit in args.limit_mb:
            cg = Cgroup(limit << 20)
            if cg.path is None:
                print(f"\nMemoryMax {limit} MB: cannot create a memory cgroup here (needs root); skipped")
                continue
            try:
                print(f"\nInside a memory cgroup of {limit} MB ({'v1' if cg.v1 else 'v2'}; decode budget "
                      f"{limit // 4} MB):")
                for label, p in cases:
                    r = run_measured(p, det, cg)
                    verdict = "OOM-KILLED" if r["rc"] == -9 else f"exit {r['rc']}"
                    print(f"  {label:32} {r['status']:10} {r['rss_mb']:7.0f}MB  {verdict}"
                          + (f"   {r['error'][:80]}" if r["error"] and r["status"] == "error" else ""))
            finally:
                cg.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
