"""Test videos made from the real group photos of ../shared/data/scenes with cv2.VideoWriter (MJPG in AVI,
which every OpenCV build writes), with the true face boxes of every frame: the photo's faces (found once by
YuNet on the still photo) moved with the camera's pan."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

SIZE = (640, 480)
FPS = 10.0


@dataclass
class Video:
    path: Path
    truth: list[list[tuple[int, tuple]]] = field(default_factory=list)   # per frame: (person, box)


def _faces(photo: np.ndarray) -> list[tuple]:
    from edgeemo.detect import SHIPPED_YUNET
    from edgeemo.detect.yunet import YuNet
    return [f.xywh for f in YuNet(SHIPPED_YUNET).detect(photo)]


def make(path: Path, photo: np.ndarray, frames: int, pan: int = 4, person_base: int = 0,
         hide: dict[int, range] | None = None, scale: float = 1.6, writer=None, zoom: float = 0.0) -> Video:
    """``frames`` frames of a 640x480 window panning ``pan`` pixels a frame across ``photo`` scaled by
    ``scale``, zooming in by ``zoom`` (a fraction) a frame about the window's centre; ``hide``: person ->
    frames where a grey patch hides that face."""
    big = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    if big.shape[0] < SIZE[1] or big.shape[1] < SIZE[0] + pan * frames:
        pad_w = max(0, SIZE[0] + pan * frames - big.shape[1])
        pad_h = max(0, SIZE[1] - big.shape[0])
        big = cv2.copyMakeBorder(big, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    faces = _faces(big)
    own = writer is None
    writer = writer or cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    video = Video(path)
    for i in range(frames):
        x0 = pan * i
        frame = np.ascontiguousarray(big[:SIZE[1], x0:x0 + SIZE[0]])
        for person, (x, y, w, h) in enumerate(faces):
            if (hide or {}).get(person) and i in hide[person]:
                cv2.rectangle(frame, (x - x0 - 4, y - 4), (x - x0 + w + 4, y + h + 4), (128, 128, 128), -1)
        z = 1.0 + zoom * i
        left, top = SIZE[0] / 2 * (1 - 1 / z), SIZE[1] / 2 * (1 - 1 / z)
        if zoom:
            m = np.float32([[z, 0, -left * z], [0, z, -top * z]])
            frame = cv2.warpAffine(frame, m, SIZE, flags=cv2.INTER_LINEAR)
        truth = []
        for person, (x, y, w, h) in enumerate(faces):
            if (hide or {}).get(person) and i in hide[person]:
                continue
            box = (round((x - x0 - left) * z), round((y - top) * z), round(w * z), round(h * z))
            if box[0] >= 0 and box[0] + box[2] <= SIZE[0] and box[1] >= 0 and box[1] + box[3] <= SIZE[1]:
                truth.append((person_base + person, box))
        writer.write(frame)
        video.truth.append(truth)
    if own:
        writer.release()
    return video


def id_switches(records: list[dict], video: Video) -> tuple[int, dict]:
    """Times a person's track id changed from one frame to the next where both frames matched the person to a
    face (IoU >= 0.5), and {person: set of ids}."""
    from edgeemo.track import iou
    ids: dict[int, list] = {}
    for rec, truth in zip(records, video.truth):
        for person, box in truth:
            best = max(rec.get("faces") or [], key=lambda f: iou(f["box"], box), default=None)
            if best is not None and iou(best["box"], box) >= 0.5:
                ids.setdefault(person, []).append(best["track"])
    switches = sum(sum(1 for a, b in zip(v, v[1:]) if a != b) for v in ids.values())
    return switches, {p: set(v) for p, v in ids.items()}
