"""Face detection: one small interface (``FaceDetector``), several backends.

``make_detector(name, ...)`` returns a ``FaceDetector``: ``detect(image) -> list[Face]``, largest first.
Backends: ``yunet`` (cv2.FaceDetectorYN with a user-supplied ONNX file), ``haar`` (OpenCV's bundled
frontal-face cascade), ``none`` (the whole picture is one face, for pre-cropped data) and ``auto``
(YuNet when its file can be found, Haar otherwise).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import EdgeemoError
from ..folders import expand_user

log = logging.getLogger("edgeemo")

DETECTORS = ("auto", "yunet", "haar", "none")      # "auto": yunet if its model file is found, else haar
YUNET_ENV = "EDGEEMO_YUNET_MODEL"
# YuNet ships inside the package (edgeemo/models/, MIT licence in LICENSE-yunet.txt beside it; from the OpenCV
# Zoo, https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet), so that a plain
# `pip install` detects with it. A file in one of the places before it (another version) wins.
SHIPPED_YUNET = Path(__file__).resolve().parent.parent / "models" / "face_detection_yunet_2026may.onnx"
YUNET_SEARCH = (
    "/etc/edgeemo/face_detection_yunet.onnx",
    "/opt/edgeemo/models/face_detection_yunet.onnx",
    "~/.local/share/edgeemo/face_detection_yunet.onnx",
    str(SHIPPED_YUNET),
)
YUNET_HELP = ("get face_detection_yunet_2023mar.onnx (MIT) from the OpenCV Zoo, "
              "https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet, and pass "
              f"--detector-model FILE or set {YUNET_ENV}")


class DetectorError(EdgeemoError, RuntimeError):
    """A detector cannot be set up: the message says why and what to do."""


@dataclass(frozen=True)
class Face:
    x: int
    y: int
    w: int
    h: int
    score: float = 1.0

    @property
    def xywh(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


class FaceDetector(Protocol):
    """What every backend provides. A new detector is a class with these members, registered in BACKENDS."""

    name: str                   # as given to --detector
    precropped: bool            # True: the picture is itself the face (its one box is the whole picture)
    model_path: Path | None     # the model file it loaded, if any (shown to the user)

    def detect(self, image) -> list["Face"]:
        """Faces in a uint8 gray or BGR picture, in its pixel coordinates, largest first."""
        ...


# name -> (module, class), imported only when chosen ("auto" picks yunet or haar)
BACKENDS = {"yunet": (".yunet", "YuNet"), "haar": (".haar", "Haar"), "none": (".whole", "WholeImage")}


def _backend(name: str):
    import importlib
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module, __name__), cls)


@dataclass(frozen=True)
class DetectOptions:
    min_face: int = 24          # smallest face side, in pixels of the original image
    max_faces: int = 50
    score_threshold: float = 0.6


def find_yunet_model(explicit: str | os.PathLike | None = None) -> Path | None:
    """The YuNet ONNX file: the explicit path, else $EDGEEMO_YUNET_MODEL, else the standard places, the last of
    which is the file shipped in the package."""
    if explicit:
        return expand_user(explicit)
    env = os.environ.get(YUNET_ENV)
    if env:
        return expand_user(env)
    for cand in YUNET_SEARCH:
        p = expand_user(cand)
        if p.is_file():
            return p
    return None


def make_detector(name: str = "auto", model_path=None, options: DetectOptions | None = None) -> FaceDetector:
    opts = options or DetectOptions()
    if name not in DETECTORS:
        raise DetectorError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
    if name == "none":
        return _backend("none")()
    if name in ("auto", "yunet"):
        path = find_yunet_model(model_path)
        if path is not None and path.is_file():
            return _backend("yunet")(path, opts)
        if name == "yunet" or model_path:
            where = f"{path}: no such file" if path else "no YuNet model file given"
            raise DetectorError(f"YuNet detector: {where}; {YUNET_HELP}")
        log.info("detector: YuNet model not found, using the Haar cascade (%s)", YUNET_HELP)
    return _backend("haar")(opts)


def clip_faces(faces: list[Face], width: int, height: int, opts: DetectOptions) -> list[Face]:
    """Keep faces inside the image and above the minimum size; largest first, at most max_faces."""
    out = []
    for f in faces:
        x0, y0 = max(0, f.x), max(0, f.y)
        x1, y1 = min(width, f.x + f.w), min(height, f.y + f.h)
        if x1 - x0 >= max(1, opts.min_face) and y1 - y0 >= max(1, opts.min_face):
            out.append(Face(x0, y0, x1 - x0, y1 - y0, f.score))
    out.sort(key=lambda f: f.w * f.h, reverse=True)
    return out[: opts.max_faces]


__all__ = ["BACKENDS", "DETECTORS", "DetectOptions", "DetectorError", "Face", "FaceDetector", "find_yunet_model",
           "make_detector"]
