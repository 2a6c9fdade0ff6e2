"""Vectorised training augmentation on uint8 faces held in memory (numpy + OpenCV, no TensorFlow).

Each face is cut from its source picture by one affine warp: a random square of ``scale`` times the
source side (so a 48x48 FER2013 face gives 36-48 px crops at the defaults), shifted, rotated and resized
to the model's input in one step; then a horizontal flip, brightness and contrast, and random erasing.
The same parameters drawn from a seeded generator give the same batch, so a resumed run is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    out_size: int = 40
    scale: tuple[float, float] = (0.75, 1.0)     # crop side / source side
    shift: float = 0.08                          # max centre shift, fraction of the source side
    rotate_deg: float = 10.0
    flip: bool = True
    brightness: float = 0.12                     # +- fraction of full scale
    contrast: tuple[float, float] = (0.75, 1.25)
    erase_p: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.2)


def eval_view(x: np.ndarray, out_size: int) -> np.ndarray:
    """The test-time view: the whole source face resized to ``out_size`` (as the device's crop does)."""
    if x.shape[1] == out_size:
        return x
    interp = cv2.INTER_AREA if x.shape[1] >= out_size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (out_size, out_size), interpolation=interp).reshape(out_size, out_size, -1)
                     for f in x])


def batch(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Augmented float32 batch in [0, 1], shape (N, out, out, C), from uint8 faces (N, S, S, C)."""
    n, src, _, ch = x.shape
    out = cfg.out_size
    side = src * rng.uniform(*cfg.scale, n)
    angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg, n)
    shift = rng.uniform(-cfg.shift, cfg.shift, (n, 2)) * src
    res = np.empty((n, out, out, ch), np.uint8)
    c = (src - 1) / 2.0
    for i in range(n):
        m = cv2.getRotationMatrix2D((c, c), float(angle[i]), out / side[i])
        # move the (shifted) source centre to the output centre
        cx, cy = c + shift[i, 0], c + shift[i, 1]
        m[:, 2] += (out - 1) / 2.0 - (m[:, 0] * cx + m[:, 1] * cy + m[:, 2])
        res[i] = cv2.warpAffine(x[i], m, (out, out), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE).reshape(out, out, ch)
    f = res.astype(np.float32) * (1.0 / 255.0)
    if cfg.flip:
        flip = rng.random(n) < 0.5
        f[flip] = f[flip, :, ::-1]
    mean = f.mean(axis=(1, 2, 3), keepdims=True)
    k = rng.uniform(*cfg.contrast, (n, 1, 1, 1)).astype(np.float32)
    b = rng.uniform(-cfg.brightness, cfg.brightness, (n, 1, 1, 1)).astype(np.float32)
    f = np.clip((f - mean) * k + mean + b, 0.0, 1.0)
    if cfg.erase_p > 0:
        for i in np.flatnonzero(rng.random(n) < cfg.erase_p):
            area = rng.uniform(*cfg.erase_area) * out * out
            aspect = np.exp(rng.uniform(np.log(0.3), np.log(3.3)))
            h = int(min(out, round(np.sqrt(area * aspect))))
            w = int(min(out, round(np.sqrt(area / aspect))))
            y0, x0 = rng.integers(0, out - h + 1), rng.integers(0, out - w + 1)
            f[i, y0:y0 + h, x0:x0 + w] = rng.random((h, w, ch), dtype=np.float32)
    return f
