"""The ``none`` detector: the whole picture is one face (pre-cropped data such as FER2013)."""
from __future__ import annotations

from . import Face


class WholeImage:
    name = "none"
    precropped = True
    model_path = None

    def detect(self, image) -> list[Face]:
        h, w = image.shape[:2]
        return [Face(0, 0, w, h, 1.0)]
