"""Detection recall against face size: how far a photo can be shrunk before each detector loses faces.

    python bench/detect_face_size.py [--yunet FILE.onnx]

Prints, measured in this run on real faces:
1. YuNet on the 18 labelled faces of ../shared/data/scenes (training.xml), each photo scaled so that the
   face is W pixels wide, in colour and in gray: the ground under YuNet's MIN_FACE_PX.
2. The Haar cascade on the 213 JAFFE faces (boxes from YuNet on the whole photo), each scaled to W pixels
   and placed on a plain 320x240 canvas: how reliable Haar is near its 24-pixel window.
3. The Haar detector of edgeemo with its downscaling cap (max_side) from 424 to 448 pixels and at full
   resolution, on the scenes as they are and enlarged 1.28x (about 640 pixels wide, as in
   classify_bench.py): labelled faces found, extra boxes, boxes on dogs.jpg.
Hits are IoU >= 0.4, as in tests/test_detect.py. No JAFFE face is written anywhere.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEEMO_SHARED", ROOT.parent / "shared"))
SCENES = SHARED / "data" / "scenes"
JAFFE = SHARED / "data" / "jaffe"
YUNET = SHARED / "models" / "face_detection_yunet_2026may.onnx"


def yunet_boxes(det, img) -> list[tuple]:
    det.setInputSize((img.shape[1], img.shape[0]))
    _, found = det.detect(img)
    return [] if found is None else [tuple(float(v) for v in r[:4]) for r in found]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--yunet", default=str(YUNET))
    args = ap.parse_args()
    cv2.setNumThreads(1)
    from edgeemo.detect import DetectOptions
    from edgeemo.detect.haar import Haar
    from edgeemo_convert.detection_scoring import iou, load_imglab, match

    truth = load_imglab(SCENES / "training.xml")
    photos = {name: cv2.imread(str(SCENES / name)) for name in [*truth, "dogs.jpg"]}
    yn = cv2.FaceDetectorYN.create(args.yunet, "", (320, 320), 0.6, 0.3, 5000)

    print("1. YuNet, labelled scene faces scaled to a width (of 18)")
    for width in (10, 11, 12, 13, 14, 16):
        row = []
        for mode in ("colour", "gray"):
            found = 0
            for name, boxes in truth.items():
                img = photos[name]
                if mode == "gray":
                    img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
                for b in boxes:
                    s = width / b[2]
                    small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
                    got = [tuple(v / s for v in f) for f in yunet_boxes(yn, small)]
                    found += match(got, [b], 0.4)[0]
            row.append(f"{mode} {found:2d}")
        print(f"   {width:3d} px: " + ", ".join(row))

    print("2. Haar cascade, JAFFE faces scaled to a width, on a 320x240 canvas")
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
    faces = []
    for f in sorted(JAFFE.glob("*.tif*")):
        gray = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            continue
        boxes = yunet_boxes(yn, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
        if len(boxes) == 1:
            faces.append((gray, boxes[0]))
    rng = np.random.default_rng(0)
    for width in (24, 28, 32, 36, 40, 48):
        hits = 0
        for gray, (x, y, w, h) in faces:
            s = width / w
            small = cv2.resize(gray, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            canvas = np.full((240, 320), 128, np.uint8)
            oy, ox = rng.integers(0, 240 - small.shape[0]), rng.integers(0, 320 - small.shape[1])
            canvas[oy:oy + small.shape[0], ox:ox + small.shape[1]] = small
            found = cascade.detectMultiScale(cv2.equalizeHist(canvas), 1.1, 5, minSize=(24, 24))
            hits += any(iou(tuple(r), (x * s + ox, y * s + oy, w * s, h * s)) >= 0.4 for r in found)
        print(f"   {width:3d} px: {hits}/{len(faces)}")

    print("3. edgeemo's Haar by downscaling cap: found/18, extra boxes, boxes on dogs.jpg")
    for cap in (10 ** 6, 448, 440, 432, 424):
        det = Haar(DetectOptions(), max_side=cap)
        row = []
        for up in (1.0, 1.28):
            tp = fp = 0
            for name, boxes in truth.items():
                img = photos[name] if up == 1.0 else cv2.resize(photos[name], None, fx=up, fy=up)
                a, b = match([tuple(v / up for v in f.xywh) for f in det.detect(img)], boxes, 0.4)
                tp, fp = tp + a, fp + b
            dogs = len(det.detect(cv2.resize(photos["dogs.jpg"], None, fx=up, fy=up)))
            row.append(f"x{up}: {tp:2d}/18, {fp} extra, {dogs} on dogs")
        print(f"   {'full' if cap == 10 ** 6 else cap:>4}: " + "; ".join(row))


if __name__ == "__main__":
    main()
