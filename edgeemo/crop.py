"""Crop and normalise: turn a detected face box into the model's input picture.

The box is made square around its centre, enlarged by the model's margin, padded with edge pixels where it
leaves the image, converted to gray (or kept in colour for 3-channel models) and resized with INTER_AREA.
Training (edgeemo_convert) uses these same functions, so what is trained is what runs on the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .imageio import to_bgr, to_gray


@dataclass(frozen=True)
class FaceGeometry:
    """What a model expects of a face: its input side and channels, the margin added around a detector box,
    the central ``fraction`` of that frame (or of a pre-cropped picture) that it sees, an optional input
    blur, and ``views``: further central fractions of the frame whose answers the runtime averages in for
    faces the first answer is unsure of. ``edgeemo.runtime.Model.geometry`` reads it from the model's
    metadata."""
    size: int
    channels: int = 1
    margin: float = 0.0
    blur: dict | None = None
    fraction: float = 1.0
    views: tuple[float, ...] = ()


def model_inputs(pixels: np.ndarray, boxes, geometry: FaceGeometry) -> np.ndarray:
    """The model's input faces, uint8 (N, size, size, channels), from a picture and its face boxes.

    ``boxes`` None: the picture is itself one face (pre-cropped, ``--detector none``), used whole. The device
    (``edgeemo.pipeline``) and training, conversion and evaluation (``edgeemo_convert``) all come through here,
    so what is evaluated is what the device runs."""
    return _cut(pixels, boxes, geometry, (geometry.fraction,))[:, 0]


def model_views(pixels: np.ndarray, boxes, geometry: FaceGeometry) -> np.ndarray:
    """uint8 (N, 1 + len(geometry.views), size, size, channels): each face at the model's own fraction of
    its frame, then at each of ``geometry.views``; ``edgeemo.runtime.Model.predict`` takes it as it is."""
    return _cut(pixels, boxes, geometry, (geometry.fraction, *geometry.views))


def further_views(pixels: np.ndarray, boxes, geometry: FaceGeometry) -> np.ndarray:
    """uint8 (N, len(geometry.views), size, size, channels): each face at each of ``geometry.views`` only,
    for ``Model.predict(faces, more_views=...)`` to cut them just for the faces it is unsure of."""
    return _cut(pixels, boxes, geometry, geometry.views)


def _cut(pixels: np.ndarray, boxes, g: FaceGeometry, fractions) -> np.ndarray:
    n_faces = 1 if boxes is None else len(boxes)
    out = np.empty((n_faces, len(fractions), g.size, g.size, g.channels), np.uint8)
    for v, fraction in enumerate(fractions):
        if boxes is None:
            out[0, v] = whole_image(pixels, g.size, g.channels, g.blur, fraction).reshape(out.shape[2:])
            continue
        # a central fraction f of the frame enlarged by margin m: one square of side (1 + 2m) f
        margin = ((1.0 + 2.0 * g.margin) * fraction - 1.0) / 2.0
        for i, b in enumerate(boxes):
            face = crop_face(pixels, getattr(b, "xywh", b), g.size, margin, g.channels, g.blur)
            out[i, v] = face.reshape(out.shape[2:])
    return out


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
    h_img, w_img = image.shape[:2]
    x0, y0, side = square_box(box, margin)
    x1, y1 = x0 + side, y0 + side
    # Cut first, then convert and pad the cut only: converting or padding the whole photo for every face
    # cost more than the rest of the crop. Replicating the cut's edge gives the same pixels as replicating
    # the photo's, because the cut reaches the photo's edge wherever padding is needed.
    cx0, cx1, left, right = _span(x0, x1, w_img)
    cy0, cy1, top, bottom = _span(y0, y1, h_img)
    part = image[cy0:cy1, cx0:cx1]
    face = to_gray(part) if channels == 1 else to_bgr(part)
    if top or bottom or left or right:
        face = cv2.copyMakeBorder(face, top, bottom, left, right, cv2.BORDER_REPLICATE)
    if blur and float(blur.get("sigma", 0)) > 0:
        at = int(blur.get("at", size))
        face = _resize(face, at)
        k = _gaussian_kernel(float(blur["sigma"]))
        face = cv2.sepFilter2D(face, -1, k, k, borderType=cv2.BORDER_REPLICATE)
    face = _resize(face, size)
    if channels == 3:
        face = cv2.cvtColor(face, cv2.COLOR_BGR2RGB)
    return face


def whole_image(image: np.ndarray, size: int, channels: int = 1, blur: dict | None = None,
                fraction: float = 1.0) -> np.ndarray:
    """A pre-cropped face (FER2013-style): the whole picture (squashed square if it is not), or its central
    ``fraction``, resized to the model input."""
    h, w = image.shape[:2]
    return crop_face(cv2.resize(image, (max(h, w), max(h, w))) if h != w else image,
                     (0, 0, max(h, w), max(h, w)), size, (fraction - 1.0) / 2.0, channels, blur)


@lru_cache(maxsize=8)
def _gaussian_kernel(sigma: float) -> np.ndarray:
    """The 1-D Gaussian that cv2.GaussianBlur picks for uint8 pictures (width 6 sigma + 1, odd). Filtering
    with it through sepFilter2D differs from GaussianBlur's bit-exact integer path by at most one grey
    level, and costs a sixth of the time (25 against 160 us on a 48x48 face)."""
    return cv2.getGaussianKernel(int(round(sigma * 6 + 1)) | 1, sigma, cv2.CV_32F)


def _span(a0: int, a1: int, n: int) -> tuple[int, int, int, int]:
    """The part of [a0, a1) inside [0, n), as (start, stop, pad before, pad after); at least one pixel, the
    nearest edge one, when the range misses [0, n) altogether."""
    if a0 >= n:
        return n - 1, n, 0, a1 - a0 - 1
    if a1 <= 0:
        return 0, 1, a1 - a0 - 1, 0
    c0, c1 = max(a0, 0), min(a1, n)
    return c0, c1, c0 - a0, a1 - c1


def _resize(face: np.ndarray, size: int) -> np.ndarray:
    if face.shape[0] == size and face.shape[1] == size:
        return face
    interp = cv2.INTER_AREA if face.shape[0] >= size else cv2.INTER_LINEAR
    return cv2.resize(face, (size, size), interpolation=interp)
