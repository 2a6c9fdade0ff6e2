"""Turn a FaceSet into model-input arrays with the device's own detection and crop code, and split it."""
from __future__ import annotations

import logging

import numpy as np

from edgeemo import crop, imageio
from edgeemo.labels import LABELS

from .datasets import FaceSet

log = logging.getLogger("edgeemo.convert")

# Data sets whose pictures are whole photos (a face detector runs first); the rest are pre-cropped faces.
NEEDS_DETECTION = {"jaffe"}


def dataset_detector(dataset: str, detector: str = "auto", detector_model=None):
    """The face detector for a data set of whole photos (JAFFE), or None for pre-cropped faces."""
    if dataset not in NEEDS_DETECTION or detector == "none":
        return None
    from edgeemo.detect import make_detector
    return make_detector(detector, model_path=detector_model)


def to_inputs(fs: FaceSet, size: int, channels: int = 1, detector=None, margin: float = 0.0,
              blur: dict | None = None, fraction: float = 1.0, views: tuple[float, ...] = ()) -> np.ndarray:
    """uint8 array (N, size, size, channels) of faces; with ``views`` (further fractions of the face frame, a
    model's ``view_fractions``), (N, 1 + len(views), size, size, channels), as the device cuts them.

    ``blur`` is the model's input blur (see edgeemo.crop.crop_face), applied as on the device.

    With a detector (an ``edgeemo.detect`` backend), the largest face in each image is cropped with
    ``margin``, exactly as on the device; an image where no face is found is used whole and counted in
    ``fs.notes['no_face_used_whole']``.
    """
    geometry = crop.FaceGeometry(size, channels, margin, blur, fraction, tuple(views))
    out = np.empty((len(fs), 1 + len(views), size, size, channels), dtype=np.uint8)
    missed = 0
    for i, img in enumerate(fs.images):
        boxes = None
        if detector is not None:
            found = detector.detect(img)
            if found:
                boxes = [max(found, key=lambda b: b.w * b.h)]
            else:
                missed += 1
        out[i] = crop.model_views(img, boxes, geometry)[0]
    if detector is not None:
        fs.notes["detector"] = getattr(detector, "name", type(detector).__name__)
        fs.notes["no_face_used_whole"] = missed
        if missed:
            log.warning("%s: no face found in %d of %d images; those were used whole", fs.name, missed, len(fs))
    return out if views else out[:, 0]


def holdout_split(fs: FaceSet, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val). Uses the data set's own splits where it has them (FER2013 train/val);
    otherwise a stratified random split, or, where subjects are known, a split that keeps each person
    on one side only."""
    splits = set(fs.splits)
    if "train" in splits and ("val" in splits or "test" in splits):
        held = "val" if "val" in splits else "test"
        tr = np.array([i for i, s in enumerate(fs.splits) if s == "train"])
        va = np.array([i for i, s in enumerate(fs.splits) if s == held])
        return tr, va
    rng = np.random.default_rng(seed)
    if fs.has_subjects():
        people = np.array(sorted(set(fs.subjects)))
        rng.shuffle(people)
        n_val = max(1, int(round(len(people) * val_fraction)))
        val_people = set(people[:n_val])
        va = np.array([i for i, s in enumerate(fs.subjects) if s in val_people])
        tr = np.array([i for i, s in enumerate(fs.subjects) if s not in val_people])
        return tr, va
    return stratified_holdout(fs.labels, val_fraction, rng)


def stratified_holdout(labels: np.ndarray, fraction: float, rng) -> tuple[np.ndarray, np.ndarray]:
    tr, va = [], []
    for c in range(len(LABELS)):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        va.extend(idx[:k])
        tr.extend(idx[k:])
    return np.array(sorted(tr), dtype=np.int64), np.array(sorted(va), dtype=np.int64)


def stratified_count_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with exactly ``n_test`` test images, spread over the classes in proportion
    (largest remainders), drawn at random with ``seed``. Subjects are ignored: this is the random split of
    the original study, where the same people appear on both sides."""
    labels = np.asarray(labels)
    if not 0 < n_test < len(labels):
        raise ValueError(f"a test split of {n_test} images needs more than {n_test} images (have {len(labels)})")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * n_test / len(labels)
    take = np.floor(share).astype(int)
    for i in np.argsort(-(share - take), kind="stable")[: n_test - take.sum()]:
        take[i] += 1
    test = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(labels == c)
        test.extend(rng.choice(idx, k, replace=False))
    test = np.sort(np.array(test, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), test), test


def kfold(labels: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold: each class dealt round-robin over the folds after a seeded shuffle."""
    if k < 2:
        raise ValueError("--cv needs at least 2 folds")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        fold_of[idx] = np.arange(idx.size) % k
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def grouped_count_split(labels: np.ndarray, groups: list, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Like ``stratified_count_split`` (about ``n_test`` test images, spread over the classes in proportion),
    but whole groups go to one side: with groups = (person, expression), each person's takes of one
    expression are all in training or all in test, so no test image has a near-duplicate in training."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    keys = np.array([hash(g) for g in groups])
    test = []
    for c, n in zip(classes, counts):
        want = n * n_test / len(labels)
        members = np.flatnonzero(labels == c)
        uniq = list(dict.fromkeys(keys[members]))
        rng.shuffle(uniq)
        took = 0
        for g in uniq[:-1]:                       # at least one group of each class stays in training
            if took >= want - 0.5:
                break
            idx = members[keys[members] == g]
            test.extend(idx)
            took += len(idx)
    test = np.sort(np.array(test, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), test), test


def leave_one_subject_out(subjects: list) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(subject, train indices, test indices) for each person; every person is on one side only."""
    if any(s is None for s in subjects):
        raise ValueError("leave-one-subject-out needs a subject for every image "
                         "(JAFFE and CK+ file names carry it; this data set does not)")
    subj = np.array(subjects)
    return [(s, np.flatnonzero(subj != s), np.flatnonzero(subj == s)) for s in sorted(set(subjects))]


def sharpness(images, limit: int = 500, seed: int = 0) -> float:
    """Median variance of the Laplacian over (a sample of) gray images: low means blurred."""
    import cv2
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(images))[:limit]
    return float(np.median([cv2.Laplacian(imageio.to_gray(images[i]), cv2.CV_64F).var() for i in idx])) if len(idx) else 0.0


def fixed_subset(n_total: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """A seeded, sorted subset of indices: the same images every time for the same data and limit."""
    idx = np.arange(n_total)
    if limit and limit < n_total:
        idx = np.sort(np.random.default_rng(seed).permutation(n_total)[:limit])
    return idx
