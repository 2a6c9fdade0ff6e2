"""OpenCV's frontal-face Haar cascade: the one in the opencv-python-headless 4.x wheel (``cv2.data``), or,
with Debian's or Raspberry Pi OS's python3-opencv, the one the ``opencv-data`` package installs.

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
CASCADE = "haarcascade_frontalface_default.xml"
# where Debian's opencv-data puts the cascades (Debian's cv2 has no cv2.data)
SYSTEM_CASCADE_DIRS = ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades")


def find_cascade() -> Path | None:
    """The frontal-face cascade: the OpenCV wheel's own, else the system's."""
    data = getattr(cv2, "data", None)
    dirs = ([data.haarcascades] if data is not None else []) + list(SYSTEM_CASCADE_DIRS)
    for d in dirs:
        path = Path(d) / CASCADE
        if path.is_file():
            return path
    return None


def missing_cascade_help() -> str:
    if cv2.__version__.split(".")[0] >= "5":
        return (f"OpenCV {cv2.__version__} no longer ships the Haar cascades: install "
                "'opencv-python-headless>=4.10,<5', or use --detector yunet")
    return (f"OpenCV {cv2.__version__} has no {CASCADE}, and neither has {' nor '.join(SYSTEM_CASCADE_DIRS)}: "
            "on Debian or Raspberry Pi OS run 'sudo apt install opencv-data', or use --detector yunet")


class Haar:
    name = "haar"
    precropped = False
    model_path: Path | None = None      # the cascade file, set when loaded

    def __init__(self, options: DetectOptions | None = None, max_side: int = MAX_SIDE):
        self.options = options or DetectOptions()
        self.max_side = max_side
        path = find_cascade()
        if path is None or not hasattr(cv2, "CascadeClassifier"):
            raise DetectorError(f"the Haar face cascade is not available: {missing_cascade_help()}")
        self.model_path = path
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
