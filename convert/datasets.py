"""Readers for labelled face data sets: FER2013 (folders or CSV), JAFFE, CK+, and any class-folder tree.

Every reader returns a :class:`FaceSet`: gray uint8 images (any size), canonical label indices, the
subject of each image where the data set knows it, the split the data set assigns (FER2013), and the
source path. Labels are mapped to the 7 canonical names; blank images are skipped and byte-identical
duplicates removed, and the counts are kept in ``FaceSet.notes`` so the caller can say how many.

No TensorFlow here: the readers use OpenCV and numpy only, so tests and tools can use them cheaply.
"""
from __future__ import annotations

import csv
import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgeemo.errors import EdgeemoError
from edgeemo.labels import LABELS

log = logging.getLogger("edgeemo.convert")

DATASETS = ("fer2013", "jaffe", "ckplus", "folder")

# Names seen in public data sets, mapped to the canonical 7 (edgeemo.labels.LABELS).
_ALIASES = {
    "angry": "angry", "anger": "angry", "an": "angry", "ang": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust", "di": "disgust", "dis": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear", "fe": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy", "ha": "happy", "hap": "happy",
    "sad": "sad", "sadness": "sad", "sa": "sad",
    "surprise": "surprise", "surprised": "surprise", "su": "surprise", "sur": "surprise",
    "neutral": "neutral", "ne": "neutral", "neu": "neutral", "calm": "neutral",
}
# FER2013 CSV codes: 0..6 = angry, disgust, fear, happy, sad, surprise, neutral (same as LABELS).
_FER_CSV_USAGE = {"training": "train", "publictest": "val", "privatetest": "test"}
_FER_FOLDER_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val",
                      "validation": "val", "publictest": "val", "test": "test", "privatetest": "test"}
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm"}
_JAFFE_NAME = re.compile(r"^(?P<subject>[A-Za-z]{2})\.(?P<expr>[A-Za-z]{2})\d*\.(?P<id>\d+)\.tiff?$", re.I)
_CKPLUS_NAME = re.compile(r"^(?P<subject>S\d+)_(?P<seq>\d+)_(?P<frame>\d+)", re.I)


class DatasetError(EdgeemoError, ValueError):
    """A data set could not be read: the message names the path and what to do."""


def canonical_label(name: str) -> str | None:
    """Map a class name from any supported data set to a canonical label, or None if it has none."""
    return _ALIASES.get(name.strip().lower())


@dataclass
class FaceSet:
    images: list[np.ndarray]
    labels: np.ndarray                    # int64 indices into LABELS
    subjects: list[str | None]
    splits: list[str | None]
    paths: list[str]
    name: str = ""
    notes: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> "FaceSet":
        idx = np.asarray(idx, dtype=np.int64)
        return FaceSet([self.images[i] for i in idx], self.labels[idx],
                       [self.subjects[i] for i in idx], [self.splits[i] for i in idx],
                       [self.paths[i] for i in idx], self.name, dict(self.notes))

    def split(self, name: str) -> "FaceSet":
        return self.subset([i for i, s in enumerate(self.splits) if s == name])

    def has_subjects(self) -> bool:
        return len(self) > 0 and all(s is not None for s in self.subjects)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(LABELS))
        return {lab: int(c) for lab, c in zip(LABELS, counts)}


class _Builder:
    """Collects samples, skipping blank images and byte-identical duplicates."""

    def __init__(self, name: str):
        self.name = name
        self.images, self.labels, self.subjects, self.splits, self.paths = [], [], [], [], []
        self._seen: dict[tuple[str | None, bytes], int] = {}
        self._conflicts: set[int] = set()
        self.blank = self.duplicates = self.unreadable = 0
        self.dropped_classes: dict[str, int] = {}

    def drop_class(self, name: str, n: int = 1) -> None:
        self.dropped_classes[name] = self.dropped_classes.get(name, 0) + n

    def add(self, img, raw: bytes, label: str, subject, split, path: str) -> None:
        if img is None:
            self.unreadable += 1
            log.warning("skipping %s: not a readable image", path)
            return
        if img.size == 0 or int(img.max()) - int(img.min()) < 4:
            self.blank += 1
            return
        key = (split, hashlib.sha256(raw).digest())
        lab = LABELS.index(label)
        if key in self._seen:
            self.duplicates += 1
            first = self._seen[key]
            if self.labels[first] != lab:
                self._conflicts.add(first)
            return
        self._seen[key] = len(self.images)
        self.images.append(img)
        self.labels.append(lab)
        self.subjects.append(subject)
        self.splits.append(split)
        self.paths.append(path)

    def build(self) -> FaceSet:
        keep = [i for i in range(len(self.images)) if i not in self._conflicts]
        # Byte-identical images across splits: drop the copy on the training side, so no face is
        # both trained on and evaluated.
        held_out = {k[1] for k, i in self._seen.items() if k[0] not in (None, "train")}
        by_index = {i: k for k, i in self._seen.items()}
        leaked = [i for i in keep if by_index[i][0] == "train" and by_index[i][1] in held_out]
        keep = [i for i in keep if i not in set(leaked)]
        notes = {"blank_skipped": self.blank, "duplicates_removed": self.duplicates,
                 "conflicting_labels_removed": len(self._conflicts),
                 "train_copies_of_eval_images_removed": len(leaked),
                 "unreadable_skipped": self.unreadable, "dropped_classes": dict(self.dropped_classes)}
        fs = FaceSet(self.images, np.asarray(self.labels, dtype=np.int64), self.subjects, self.splits,
                     self.paths, self.name, notes).subset(keep)
        fs.notes = notes
        for cls, n in self.dropped_classes.items():
            log.warning("%s: dropped %d images of class %r, which has no counterpart among %s",
                        self.name, n, cls, ", ".join(LABELS))
        log.info("%s: %d images; skipped %d blank, removed %d byte-identical duplicates, %d with "
                 "conflicting labels, %d training copies of evaluation images", self.name, len(fs),
                 self.blank, self.duplicates, len(self._conflicts), len(leaked))
        return fs


