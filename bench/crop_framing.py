"""How much margin around a YuNet face box gives FER2013's framing: measured on FER2013 faces themselves.

    python bench/crop_framing.py [--n 600] [--yunet FILE.onnx]

A model trained on FER2013 sees faces framed as FER2013 frames them (a tight crop, chin to forehead). On
the device a face detector finds the box and the crop adds ``crop_margin`` on each side. This script puts
each FER2013 `val/` face, enlarged 4x, on a larger mid-gray canvas, runs YuNet, and prints how the FER2013
frame compares with the detector's box: the margin m with frame side = max(box w, h) * (1 + 2 m), and the
offset of the frame's centre from the box centre (in box sides). No labels are used; JAFFE is not looked at.
The median margin is what the default model's metadata carries.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("EDGEEMO_SHARED", ROOT.parent / "shared"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=600, help="FER2013 val/ faces to measure (seeded sample)")
    ap.add_argument("--yunet", type=Path, default=SHARED / "models" / "face_detection_yunet_2026may.onnx")
    ap.add_argument("--scale", type=int, default=4, help="enlargement of the 48x48 face")
    args = ap.parse_args()

    from edgeemo.detect import DetectOptions
    from edgeemo.detect.yunet import YuNet

    files = sorted((SHARED / "data" / "fer2013" / "val").glob("*/*.jpg"))
    rng = np.random.default_rng(0)
    files = [files[i] for i in rng.permutation(len(files))[:args.n]]
    det = YuNet(args.yunet, DetectOptions(min_face=20, score_threshold=0.5))
    side = 48 * args.scale
    pad = side // 2
    margins, dx, dy, missed = [], [], [], 0
    for f in files:
        face = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((side + 2 * pad, side + 2 * pad), 128, np.uint8)
        canvas[pad:pad + side, pad:pad + side] = big
        boxes = det.detect(cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR))
        if not boxes:
            missed += 1
            continue
        b = max(boxes, key=lambda b: b.w * b.h)
        s = max(b.w, b.h)
        margins.append((side / s - 1.0) / 2.0)
        dx.append((pad + side / 2 - (b.x + b.w / 2)) / s)
        dy.append((pad + side / 2 - (b.y + b.h / 2)) / s)
    m = np.array(margins)
    print(f"FER2013 val/ faces measured: {len(files)}; YuNet found a face in {len(m)} ({missed} missed)")
    print(f"margin that reproduces FER2013's frame: median {np.median(m):.3f}, "
          f"quartiles {np.percentile(m, 25):.3f} .. {np.percentile(m, 75):.3f}")
    print(f"frame centre minus box centre, in box sides: x median {np.median(dx):+.3f}, "
          f"y median {np.median(dy):+.3f}")


if __name__ == "__main__":
    main()
