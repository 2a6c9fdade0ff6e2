"""Data-set readers and splits on tiny synthetic sets in each format (no TensorFlow needed)."""
from __future__ import annotations

import logging
from collections import Counter

import cv2
import numpy as np
import pytest

from edgeemo.labels import LABELS
from edgeemo_convert import datasets, metrics, prepare

from synth_faces import (JAFFE_CODES, picture, write_ckplus, write_class_folders, write_fer_csv,
                         write_fer_folders, write_jaffe)


def _names(fs):
    return [LABELS[i] for i in fs.labels]


# --- FER2013 -------------------------------------------------------------------------------------------

def test_fer2013_folders_labels_splits_and_flaws(tmp_path):
    info = write_fer_folders(tmp_path / "fer", per_class=5, val_per_class=2)
    fs = datasets.load(tmp_path / "fer", "fer2013")
    n = fs.notes
    assert n["blank_skipped"] == 1
    # one same-label copy and one copy under another label are both duplicates ...
    assert n["duplicates_removed"] == 2
    # ... and the conflicting pair is removed entirely: its bytes are nowhere in the set
    assert n["conflicting_labels_removed"] == 1
    assert n["train_copies_of_eval_images_removed"] == 1
    train, val = fs.split("train"), fs.split("val")
    # train: 5 per class, minus the conflicting sad original (its fear copy was never added)
    expected_train = {lab: 5 for lab in LABELS}
    expected_train["sad"] = 4
    assert train.class_counts() == expected_train
    assert val.class_counts() == {lab: 2 for lab in LABELS}
    decoded = lambda raw: cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE)  # noqa: E731
    conflict, leak = decoded(info["conflict_bytes"]), decoded(info["leak_bytes"])
    assert not any(np.array_equal(img, conflict) for img in fs.images)
    assert [s for img, s in zip(fs.images, fs.splits) if np.array_equal(img, leak)] == ["val"]
    assert len({img.tobytes() for img in fs.images}) == len(fs)           # no two kept images alike
    assert not any("blank" in p for p in fs.paths)
    for img, path in zip(fs.images, fs.paths):
        assert img.dtype == np.uint8 and img.shape == (48, 48), path
    # every image sits in its class folder
    for lab, path in zip(_names(fs), fs.paths):
        assert f"/{lab}/" in path
    tr, va = prepare.holdout_split(fs, 0.5, seed=0)
    assert sorted(set(fs.splits[i] for i in tr)) == ["train"]
    assert sorted(set(fs.splits[i] for i in va)) == ["val"]


def test_fer2013_csv(tmp_path):
    kept = write_fer_csv(tmp_path / "fer2013.csv")
    fs = datasets.load(tmp_path / "fer2013.csv", "fer2013")
    assert fs.notes["duplicates_removed"] == 1
    assert fs.notes["blank_skipped"] == 1
    assert fs.notes["unreadable_skipped"] == 1
    assert len(fs) == len(kept)
    usage = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
    for (code, use, px), img, lab, split in zip(kept, fs.images, fs.labels, fs.splits):
        assert lab == code and split == usage[use]
        np.testing.assert_array_equal(img, px)
    # a folder holding only the CSV is read as the CSV
    again = datasets.load(tmp_path, "fer2013")
    assert len(again) == len(fs)
    tr, va = prepare.holdout_split(fs, 0.15, seed=0)
    assert {fs.splits[i] for i in va} == {"val"} and {fs.splits[i] for i in tr} == {"train"}


def test_fer2013_csv_missing_columns(tmp_path):
    bad = tmp_path / "other.csv"
    bad.write_text("label,image\n1,2\n")
    with pytest.raises(datasets.DatasetError, match=r"other\.csv.*missing column.*emotion"):
        datasets.load(bad, "fer2013")


# --- JAFFE ---------------------------------------------------------------------------------------------