def _decode_gray(raw: bytes):
    """Decode bytes to gray uint8 (palette TIFFs included); None when OpenCV cannot decode them."""
    arr = np.frombuffer(raw, dtype=np.uint8)
    img = cv2.imdecode(arr, cv2.IMREAD_GRAYSCALE) if arr.size else None
    return img


def _image_files(folder: Path):
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _class_folders(root: Path, builder: _Builder, split, subject_of=None) -> int:
    n = 0
    for cls_dir in sorted(d for d in root.iterdir() if d.is_dir()):
        label = canonical_label(cls_dir.name)
        files = _image_files(cls_dir)
        if label is None:
            builder.drop_class(cls_dir.name, len(files))
            continue
        for p in files:
            raw = p.read_bytes()
            builder.add(_decode_gray(raw), raw, label, subject_of(p) if subject_of else None, split, str(p))
            n += 1
    return n


def load_folder(path: str | Path, name: str = "folder") -> FaceSet:
    """Any tree of class folders (``root/<class>/*.png``); class names mapped to the canonical 7."""
    root = _existing_dir(path)
    b = _Builder(name)
    if _class_folders(root, b, None) == 0:
        raise DatasetError(f"{root}: no images in class folders (expected {root}/<class>/<image>, "
                           f"classes such as {', '.join(LABELS)})")
    return b.build()


def load_fer2013(path: str | Path) -> FaceSet:
    """FER2013 as the image-folder layout (train/ val/ test/ of class folders) or the original CSV."""
    p = Path(path)
    if p.is_file():
        return load_fer2013_csv(p)
    root = _existing_dir(p)
    csvs = sorted(root.glob("*.csv"))
    split_dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower() in _FER_FOLDER_SPLITS]
    if not split_dirs and csvs:
        return load_fer2013_csv(csvs[0])
    b = _Builder("fer2013")
    if split_dirs:
        for d in split_dirs:
            _class_folders(d, b, _FER_FOLDER_SPLITS[d.name.lower()])
    elif canonical_label(next((d.name for d in root.iterdir() if d.is_dir()), "")) is not None:
        _class_folders(root, b, None)        # a single split given directly
    if not b.images and not b.blank:
        raise DatasetError(f"{root}: no FER2013 images found (expected train/<class>/*.jpg, val/..., "
                           f"or fer2013.csv with columns emotion,pixels,Usage)")
    return b.build()


def load_fer2013_csv(path: str | Path) -> FaceSet:
    p = Path(path)
    b = _Builder("fer2013")
    with open(p, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"emotion", "pixels"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{p}: not a FER2013 CSV, missing column(s) {', '.join(sorted(missing))} "
                               f"(expected emotion,pixels,Usage)")
        for row_no, row in enumerate(reader, start=2):
            try:
                code = int(row["emotion"])
                px = np.asarray(row["pixels"].split(), dtype=np.uint8)
                side = int(round(np.sqrt(px.size)))
                if code not in range(len(LABELS)) or side * side != px.size or side == 0:
                    raise ValueError
            except (ValueError, TypeError):
                log.warning("%s line %d: bad emotion code or pixel list, skipped", p, row_no)
                b.unreadable += 1
                continue
            split = _FER_CSV_USAGE.get((row.get("Usage") or "").strip().lower())
            b.add(px.reshape(side, side), px.tobytes(), LABELS[code], None, split, f"{p}:{row_no}")
    return b.build()


def load_jaffe(path: str | Path) -> FaceSet:
    """JAFFE: flat TIFFs named SUBJECT.EXPRn.ID.tiff (``KA.AN1.39.tiff``)."""
    root = _existing_dir(path)
    b = _Builder("jaffe")
    names = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    matched = 0
    for p in names:
        m = _JAFFE_NAME.match(p.name)
        if not m:
            continue
        matched += 1
        label = canonical_label(m["expr"])
        if label is None:
            b.drop_class(m["expr"])
            continue
        raw = p.read_bytes()
        b.add(_decode_gray(raw), raw, label, m["subject"].upper(), None, str(p))
    if matched == 0:
        raise DatasetError(f"{root}: no JAFFE-named files (expected names like KA.AN1.39.tiff)")
    return b.build()


def load_ckplus(path: str | Path) -> FaceSet:
    """CK+ as class folders of frames named S005_001_00000011.png; the subject is S005."""
    root = _existing_dir(path)
    b = _Builder("ckplus")

    def subject(p: Path):
        m = _CKPLUS_NAME.match(p.name)
        return m["subject"].upper() if m else None

    if _class_folders(root, b, None, subject) == 0 and not b.dropped_classes:
        raise DatasetError(f"{root}: no CK+ images in class folders (expected anger/S005_001_00000011.png)")
    fs = b.build()
    unknown = sum(s is None for s in fs.subjects)
    if unknown:
        log.warning("ckplus: %d file names do not match S<subject>_<seq>_<frame>; their subject is unknown",
                    unknown)
    return fs


def load(path: str | Path, dataset: str) -> FaceSet:
    loaders = {"fer2013": load_fer2013, "jaffe": load_jaffe, "ckplus": load_ckplus, "folder": load_folder}
    if dataset not in loaders:
        raise DatasetError(f"unknown data set {dataset!r}; choose one of {', '.join(DATASETS)}")
    return loaders[dataset](path)


def _existing_dir(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: no such file or folder")
    if not p.is_dir():
        raise DatasetError(f"{p}: expected a folder")
    return p
