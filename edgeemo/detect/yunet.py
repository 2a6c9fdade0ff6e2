"""YuNet (cv2.FaceDetectorYN) with a user-supplied ONNX file from the OpenCV Zoo.

Detection runs on a copy shrunk as far as the smallest wanted face allows (YuNet still finds faces of
about ``MIN_FACE_PX`` pixels) and at least to ``MAX_SIDE`` on the long side; boxes are mapped back.
On the test scenes this keeps all 18 labelled faces while a 640x480 photo is searched at 320x240.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgeemo.imageio import to_bgr

from . import DetectOptions, DetectorError, Face, clip_faces

MAX_SIDE = 320
MIN_FACE_PX = 12


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
        scale = min(1.0, max(self.max_side / max(h, w), MIN_FACE_PX / max(self.options.min_face, 1)))
        small = image if scale >= 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                       interpolation=cv2.INTER_AREA)
        size = (small.shape[1], small.shape[0])
        if size != self._size:
            self._det.setInputSize(size)
            self._size = size
        _, found = self._det.detect(np.ascontiguousarray(small))
        faces = []
        inv = 1.0 / scale
        for row in (found if found is not None else []):
            x, y, fw, fh = (float(v) * inv for v in row[:4])
            faces.append(Face(int(round(x)), int(round(y)), int(round(fw)), int(round(fh)), float(row[-1])))
        return clip_faces(faces, w, h, self.options)
