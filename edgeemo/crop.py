"""Crop and normalise: turn a detected face box into the model's input picture.

The box is made square around its centre, enlarged by the model's margin, padded with edge pixels where it
leaves the image, converted to gray (or kept in colour for 3-channel models) and resized with INTER_AREA.
Training (edgeemo_convert) uses these same functions, so what is trained is what runs on the device.
"""
from __future__ import annotations

import cv2
import numpy as np


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 gray from uint8 gray or BGR."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def square_box(box, margin: float) -> tuple[int, int, int]:
    """(x, y, w, h) -> (x0, y0, side): a square centred on the box, each side enlarged by ``margin``."""
    x, y, w, h = (float(v) for v in box[:4])
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    side_i = max(1, int(round(side)))
    return int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), side_i


def crop_face(image: np.ndarray, box, size: int, margin: float = 0.0, channels: int = 1,
              blur: dict | None = None) -> np.ndarray:
    """Cut ``box`` (x, y, w, h) out of ``image`` as a ``size`` x ``size`` uint8 picture.

    Returns shape (size, size) for ``channels == 1`` and (size, size, 3) RGB for ``channels == 3``.
    ``blur`` (from the model's metadata, e.g. ``{"sigma": 3.2, "at": 48}``): the face is first resized to
    ``at`` x ``at`` pixels and Gaussian-blurred with ``sigma``, then resized to ``size``; this matches
    faces to a model trained on blurred pictures.
    """
    src = to_gray(image) if channels == 1 else _to_bgr(image)
    h_img, w_img = src.shape[:2]
    x0, y0, side = square_box(box, margin)
    x1, y1 = x0 + side, y0 + side
    pad = max(0, -x0, -y0, x1 - w_img, y1 - h_img)
    if pad:
        src = cv2.copyMakeBorder(src, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    face = src[y0:y1, x0:x1]
    if blur and float(blur.get("sigma", 0)) > 0:
        at = int(blur.get("at", size))
        face = _resize(face, at)
        face = cv2.GaussianBlur(face, (0, 0), float(blur["sigma"]), borderType=cv2.BORDER_REPLICATE)
    face = _resize(face, size)
    if channels == 3:
        face = cv2.cvtColor(face, cv2.COLOR_BGR2RGB)
    return face


def whole_image(image: np.ndarray, size: int, channels: int = 1, blur: dict | None = None) -> np.ndarray:
    """A pre-cropped face (FER2013-style): the whole picture, squashed to the model input if not square."""
    h, w = image.shape[:2]
    return crop_face(cv2.resize(image, (max(h, w), max(h, w))) if h != w else image,
                     (0, 0, max(h, w), max(h, w)), size, 0.0, channels, blur)


def _resize(face: np.ndarray, size: int) -> np.ndarray:
    if face.shape[0] == size and face.shape[1] == size:
        return face
    interp = cv2.INTER_AREA if face.shape[0] >= size else cv2.INTER_LINEAR
    return cv2.resize(face, (size, size), interpolation=interp)


def _to_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    return image