def test_jaffe_names_subjects_and_palette_tiff(tmp_path):
    pytest.importorskip("PIL", reason="the palette-mode TIFF is written with Pillow")
    written = write_jaffe(tmp_path / "jaffe", subjects=("KA", "KM", "NA"), takes=2)
    fs = datasets.load(tmp_path / "jaffe", "jaffe")
    assert len(fs) == len(written) == 3 * 7 * 2            # README.txt is not a JAFFE name: ignored
    by_name = {p.rsplit("/", 1)[1]: (s, LABELS[lab]) for p, s, lab in zip(fs.paths, fs.subjects, fs.labels)}
    assert by_name == written
    assert fs.class_counts() == {lab: 6 for lab in LABELS}
    assert fs.has_subjects()
    # the palette file (KA.AN1.1.tiff, inverted gray palette) reads as the gray it shows, not as indices
    i = next(k for k, p in enumerate(fs.paths) if p.endswith("KA.AN1.1.tiff"))
    expected = 255 - picture(np.random.default_rng(0), LABELS.index("angry"), 64).astype(int)
    np.testing.assert_array_equal(fs.images[i], expected.astype(np.uint8))


def test_jaffe_codes_cover_the_seven_labels():
    assert sorted(datasets.canonical_label(c) for c in JAFFE_CODES) == sorted(LABELS)


def test_jaffe_folder_without_jaffe_names(tmp_path):
    (tmp_path / "photo.tiff").write_bytes(b"x")
    with pytest.raises(datasets.DatasetError, match=r"no JAFFE-named files.*KA\.AN1\.39\.tiff"):
        datasets.load(tmp_path, "jaffe")


# --- CK+ and generic folders ---------------------------------------------------------------------------

def test_ckplus_subjects_and_contempt_dropped_with_warning(tmp_path, caplog):
    written = write_ckplus(tmp_path / "ck", subjects=("S005", "S010", "S011"), frames=2)
    with caplog.at_level(logging.WARNING, logger="edgeemo.convert"):
        fs = datasets.load(tmp_path / "ck", "ckplus")
    assert fs.notes["dropped_classes"] == {"contempt": 6}
    assert any("contempt" in r.getMessage() and "6" in r.getMessage() for r in caplog.records)
    assert len(fs) == len(written) - 6
    assert "contempt" not in {written[p.rsplit("/", 1)[1]][1] for p in fs.paths}
    assert Counter(fs.subjects) == {"S005": 12, "S010": 12, "S011": 12}
    assert fs.class_counts() == {"angry": 6, "disgust": 6, "fear": 6, "happy": 6, "sad": 6, "surprise": 6,
                                 "neutral": 0}
    for p, s in zip(fs.paths, fs.subjects):
        assert p.rsplit("/", 1)[1].startswith(s + "_")


def test_folder_alias_names(tmp_path, caplog):
    rng = np.random.default_rng(1)
    write_class_folders(tmp_path, {"anger": 0, "sadness": 4, "fearful": 2, "surprised": 5, "Happiness": 3,
                                   "other": 6}, 3, rng)
    with caplog.at_level(logging.WARNING, logger="edgeemo.convert"):
        fs = datasets.load(tmp_path, "folder")
    got = Counter(zip((p.split("/")[-2] for p in fs.paths), _names(fs)))
    assert got == {("anger", "angry"): 3, ("sadness", "sad"): 3, ("fearful", "fear"): 3,
                   ("surprised", "surprise"): 3, ("Happiness", "happy"): 3}
    assert fs.notes["dropped_classes"] == {"other": 3}
    assert any("'other'" in r.getMessage() for r in caplog.records)
    assert not fs.has_subjects()


def test_missing_folder_and_unknown_dataset(tmp_path):
    with pytest.raises(datasets.DatasetError, match="no_such: no such file or folder"):
        datasets.load(tmp_path / "no_such", "folder")
    with pytest.raises(datasets.DatasetError, match="unknown data set 'affectnet'"):
        datasets.load(tmp_path, "affectnet")
    with pytest.raises(datasets.DatasetError, match="no images in class folders"):
        datasets.load(tmp_path, "folder")


# --- splits --------------------------------------------------------------------------------------------

