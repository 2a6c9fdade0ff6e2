"""`edgeemo study` on a tiny synthetic JAFFE-format set, 1 epoch (the real study runs on real JAFFE)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from synth_faces import write_jaffe

pytest.importorskip("tensorflow", reason="needs the [train] extra")
from typer.testing import CliRunner  # noqa: E402

from edgeemo.cli import app  # noqa: E402
from edgeemo_convert import study  # noqa: E402

pytestmark = pytest.mark.train


def test_default_runs_are_the_studys_five():
    assert study.parse_runs(None) == (("seed-basic", "adam"), ("seed-dropout", "adam"), ("seed-best", "adam"),
                                      ("seed-best", "sgd"), ("seed-best", "nadam"))
    assert study.parse_runs("seed-best:sgd, seed-basic") == (("seed-best", "sgd"), ("seed-basic", "adam"))
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        study.parse_runs("seed-best:rmsprop")
    with pytest.raises(ValueError, match="unknown recipe 'lenet'"):
        study.parse_runs("lenet:adam")


def test_study_on_synthetic_jaffe(tmp_path):
    written = write_jaffe(tmp_path / "jaffe", subjects=("KA", "KM"), takes=2, palette=False)
    out = tmp_path / "study"
    res = CliRunner().invoke(app, ["study", "--data", str(tmp_path / "jaffe"), "--out", str(out), "--epochs", "1",
                                   "--detector", "none", "--runs", "seed-basic:adam,seed-best:nadam"])
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    result = json.loads((out / "study.json").read_text())
    assert result["images"] == len(written) == 28 and result["people"] == ["KA", "KM"]
    # 28 images are too few for the study's 64-image test split: 30% instead, stratified
    assert "too few for a 64-image test split; using 8" in res.output
    assert result["random_split"] == {"seed": 0, "test_images": 8, "train_images": 20}
    assert [r["run"] for r in result["rows"]] == ["seed-basic-adam", "seed-best-nadam"]
    basic, best = result["rows"]
    assert basic["params"] == 37_349 and best["params"] == 7_954_391
    assert basic["study_accuracy"] == 0.469 and best["study_accuracy"] == 0.984
    for row in result["rows"]:
        rep = json.loads((out / row["run"] / "random_split_report.json").read_text())
        assert rep["n"] == 8 and rep["accuracy"] == row["random_accuracy"]
        assert np.asarray(rep["confusion_matrix"]).sum() == 8 and len(rep["history"]) == 1
        cv = json.loads((out / row["run"] / "loso" / "cv_report.json").read_text())
        assert [f["fold"] for f in cv["fold_reports"]] == ["subject KA", "subject KM"]
        assert all(f["n"] == 14 for f in cv["fold_reports"])
        accs = [f["accuracy"] for f in cv["fold_reports"]]
        assert row["loso_folds"] == 2 and row["loso_per_person"] == {"KA": accs[0], "KM": accs[1]}
        assert row["loso_accuracy_mean"] == pytest.approx(np.mean(accs), abs=1e-4)
        assert row["loso_accuracy_std"] == pytest.approx(np.std(accs), abs=1e-4)
    table = (out / "study.md").read_text()
    assert table in res.stdout                              # the table is printed, and written
    lines = table.splitlines()
    assert lines[0].startswith("| recipe | optimizer | params | random split (8 test images) | study (64 test "
                               "images) | leave-one-subject-out accuracy (2 people)")
    assert lines[2].startswith(f"| seed-basic | adam | 37,349 | {100 * basic['random_accuracy']:.1f}% | 46.9% | "
                               f"{100 * basic['loso_accuracy_mean']:.1f}% ± {100 * basic['loso_accuracy_std']:.1f}")
    assert lines[3].startswith("| seed-best | nadam | 7,954,391 |") and "| 98.4% |" in lines[3]
    assert "QUICK" not in table and "whole pictures (no face detection)" in table
    assert result["detector"] == "none"


def test_study_errors_speak_to_the_user(tmp_path):
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["study", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "no JAFFE-named files" in res.output and "empty" in res.output
    write_jaffe(tmp_path / "one", subjects=("KA",), takes=1, palette=False)
    res = CliRunner().invoke(app, ["study", "--data", str(tmp_path / "one"), "--out", str(tmp_path / "o"),
                                   "--detector", "none", "--epochs", "1"])
    assert res.exit_code == 1 and "needs at least 2 people" in res.output and "--no-loso" in res.output
    res = CliRunner().invoke(app, ["study", "--data", str(tmp_path / "one"), "--runs", "seed-best:rmsprop"])
    assert res.exit_code == 1 and "unknown optimizer 'rmsprop'" in res.output


def test_quick_study_caps_epochs_and_people(tmp_path):
    write_jaffe(tmp_path / "jaffe", subjects=("KA", "KL", "KM", "KR"), takes=1, palette=False)
    opts = study.StudyOptions(epochs=30, quick=True, runs=(("seed-basic", "adam"),), input_size=32,
                              detector="none")
    result = study.run_study(tmp_path / "jaffe", tmp_path / "out", opts, echo=lambda s: None)
    row = result["rows"][0]
    assert result["options"]["epochs_run"] == study.QUICK_EPOCHS == 2
    rep = json.loads((tmp_path / "out" / "seed-basic-adam" / "random_split_report.json").read_text())
    assert len(rep["history"]) == 2
    assert row["loso_folds"] == study.QUICK_FOLDS == 3 and list(row["loso_per_person"]) == ["KA", "KL", "KM"]
    assert "QUICK RUN (2 epochs, 3 people left out)" in (tmp_path / "out" / "study.md").read_text()
