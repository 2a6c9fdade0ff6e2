"""OpenCV's frontal-face Haar cascade (bundled in the opencv-python-headless 4.x wheel).

Detection runs on a copy downscaled so that the smallest face asked for is still about 24 pixels (the
cascade's window) and the long side is at most ``MAX_SIDE``; boxes are mapped back to the original.
"""
from __future__ import annotations

from pathlib import Path

import cv2

from edgeemo.imageio import to_gray

from . import DetectOptions, DetectorError, Face, clip_faces

MAX_SIDE = 448          # detection resolution cap: on the test scenes as many faces as at full resolution
CASCADE_WINDOW = 24


class Haar:
    name = "haar"
    precropped = False
    model_path = None           # the cascade comes with OpenCV

    def __init__(self, options: DetectOptions | None = None, max_side: int = MAX_SIDE):
        self.options = options or DetectOptions()
        self.max_side = max_side
        data = getattr(cv2, "data", None)
        path = Path(data.haarcascades) / "haarcascade_frontalface_default.xml" if data else None
        if path is None or not path.is_file() or not hasattr(cv2, "CascadeClassifier"):
            raise DetectorError("the Haar face cascade is not available in this OpenCV build "
                                "(opencv-python-headless 5.x dropped it): install "
                                "'opencv-python-headless>=4.10,<5' or use --detector yunet")
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise DetectorError(f"{path}: the Haar cascade could not be loaded")

    def detect(self, image) -> list[Face]:
        gray = to_gray(image)
        h, w = gray.shape[:2]
        # Shrink so that the smallest wanted face just fills the cascade window, and the long side is at
        # most max_side: the cascade's cost grows with the pixels it scans.
        scale = min(1.0, CASCADE_WINDOW / max(self.options.min_face, 1), self.max_side / max(h, w))
        small = gray if scale >= 1.0 else cv2.resize(gray, (max(1, int(w * scale)), max(1, int(h * scale))),
                                                      interpolation=cv2.INTER_AREA)
        small = cv2.equalizeHist(small)
        min_side = max(CASCADE_WINDOW, int(self.options.min_face * scale))
        rects, _, weights = self._cascade.detectMultiScale3(small, scaleFactor=1.1, minNeighbors=5,
                                                            minSize=(min_side, min_side), outputRejectLevels=True)
        inv = 1.0 / scale if scale < 1.0 else 1.0
        faces = []
        for (x, y, fw, fh), wgt in zip(rects, weights):
            # detectMultiScale3's level weight is an unbounded margin; squash to 0..1 as a score.
            score = float(1.0 / (1.0 + pow(2.718281828, -float(wgt))))
            faces.append(Face(int(round(x * inv)), int(round(y * inv)), int(round(fw * inv)),
                              int(round(fh * inv)), score))
        return clip_faces(faces, w, h, self.options)