@pytest.fixture
def jaffe_set(tmp_path):
    write_jaffe(tmp_path / "j", subjects=("KA", "KL", "KM", "KR", "MK"), takes=2, palette=False)
    return datasets.load(tmp_path / "j", "jaffe")


def test_holdout_keeps_each_person_on_one_side(jaffe_set):
    fs = jaffe_set
    for seed in range(5):
        tr, va = prepare.holdout_split(fs, 0.2, seed)
        people_tr = {fs.subjects[i] for i in tr}
        people_va = {fs.subjects[i] for i in va}
        assert people_va and people_tr and not people_tr & people_va
        assert sorted(np.concatenate([tr, va])) == list(range(len(fs)))


def test_leave_one_subject_out(jaffe_set):
    fs = jaffe_set
    folds = prepare.leave_one_subject_out(fs.subjects)
    assert [s for s, _, _ in folds] == ["KA", "KL", "KM", "KR", "MK"]
    seen = []
    for subject, tr, te in folds:
        assert {fs.subjects[i] for i in te} == {subject}
        assert subject not in {fs.subjects[i] for i in tr}
        assert len(tr) + len(te) == len(fs)
        seen.extend(te)
    assert sorted(seen) == list(range(len(fs)))
    with pytest.raises(ValueError, match="needs a subject for every image"):
        prepare.leave_one_subject_out(["KA", None])


def test_stratified_kfold_covers_every_index_once():
    labels = np.repeat(np.arange(7), [10, 3, 8, 12, 9, 7, 11])
    for k in (2, 3, 5):
        folds = prepare.kfold(labels, k, seed=1)
        assert len(folds) == k
        tests = np.concatenate([te for _, te in folds])
        assert sorted(tests) == list(range(len(labels)))
        for tr, te in folds:
            assert not set(tr) & set(te) and len(tr) + len(te) == len(labels)
        # stratified: each class is spread over the folds as evenly as possible
        for c in range(7):
            per_fold = [int((labels[te] == c).sum()) for _, te in folds]
            assert max(per_fold) - min(per_fold) <= 1
    with pytest.raises(ValueError):
        prepare.kfold(labels, 1, 0)


def test_stratified_count_split_is_exact_and_proportional():
    labels = np.repeat(np.arange(7), [30, 29, 32, 31, 31, 30, 30])        # JAFFE's class counts
    tr, te = prepare.stratified_count_split(labels, 64, seed=3)
    assert len(te) == 64 and len(tr) == 213 - 64
    assert not set(tr) & set(te)
    counts = np.bincount(labels[te], minlength=7)
    assert counts.min() >= 9 and counts.max() <= 10
    tr2, te2 = prepare.stratified_count_split(labels, 64, seed=3)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(te, prepare.stratified_count_split(labels, 64, seed=4)[1])
    with pytest.raises(ValueError, match="needs more than"):
        prepare.stratified_count_split(labels[:10], 10, 0)


def test_metrics_report_on_a_known_confusion():
    y = [0, 0, 0, 1, 1, 3]
    p = [0, 0, 1, 1, 3, 3]
    rep = metrics.report(y, p)
    assert rep["accuracy"] == round(4 / 6, 4) and rep["n"] == 6
    assert rep["per_class"]["angry"] == {"precision": 1.0, "recall": round(2 / 3, 4), "f1": 0.8, "support": 3}
    assert rep["per_class"]["disgust"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert rep["per_class"]["happy"] == {"precision": 0.5, "recall": 1.0, "f1": round(2 / 3, 4), "support": 1}
    assert rep["macro_f1"] == round((0.8 + 0.5 + 2 / 3) / 3, 4)     # classes without support are left out
    assert np.asarray(rep["confusion_matrix"]).sum() == 6 and rep["confusion_matrix"][0][:2] == [2, 1]
    s = metrics.summarize_folds([{"accuracy": 0.5, "macro_f1": 0.4}, {"accuracy": 0.7, "macro_f1": 0.6}])
    assert s == {"folds": 2, "accuracy_mean": 0.6, "accuracy_std": 0.1, "macro_f1_mean": 0.5, "macro_f1_std": 0.1}
