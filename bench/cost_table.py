"""Accuracy against cost for each shipped model and each setting of the averaging knob (``--passes``).

    python bench/cost_table.py [--models default,fast] [--embed]

For every model and every ``passes`` from 1 to the most its averaging offers, on FER2013 ``val/`` (all
faces, the device runtime and crop, as ``edgeemo evaluate``) and JAFFE whole photos through YuNet: accuracy,
model passes per face on average (the averaging runs only for faces the model is unsure of), MACs per face
(counted from the file, times the passes), milliseconds per face measured here (one thread, model only), and
milliseconds derived for an x86 core without int8 dot product (39 GMAC/s: ``edgeemo.cost.NO_DOT_GMACS``).
The CPU's int8 instructions are printed first: on a CPU with VNNI the measured column understates a Pi 4's.

``--embed`` stores the measured passes per face and accuracies in each model file's metadata (``metrics``:
``val_passes_per_face``, ``val_accuracy_by_passes``, ``jaffe_accuracy_by_passes``), which ``edgeemo info``
prints. The weights are untouched. Needs the [train] extra for the data set readers (not TensorFlow).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEEMO_SHARED", ROOT.parent / "shared"))


def measure(path, x, y, passes: int) -> dict:
    from edgeemo.runtime import Model
    m = Model(path, 1, passes=passes)
    t0 = time.perf_counter()
    probs = m.predict(x)
    seconds = time.perf_counter() - t0
    per_face = m.invocations / len(x)
    macs = m.macs_per_pass()["total"]
    return {"accuracy": float((probs.argmax(1) == y).mean()), "passes_per_face": per_face,
            "macs_per_face": per_face * macs, "ms_per_face": seconds * 1e3 / len(x)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="default,fast", help="shipped names or .tflite files, comma-separated")
    ap.add_argument("--fer", default=str(SHARED / "data" / "fer2013"))
    ap.add_argument("--jaffe", default=str(SHARED / "data" / "jaffe"))
    ap.add_argument("--yunet", default=str(SHARED / "models" / "face_detection_yunet_2026may.onnx"))
    ap.add_argument("--embed", action="store_true", help="store the measured figures in each model's metadata")
    args = ap.parse_args()

    from edgeemo import cost, modelfile
    from edgeemo.detect import make_detector
    from edgeemo.runtime import Model
    from edgeemo_convert import datasets, prepare
    from edgeemo_convert.evaluation import pick_split

    print(f"CPU: {platform.machine()}, int8 dot product: {', '.join(cost.int8_dot_product()) or 'none'}; "
          f"{cost.cpu_note()}")
    fer = pick_split(datasets.load(args.fer, "fer2013"), None)
    jaffe = datasets.load(args.jaffe, "jaffe")
    yunet = make_detector("yunet", args.yunet)
    print("| model | passes (knob) | FER2013 val/ | passes per face (val/) | MACs per face | ms per face here "
          "(measured) | ms per face, x86 without VNNI (derived, 39 GMAC/s) | JAFFE (YuNet) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        m = Model(name)
        xs = {}
        for key, fs, det in (("val", fer, None), ("jaffe", jaffe, yunet)):
            xs[key] = (prepare.to_inputs(fs, m.size, m.channels, det, m.margin, m.blur, m.fraction, m.views),
                       np.asarray(fs.labels))
        rows = {}
        for passes in range(1, m.max_passes() + 1):
            v = measure(m.path, *xs["val"], passes)
            j = measure(m.path, *xs["jaffe"], passes)
            rows[passes] = (v, j)
            print(f"| {m.name} {m.meta.get('version')} | {passes} | {100 * v['accuracy']:.2f}% | "
                  f"{v['passes_per_face']:.2f} | {cost.millions(v['macs_per_face'])} | {v['ms_per_face']:.3f} | "
                  f"{cost.derived_ms(v['macs_per_face']):.2f} | {100 * j['accuracy']:.1f}% |", flush=True)
        if args.embed:
            meta = dict(m.meta)
            metrics = dict(meta.get("metrics") or {})
            metrics["val_passes_per_face"] = {str(p): round(v["passes_per_face"], 3) for p, (v, _) in rows.items()}
            metrics["val_accuracy_by_passes"] = {str(p): round(v["accuracy"], 4) for p, (v, _) in rows.items()}
            metrics["jaffe_accuracy_by_passes"] = {str(p): round(j["accuracy"], 4) for p, (_, j) in rows.items()}
            meta["metrics"] = metrics
            data = modelfile.embed_metadata(m.path.read_bytes(), meta)
            m.path.write_bytes(data)
            print(f"  embedded in {m.path} ({len(data):,} bytes): {json.dumps(metrics['val_passes_per_face'])}")


if __name__ == "__main__":
    main()
