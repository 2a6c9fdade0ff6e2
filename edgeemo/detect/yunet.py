"""YuNet (cv2.FaceDetectorYN) with a user-supplied ONNX file from the OpenCV Zoo.

Detection runs on a copy shrunk as far as the smallest wanted face allows (YuNet still finds faces of
about ``MIN_FACE_PX`` pixels) and at least to ``MAX_SIDE`` on the long side; boxes are mapped back.
On the test scenes this keeps all 18 labelled faces while a 640x480 photo is searched at 320x240.
YuNet's working memory grows with the pixels it searches (about BYTES_PER_PIXEL each, measured with
``bench/decode_memory.py``), so the copy is also kept within the decode budget: under a 1 GiB MemoryMax
a photo is searched at no more than 3.6 megapixels, and only faces smaller than about 24 pixels in a
photo of over 15 megapixels can be missed for it.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgeemo.imageio import decode_budget, to_bgr

from . import DetectOptions, DetectorError, Face, clip_faces

MAX_SIDE = 320
MIN_FACE_PX = 12
BYTES_PER_PIXEL = 72
COARSE_SIDE = 640


class YuNet:
    name = "yunet"
    precropped = False

    def __init__(self, model_path: str | Path, options: DetectOptions | None = None, max_side: int = MAX_SIDE):
        self.options = options or DetectOptions()
        self.model_path = Path(model_path)
        self.max_side = max_side
        if not hasattr(cv2, "FaceDetectorYN"):
            raise DetectorError("this OpenCV build has no cv2.FaceDetectorYN; install opencv-python-headless>=4.10")
        try:
            self._det = cv2.FaceDetectorYN.create(str(self.model_path), "", (320, 320),
                                                  self.options.score_threshold, 0.3, 5000)
        except cv2.error as exc:
            raise DetectorError(f"{self.model_path}: not a usable YuNet ONNX model ({exc.msg.strip()})") from exc
        self._size = None

    def detect(self, image) -> list[Face]:
        image = to_bgr(image)
        h, w = image.shape[:2]
        fine = min(1.0, max(self.max_side / max(h, w), MIN_FACE_PX / max(self.options.min_face, 1)),
                   (decode_budget() / BYTES_PER_PIXEL / (h * w)) ** 0.5)
        faces = self._search(image, fine)
        # YuNet finds faces up to a few hundred pixels; a face filling a large photo searched at the
        # fine scale is missed, so such photos are searched once more at COARSE_SIDE (cheap) and merged.
        coarse = min(1.0, COARSE_SIDE / max(h, w))
        if coarse < fine / 1.5:
            faces = _merge(faces + self._search(image, coarse))
        return clip_faces(faces, w, h, self.options)

    def _search(self, image, scale: float) -> list[Face]:
        h, w = image.shape[:2]
        small = image if scale >= 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                       interpolation=cv2.INTER_AREA)
        size = (small.shape[1], small.shape[0])
        if size != self._size:
            self._det.setInputSize(size)
            self._size = size
        _, found = self._det.detect(np.ascontiguousarray(small))
        inv = 1.0 / scale
        faces = []
        for row in (found if found is not None else []):
            x, y, fw, fh = (float(v) * inv for v in row[:4])
            faces.append(Face(int(round(x)), int(round(y)), int(round(fw)), int(round(fh)), float(row[-1])))
        return faces


def _iou(a: Face, b: Face) -> float:
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    return inter / float(a.w * a.h + b.w * b.h - inter) if inter else 0.0


def _merge(faces: list[Face], overlap: float = 0.3) -> list[Face]:
    """One box per face from two searches: the more confident of boxes that overlap."""
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: f.score, reverse=True):
        if all(_iou(f, k) < overlap for k in kept):
            kept.append(f)
    return kept
