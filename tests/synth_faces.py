"""Tiny synthetic labelled-face data sets, written in each on-disk format edgeemo_convert reads.

The pictures are random textures (no real faces), distinct per file, with a class-dependent bright bar so
that a model has something to learn. Each writer returns what it wrote, so tests can check the reader
against it.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np

from edgeemo.labels import LABELS

JAFFE_CODES = {"AN": "angry", "DI": "disgust", "FE": "fear", "HA": "happy", "SA": "sad", "SU": "surprise",
               "NE": "neutral"}


def picture(rng, label: int, size: int = 48) -> np.ndarray:
    """A distinct gray uint8 picture; a bright horizontal bar at a height that depends on the label."""
    img = rng.integers(40, 160, (size, size), dtype=np.uint8)
    band = size // 8
    y0 = label * (size - band) // (len(LABELS) - 1)
    img[y0:y0 + band, :] = 230
    return img


def write_class_folders(root: Path, folder_names: dict[str, int], per_class: int, rng, size: int = 48,
                        ext: str = ".png", name=lambda cls, i: f"img_{i:03d}") -> dict[str, list[Path]]:
    """root/<folder>/<name>.png for each folder name (mapped to a label index for the picture)."""
    written = {}
    for folder, label in folder_names.items():
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        written[folder] = []
        for i in range(per_class):
            p = d / f"{name(folder, i)}{ext}"
            assert cv2.imwrite(str(p), picture(rng, label, size))
            written[folder].append(p)
    return written


def write_fer_folders(root: Path, per_class: int = 5, val_per_class: int = 2, seed: int = 0) -> dict:
    """FER2013 image-folder layout, train/ and val/, plus the data set's known flaws:
    one blank (all-black) image, one byte-identical duplicate with the same label, one pair of identical
    bytes under two labels (conflicting), and one validation image copied into train/."""
    rng = np.random.default_rng(seed)
    classes = {lab: i for i, lab in enumerate(LABELS)}
    train = write_class_folders(root / "train", classes, per_class, rng, ext=".jpg",
                                name=lambda c, i: f"Training_{c}_{i}")
    val = write_class_folders(root / "val", classes, val_per_class, rng, ext=".jpg",
                              name=lambda c, i: f"PublicTest_{c}_{i}")
    assert cv2.imwrite(str(root / "train" / "angry" / "Training_blank.jpg"), np.zeros((48, 48), np.uint8))
    shutil.copyfile(train["happy"][0], root / "train" / "happy" / "Training_dup_same_label.jpg")
    conflict = train["sad"][0]
    shutil.copyfile(conflict, root / "train" / "fear" / "Training_dup_other_label.jpg")
    leak = val["surprise"][0]
    shutil.copyfile(leak, root / "train" / "surprise" / "Training_copy_of_val.jpg")
    return {"root": root, "train_per_class": per_class, "val_per_class": val_per_class,
            "conflict_bytes": conflict.read_bytes(), "leak_bytes": leak.read_bytes()}


def write_fer_csv(path: Path, seed: int = 0) -> list[tuple[int, str, np.ndarray]]:
    """The original FER2013 CSV (emotion,pixels,Usage): 2 rows per class and usage, plus one exact
    duplicate row, one all-black row and one malformed row. Returns the (code, usage, pixels) kept."""
    rng = np.random.default_rng(seed)
    kept, rows = [], []
    for usage in ("Training", "PublicTest", "PrivateTest"):
        for code in range(len(LABELS)):
            for _ in range(2):
                px = picture(rng, code)
                kept.append((code, usage, px))
                rows.append([code, " ".join(map(str, px.ravel())), usage])
    rows.append(list(rows[0]))                                            # duplicate
    rows.append([3, " ".join(["0"] * 48 * 48), "Training"])              # blank
    rows.append([9, "1 2 3", "Training"])                                 # bad code and pixel count
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        w.writerows(rows)
    return kept


def write_palette_tiff(path: Path, index: np.ndarray) -> np.ndarray:
    """An 8-bit palette-mode TIFF whose palette inverts gray (index i shows as 255 - i); returns the
    gray picture it shows."""
    from PIL import Image
    im = Image.fromarray(index.astype(np.uint8), "P")
    im.putpalette([v for i in range(256) for v in (255 - i,) * 3])
    im.save(path)
    return (255 - index.astype(np.int64)).astype(np.uint8)


def write_jaffe(root: Path, subjects=("KA", "KM", "NA"), takes: int = 2, size: int = 64, seed: int = 0,
                palette: bool = True) -> dict[str, tuple[str, str]]:
    """Flat JAFFE-style TIFFs, SUBJECT.EXPRn.ID.tiff, every expression ``takes`` times per subject; the
    first file is a palette-mode TIFF (when PIL is there). Also a non-JAFFE file that must be ignored.
    Returns {file name: (subject, canonical label)}."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written, n = {}, 0
    for subj in subjects:
        for code, label in JAFFE_CODES.items():
            for take in range(1, takes + 1):
                n += 1
                name = f"{subj}.{code}{take}.{n}.tiff"
                img = picture(rng, LABELS.index(label), size)
                if palette and n == 1:
                    write_palette_tiff(root / name, img)
                else:
                    assert cv2.imwrite(str(root / name), img)
                written[name] = (subj, label)
    (root / "README.txt").write_text("not an image")
    return written


def write_ckplus(root: Path, subjects=("S005", "S010", "S011"), frames: int = 2, seed: int = 0) -> dict:
    """CK+ "48" layout: anger/S005_001_00000011.png ..., including a contempt/ folder (no canonical label)."""
    rng = np.random.default_rng(seed)
    folders = {"anger": 0, "disgust": 1, "fear": 2, "happy": 3, "sadness": 4, "surprise": 5, "contempt": 6}
    written = {}
    for seq, (folder, label) in enumerate(folders.items(), start=1):
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        for subj in subjects:
            for f in range(frames):
                p = d / f"{subj}_{seq:03d}_{f + 9:08d}.png"
                assert cv2.imwrite(str(p), picture(rng, label))
                written[p.name] = (subj, folder)
    return written
