"""YuNet, the OpenCV Zoo face detector: the file shipped in the package, or another version the user gives.

Two engines read the same file. On OpenCV 4.8 and newer, ``cv2.FaceDetectorYN``. Older OpenCV (Debian
bookworm's python3-opencv 4.6, what a 32-bit Raspberry Pi OS user gets) reads the graph with ``cv2.dnn``
but its FaceDetectorYN only understands the 2022 file's three outputs; there ``_DnnYuNet`` runs the graph
with cv2.dnn and decodes the twelve per-stride outputs the way FaceDetectorYN 4.8+ does (same padding,
scores, boxes and NMS), so both engines give the same faces.

Detection runs on a copy shrunk as far as the smallest wanted face allows (YuNet still finds faces of
about ``MIN_FACE_PX`` pixels) and at least to ``MAX_SIDE`` on the long side; boxes are mapped back.
On the test scenes this keeps all 18 labelled faces while a 640x480 photo is searched at 320x240.
YuNet's working memory grows with the pixels it searches (about BYTES_PER_PIXEL each, measured with
``bench/decode_memory.py``), so the copy is also kept within the decode budget: under a 1 GiB MemoryMax
a photo is searched at no more than 3.6 megapixels, and only faces smaller than about 24 pixels in a
photo of over 15 megapixels can be missed for it.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgeemo.imageio import decode_budget, to_bgr

from . import DetectOptions, DetectorError, Face, clip_faces

MAX_SIDE = 320
FACEDETECTORYN_FROM = (4, 8)    # the first OpenCV whose FaceDetectorYN reads the 2023+ files (12 outputs)
ENGINES = ("facedetectoryn", "dnn")
MIN_FACE_PX = 12
BYTES_PER_PIXEL = 72
COARSE_SIDE = 640


class YuNet:
    name = "yunet"
    precropped = False

    def __init__(self, model_path: str | Path, options: DetectOptions | None = None, max_side: int = MAX_SIDE,
                 engine: str | None = None):
        self.options = options or DetectOptions()
        self.model_path = Path(model_path)
        self.max_side = max_side
        self.engine = engine or default_engine()
        if self.engine not in ENGINES:
            raise DetectorError(f"unknown YuNet engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        try:
            if self.engine == "facedetectoryn":
                self._det = cv2.FaceDetectorYN.create(str(self.model_path), "", (320, 320),
                                                      self.options.score_threshold, NMS_THRESHOLD, TOP_K)
            else:
                self._det = _DnnYuNet(self.model_path, self.options.score_threshold)
        except cv2.error as exc:
            raise DetectorError(f"{self.model_path}: not a usable YuNet ONNX model for OpenCV {cv2.__version__} "
                                f"({exc.msg.strip()}); use the file shipped with edgeemo, or --detector haar"
                                ) from exc
        self._size = None

    def detect(self, image) -> list[Face]:
        image = to_bgr(image)
        h, w = image.shape[:2]
        fine = min(1.0, max(self.max_side / max(h, w), MIN_FACE_PX / max(self.options.min_face, 1)),
                   (decode_budget() / BYTES_PER_PIXEL / (h * w)) ** 0.5)
        faces = self._search(image, fine)
        # YuNet finds faces up to a few hundred pixels; a face filling a large photo searched at the
        # fine scale is missed, so such photos are searched once more at COARSE_SIDE (cheap) and merged.
        coarse = min(1.0, COARSE_SIDE / max(h, w))
        if coarse < fine / 1.5:
            faces = _merge(faces + self._search(image, coarse))
        return clip_faces(faces, w, h, self.options)

    def _search(self, image, scale: float) -> list[Face]:
        h, w = image.shape[:2]
        small = image if scale >= 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                       interpolation=cv2.INTER_AREA)
        size = (small.shape[1], small.shape[0])
        if size != self._size:
            self._det.setInputSize(size)
            self._size = size
        try:
            _, found = self._det.detect(np.ascontiguousarray(small))
        except cv2.error as exc:
            raise DetectorError(f"{self.model_path}: YuNet failed on OpenCV {cv2.__version__} "
                                f"({exc.msg.strip()}); use the file shipped with edgeemo, or --detector haar"
                                ) from exc
        inv = 1.0 / scale
        faces = []
        for row in (found if found is not None else []):
            x, y, fw, fh = (float(v) * inv for v in row[:4])
            faces.append(Face(int(round(x)), int(round(y)), int(round(fw)), int(round(fh)), float(row[-1])))
        return faces


def default_engine() -> str:
    """FaceDetectorYN where this OpenCV's reads the 2023+ files, the cv2.dnn decoder before that."""
    if not hasattr(cv2, "FaceDetectorYN") or opencv_version() < FACEDETECTORYN_FROM:
        return "dnn"
    return "facedetectoryn"


