"""Benchmark of the device path, all figures measured in this one run, on one CPU core.

    python bench/classify_bench.py [--model FILE.tflite|fast] [--passes N] [--yunet FILE.onnx] [--repeat N] [--rounds N]

Prints first the CPU's int8 dot-product instructions (avx512_vnni, avx_vnni, asimddp): with them, int8
milliseconds here understate a Raspberry Pi 4's. Then: the model's multiply-accumulates per pass (counted
from the file) and per face; per-face classification latency (1 thread) of the int8 model and of a float32 TFLite model of
the same architecture, and their ratio; face detection time on a 640x480 photo (YuNet, Haar with
edgeemo's downscaling, Haar at full resolution); end-to-end images/s through Classifier on 640x480
JPEGs, with MACs per face and images/s derived for an x86 core without int8 dot product (the model's
runs at 39 GMAC/s, ``edgeemo.cost.NO_DOT_GMACS``; decode, detection and the rest as measured here); peak RSS
of an `edgeemo classify` process; CLI start time.

The float32 twin is built from the model's recipe (edgeemo_convert.archs, random weights: latency does
not depend on weight values); it needs the [train] extra and is skipped, saying so, without it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEEMO_SHARED", ROOT.parent / "shared"))
SCENES = SHARED / "data" / "scenes"
YUNET = SHARED / "models" / "face_detection_yunet_2026may.onnx"


def pin_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)


def timed(fn, repeat: int) -> float:
    """Median seconds per call after a warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def photos_640x480(out: Path) -> list[Path]:
    """640x480 JPEGs made from the real scene photos (centre crop to 4:3, resized)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in sorted(SCENES.glob("*.jpg")):
        img = cv2.imread(str(src))
        h, w = img.shape[:2]
        if w / h > 4 / 3:
            nw = int(h * 4 / 3)
            img = img[:, (w - nw) // 2:(w - nw) // 2 + nw]
        else:
            nh = int(w * 3 / 4)
            img = img[(h - nh) // 2:(h - nh) // 2 + nh]
        img = cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA)
        p = out / src.name
        cv2.imwrite(str(p), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(p)
    return paths


def float_twin(model, tmp: Path) -> Path | None:
    try:
        import importlib.util
        if importlib.util.find_spec("tensorflow") is None:
            return None
        from edgeemo_convert import archs
        from edgeemo_convert.quantize import to_tflite
    except ImportError:
        return None
    arch = (model.meta.get("training") or {}).get("arch")
    if arch not in archs.RECIPES:
        print(f"  (model metadata names no known recipe ({arch!r}); float32 twin skipped)")
        return None
    from edgeemo import modelfile
    km = archs.build(arch, len(model.labels), model.size, model.channels)
    meta = {k: v for k, v in model.meta.items() if k != "embedded"}
    path = tmp / "float32.tflite"
    path.write_bytes(modelfile.embed_metadata(to_tflite(km, None), meta))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="int8 .tflite or a shipped model's name (default: the default)")
    ap.add_argument("--passes", type=int, default=None, help="the averaging knob, 1-6 (default: the model's all)")
    ap.add_argument("--yunet", default=str(YUNET))
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=15, help="end-to-end rounds over the photos (YuNet)")
    args = ap.parse_args()
    pin_one_core()
    from edgeemo.detect import DetectOptions
    from edgeemo.detect.haar import Haar
    from edgeemo.detect.yunet import YuNet
    from edgeemo.pipeline import Classifier
    from edgeemo.runtime import Model

    tmp = Path(tempfile.mkdtemp(prefix="edgeemo-bench-"))
    from edgeemo import cost
    q = Model(args.model, threads=1, passes=args.passes)
    import platform
    print(f"CPU {platform.machine()}, int8 dot product: {', '.join(cost.int8_dot_product()) or 'none'}: "
          f"{cost.cpu_note()}")
    print(f"model {q.path} ({q.path.stat().st_size:,} bytes, {q.input_dtype} in, runtime {q.backend}); one core")
    macs = q.macs_per_pass()["total"]
    print(f"  {cost.millions(macs)} multiply-accumulates per pass ({macs:,}); up to {q.max_passes()} passes "
          f"per face (--passes)")
    face = np.random.default_rng(0).integers(0, 256, (1, q.size, q.size, q.channels), dtype=np.uint8)

    print("\nper-face classification, 1 thread (one interpreter run; a model with mirror averaging or further")
    print("views also runs those for faces it is unsure of)")
    mirrors, skip_at = q.flip_average, q.skip_mirror_at
    q.flip_average = False
    t_q = timed(lambda: q.predict(face), args.repeat)
    print(f"  int8     {t_q * 1000:8.3f} ms")
    q.flip_average, q.skip_mirror_at = mirrors, None
    if q.max_passes() > 1:
        every = np.repeat(face[:, None], 1 + len(q.views), axis=1)      # the face in each of the model's views
        passes = q.max_passes()
        print(f"  int8 with all {passes} passes (a face it is unsure of) "
              f"{timed(lambda: q.predict(every), args.repeat) * 1000:8.3f} ms")
    q.skip_mirror_at = skip_at
    twin = float_twin(q, tmp)
    if twin:
        f = Model(twin, threads=1)
        f.flip_average = False
        t_f = timed(lambda: f.predict(face), args.repeat)
        print(f"  float32  {t_f * 1000:8.3f} ms  ({twin.stat().st_size:,} bytes)")
        print(f"  ratio    float32 / int8 = {t_f / t_q:.2f}x")
    else:
        print("  float32  skipped: building the float twin needs TensorFlow (pip install 'edgeemo[train]')")

    photos = photos_640x480(tmp / "photos")
    imgs = [cv2.imread(str(p)) for p in photos]
    print(f"\nface detection on 640x480 photos (median over {len(imgs)} real photos)")
    dets = {}
    if Path(args.yunet).is_file():
        dets["yunet"] = YuNet(args.yunet)
        # Yardstick for comparing machines: YuNet on the full 640x480 picture (the reference
        # machine: about 9 ms on one core).
        dets["yunet (full resolution)"] = YuNet(args.yunet, max_side=10 ** 6)
    else:
        print(f"  yunet    skipped: {args.yunet} not found")
    dets["haar (edgeemo downscaling)"] = Haar(DetectOptions())
    dets["haar (full resolution)"] = Haar(DetectOptions(), max_side=10 ** 6)
    det_ms = {}
    for name, d in dets.items():
        per = [timed(lambda im=im: d.detect(im), max(3, args.repeat // 40)) for im in imgs]
        det_ms[name] = statistics.median(per) * 1000
        print(f"  {name:28s} {det_ms[name]:8.2f} ms")
    if "haar (full resolution)" in det_ms:
        print(f"  haar speed-up from downscaling: "
              f"{det_ms['haar (full resolution)'] / det_ms['haar (edgeemo downscaling)']:.2f}x")

    print("\nend to end (read JPEG, detect, crop, int8, record), one core")
    print(f"  median of {args.rounds} rounds, each a pass over the {len(photos)} photos; the full-resolution YuNet")
    print("  yardstick is timed between rounds, as this machine's speed drifts")
    for name in (["yunet"] if "yunet" in dets else []) + ["haar"]:
        clf = Classifier(q, detector=name, detector_model=args.yunet if name == "yunet" else None)
        clf.classify_image(photos[0])
        rounds = args.rounds if name == "yunet" else 1
        per_image, ratios, faces, runs0, secs0 = [], [], 0, q.invocations, q.run_seconds
        for _ in range(rounds):
            t = time.perf_counter()
            faces += sum(len(clf.classify_image(p)["faces"]) for p in photos)
            per_image.append((time.perf_counter() - t) / len(photos))
            if name == "yunet":
                ref = dets["yunet (full resolution)"]
                t = time.perf_counter()
                for im in imgs:
                    ref.detect(im)
                ratios.append(per_image[-1] / ((time.perf_counter() - t) / len(imgs)))
        ms = statistics.median(per_image) * 1000
        passes = (q.invocations - runs0) / max(faces, 1)
        model_ms = (q.run_seconds - secs0) * 1000 / (rounds * len(photos))        # per image, measured
        face_macs = passes * macs
        line = (f"  {name:6s} {1000 / ms:8.1f} images/s ({ms:.1f} ms per image; rounds "
                f"{1 / max(per_image):.1f}..{1 / min(per_image):.1f}); {faces / rounds:.0f} faces per pass, "
                f"{passes:.2f} model runs per face")
        if ratios:
            line += f"; {statistics.median(ratios):.2f}x the full-resolution YuNet yardstick"
        print(line)
        image_macs = face_macs * faces / (rounds * len(photos))
        derived = ms - model_ms + cost.derived_ms(image_macs)
        print(f"         cost: {cost.millions(face_macs)} MACs per face, {cost.millions(image_macs)} per image; model "
              f"{model_ms:.2f} ms per image measured here; on an x86 core without int8 dot product (derived: "
              f"model at {cost.NO_DOT_GMACS:g} GMAC/s, the rest as here): {cost.derived_ms(image_macs):.2f} ms, "
              f"{1000 / derived:.1f} images/s")

    print("\nedgeemo classify process")
    import shutil
    script = shutil.which("edgeemo") or str(Path(sys.executable).with_name("edgeemo"))
    exe = [script] if Path(script).exists() else [sys.executable, "-m", "edgeemo.cli"]
    env = {**os.environ}
    if "yunet" in dets:
        env["EDGEEMO_YUNET_MODEL"] = args.yunet
    cmd = exe + ["classify", str(tmp / "photos"), "--out", str(tmp / "out")] + (["--model", args.model] if args.model else []) \
        + (["--passes", str(args.passes)] if args.passes else [])
    # Measured by a small launcher process: a child forked from this (large) process would report this
    # process's RSS as its own peak.
    launcher = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
                "stderr=subprocess.DEVNULL); print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    rc, peak_kb = subprocess.run([sys.executable, "-c", launcher, *cmd], env=env, check=True, capture_output=True,
                                 text=True).stdout.split()
    print(f"  peak RSS {int(peak_kb) / 1024:.1f} MB (classifying {len(photos)} photos, exit code {rc})")
    starts = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run(exe + ["--help"], check=True, stdout=subprocess.DEVNULL)
        starts.append(time.perf_counter() - t)
    print(f"  CLI start (edgeemo --help, median of 5) {statistics.median(starts):.3f} s")


if __name__ == "__main__":
    main()
