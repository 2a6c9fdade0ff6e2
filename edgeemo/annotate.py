"""Copies of images with face boxes and labels drawn, for `classify --annotate DIR`; ``blur_faces`` makes the
faces in a picture unrecognisable (saved camera frames, annotated copies with --blur-faces)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .imageio import to_bgr

_COLORS = {"angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (40, 200, 240),
           "sad": (200, 120, 40), "surprise": (0, 140, 255), "neutral": (180, 180, 180)}


def blur_faces(pixels: np.ndarray, faces: list[dict], scale: float = 1.0) -> np.ndarray:
    """A copy of ``pixels`` with every face box (enlarged by a quarter) pixelated to 4x4 blocks and blurred:
    not recoverable from the saved picture, still showing where a face was."""
    img = to_bgr(pixels).copy()
    hgt, wid = img.shape[:2]
    for f in faces:
        x, y, w, h = (v * scale for v in f["box"])
        x0, y0 = max(0, int(x - w / 8)), max(0, int(y - h / 8))
        x1, y1 = min(wid, int(x + w * 9 / 8)), min(hgt, int(y + h * 9 / 8))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        small = cv2.resize(img[y0:y1, x0:x1], (4, 4), interpolation=cv2.INTER_AREA)
        block = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
        k = max(3, (min(x1 - x0, y1 - y0) // 2) | 1)
        img[y0:y1, x0:x1] = cv2.GaussianBlur(block, (k, k), 0)
    return img


def draw(pixels: np.ndarray, faces: list[dict], scale: float = 1.0) -> np.ndarray:
    """``scale``: pixels of ``pixels`` per pixel of the boxes (0.5 for a JPEG decoded at half size)."""
    img = to_bgr(pixels)
    img = img.copy() if img is pixels else img          # never draw on the caller's picture
    thick = max(1, round(max(img.shape[:2]) / 400))
    for f in faces:
        x, y, w, h = (int(round(v * scale)) for v in f["box"])
        color = _COLORS.get(f["label"], (0, 255, 0))
        cv2.rectangle(img, (x, y), (x + w, y + h), color, thick)
        text = f"{f['label']} {f['confidence']:.2f}"
        scale = max(0.4, w / 160)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y - 4 if y - th - 4 > 0 else y + h + th + 4
        cv2.rectangle(img, (x, ty - th - 2), (x + tw + 2, ty + base - 2), color, -1)
        cv2.putText(img, text, (x + 1, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return img


def annotated_path(out_dir: Path, src: Path, root: Path | None) -> Path:
    """Where the annotated copy of ``src`` goes: its path under ``root`` mirrored in ``out_dir``, as .jpg;
    an existing file is never overwritten (a counter is added)."""
    try:
        rel = src.relative_to(root) if root else Path(src.name)
    except ValueError:
        rel = Path(src.name)
    target = (out_dir / rel).with_suffix(".jpg")
    k = 1
    while target.exists():
        target = (out_dir / rel).with_name(f"{rel.stem}.{k}.jpg")
        k += 1
    return target


def save(pixels: np.ndarray, faces: list[dict], target: Path, scale: float = 1.0, blur: bool = False) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if blur:
        pixels = blur_faces(pixels, faces, scale)
    ok, buf = cv2.imencode(".jpg", draw(pixels, faces, scale), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise OSError(f"{target}: could not encode the annotated image")
    target.write_bytes(buf.tobytes())