def opencv_version() -> tuple[int, int]:
    parts = cv2.__version__.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


NMS_THRESHOLD = 0.3
TOP_K = 5000
STRIDES = (8, 16, 32)


class _DnnYuNet:
    """FaceDetectorYN's interface (setInputSize, detect -> (1, N x 15 array)) on plain cv2.dnn.

    Rows are x, y, w, h, five landmarks (x, y), score, in the input's pixels, best first."""

    def __init__(self, model_path: Path, score_threshold: float):
        self._net = cv2.dnn.readNetFromONNX(str(model_path))
        self._names = [f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES]
        self.score_threshold = score_threshold
        self._size = (320, 320)

    def setInputSize(self, size) -> None:  # noqa: N802 (FaceDetectorYN's name)
        self._size = (int(size[0]), int(size[1]))

    def detect(self, image):
        w, h = self._size
        pad_w, pad_h = (-(-w // STRIDES[-1]) * STRIDES[-1], -(-h // STRIDES[-1]) * STRIDES[-1])
        padded = cv2.copyMakeBorder(image, 0, pad_h - h, 0, pad_w - w, cv2.BORDER_CONSTANT, value=0)
        self._net.setInput(cv2.dnn.blobFromImage(padded))
        outs = dict(zip(self._names, self._net.forward(self._names)))
        rows = []
        for s in STRIDES:
            cols, n = pad_w // s, (pad_w // s) * (pad_h // s)
            cls = np.clip(outs[f"cls_{s}"].reshape(n), 0.0, 1.0)
            obj = np.clip(outs[f"obj_{s}"].reshape(n), 0.0, 1.0)
            score = np.sqrt(cls * obj)
            keep = np.nonzero(score >= self.score_threshold)[0]
            if not keep.size:
                continue
            box = outs[f"bbox_{s}"].reshape(n, 4)[keep]
            kps = outs[f"kps_{s}"].reshape(n, 10)[keep]
            c, r = (keep % cols).astype(np.float32), (keep // cols).astype(np.float32)
            bw, bh = np.exp(box[:, 2]) * s, np.exp(box[:, 3]) * s
            x1, y1 = (c + box[:, 0]) * s - bw / 2, (r + box[:, 1]) * s - bh / 2
            marks = np.empty_like(kps)
            marks[:, 0::2] = (kps[:, 0::2] + c[:, None]) * s
            marks[:, 1::2] = (kps[:, 1::2] + r[:, None]) * s
            rows.append(np.column_stack([x1, y1, bw, bh, marks, score[keep]]).astype(np.float32))
        if not rows:
            return 1, None
        faces = np.concatenate(rows)
        # FaceDetectorYN runs NMS on integer boxes
        boxes = [[int(x), int(y), int(bw), int(bh)] for x, y, bw, bh in faces[:, :4]]
        keep = cv2.dnn.NMSBoxes(boxes, faces[:, 14].tolist(), self.score_threshold, NMS_THRESHOLD, top_k=TOP_K)
        return 1, faces[np.asarray(keep, dtype=int).reshape(-1)]


def _iou(a: Face, b: Face) -> float:
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    return inter / float(a.w * a.h + b.w * b.h - inter) if inter else 0.0


def _merge(faces: list[Face], overlap: float = 0.3) -> list[Face]:
    """One box per face from two searches: the more confident of boxes that overlap."""
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: f.score, reverse=True):
        if all(_iou(f, k) < overlap for k in kept):
            kept.append(f)
    return kept
