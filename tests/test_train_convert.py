"""`edgeemo train`, `convert`, `evaluate` and `info` end to end on tiny synthetic data (1-2 epochs of the
`tiny` recipe), and the recipes' sizes. Needs TensorFlow (the [train] extra)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs the [train] extra")
from typer.testing import CliRunner  # noqa: E402

from edgeemo.cli import app  # noqa: E402
from edgeemo.labels import LABELS  # noqa: E402

from synth_faces import write_fer_folders, write_jaffe  # noqa: E402

pytestmark = pytest.mark.train
SIZE = 40            # not the recipe's 48: conversion and evaluation must take the size from the model


def cli(*args, ok=True):
    res = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, f"edgeemo {' '.join(map(str, args))} failed:\n{res.output}\n{res.exception!r}"
    return res


def check_report_schema(rep: dict, n: int) -> None:
    assert rep["labels"] == list(LABELS)
    assert rep["n"] == n
    cm = np.asarray(rep["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.sum() == n
    assert rep["accuracy"] == pytest.approx(np.trace(cm) / n, abs=1e-4)
    assert set(rep["per_class"]) == set(LABELS)
    for i, lab in enumerate(LABELS):
        pc = rep["per_class"][lab]
        assert set(pc) == {"precision", "recall", "f1", "support"}
        assert pc["support"] == cm[i].sum()
        if cm[i].sum():
            assert pc["recall"] == pytest.approx(cm[i, i] / cm[i].sum(), abs=1e-4)
    f1 = [rep["per_class"][lab]["f1"] for i, lab in enumerate(LABELS) if cm[i].sum()]
    assert rep["macro_f1"] == pytest.approx(np.mean(f1), abs=2e-4)


@pytest.fixture(scope="module")
def fer(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fer")
    write_fer_folders(root, per_class=6, val_per_class=3)
    return root


@pytest.fixture(scope="module")
def run(fer, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    res = cli("train", "--data", fer, "--dataset", "fer2013", "--arch", "tiny", "--epochs", 1, "--batch-size", 16,
              "--input-size", SIZE, "--out", out)
    return out, res.output


def test_train_writes_the_run_folder(run):
    out, output = run
    assert "removed 2 byte-identical duplicates" in output and "skipped 1 blank" in output
    assert "training on 41 images, validating on 21" in output
    assert "epoch   1/1" in output
    for f in ("config.json", "history.csv", "curves.png", "model.keras", "last.keras", "state.json",
              "report.json", "confusion.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(rows[0])
    rep = json.loads((out / "report.json").read_text())
    check_report_schema(rep, 21)
    assert rep["model"] == "tiny" and rep["epochs_run"] == 1 and rep["params"] > 0
    assert rep["data"]["train_images"] == 41 and rep["data"]["duplicates_removed"] == 2
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == "tiny" and cfg["epochs"] == 1 and cfg["input_size"] == SIZE


def test_resume_continues_from_the_checkpoint(run, fer, tmp_path):
    import shutil
    out = tmp_path / "resumed"
    shutil.copytree(run[0], out)
    first = list(csv.DictReader(open(out / "history.csv")))[0]
    res = cli("train", "--data", fer, "--dataset", "fer2013", "--arch", "tiny", "--epochs", 2, "--batch-size", 16,
              "--input-size", SIZE, "--out", out, "--resume")
    assert "resuming" in res.output and "at epoch 2" in res.output
    assert "epoch   1/2" not in res.output and "epoch   2/2" in res.output
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0] == first                                  # epoch 1 kept, not retrained
    assert json.loads((out / "state.json").read_text())["epoch"] == 2
    assert json.loads((out / "report.json").read_text())["epochs_run"] == 2


def test_cv_kfold_mean_and_std(fer, tmp_path):
    out = tmp_path / "cv3"
    res = cli("train", "--data", fer, "--dataset", "fer2013", "--arch", "tiny", "--epochs", 1, "--batch-size", 32,
              "--input-size", 32, "--cv", 3, "--out", out)
    rep = json.loads((out / "cv_report.json").read_text())
    assert rep["cv"] == "3" and rep["folds"] == 3 and len(rep["fold_reports"]) == 3
    accs = [f["accuracy"] for f in rep["fold_reports"]]
    assert rep["accuracy_mean"] == pytest.approx(np.mean(accs), abs=1e-4)
    assert rep["accuracy_std"] == pytest.approx(np.std(accs), abs=1e-4)
    assert sum(f["n"] for f in rep["fold_reports"]) == rep["pooled"]["n"] == 62
    check_report_schema(rep["pooled"], 62)
    assert (out / "cv_pooled_confusion.png").is_file()
    assert "3 cross-validation over 3 folds" in res.output


def test_cv_loso_on_jaffe_keeps_people_apart(tmp_path):
    write_jaffe(tmp_path / "jaffe", subjects=("KA", "KM"), takes=1, palette=False)
    out = tmp_path / "loso"
    res = cli("train", "--data", tmp_path / "jaffe", "--dataset", "jaffe", "--detector", "none", "--arch", "tiny",
              "--epochs", 1, "--input-size", 32, "--cv", "loso", "--out", out)
    rep = json.loads((out / "cv_report.json").read_text())
    assert [f["fold"] for f in rep["fold_reports"]] == ["subject KA", "subject KM"]
    assert all(f["n"] == 7 for f in rep["fold_reports"])
    accs = [f["accuracy"] for f in rep["fold_reports"]]
    assert rep["accuracy_mean"] == pytest.approx(np.mean(accs), abs=1e-4)
    assert rep["accuracy_std"] == pytest.approx(np.std(accs), abs=1e-4)
    assert "loso cross-validation over 2 folds" in res.output


def test_cv_loso_without_subjects_is_refused(fer, tmp_path):
    res = cli("train", "--data", fer, "--dataset", "fer2013", "--arch", "tiny", "--epochs", 1, "--cv", "loso",
              "--out", tmp_path / "x", ok=False)
    # workstation errors are typed (edgeemo_convert.errors) and the CLI says them once, as the device's
    assert res.exit_code == 1
    assert "edgeemo: error: --cv loso needs the person of every image" in res.output
    assert "Traceback" not in res.output
    res = cli("train", "--data", fer, "--arch", "tiny", "--cv", "five", "--out", tmp_path / "y", ok=False)
    assert res.exit_code == 1 and "edgeemo: error: --cv takes a number of folds or 'loso'" in res.output


def test_workstation_code_raises_typed_errors_and_uses_no_private_cli_name():
    """No SystemExit in the workstation's modules outside its CLI, and nothing imports edgeemo.cli's private
    names: errors are edgeemo_convert.errors' classes, under edgeemo's one base."""
    import ast

    from edgeemo.errors import EdgeemoError
    from edgeemo_convert import errors
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "convert").glob("*.py")) + sorted((root / "edgeemo").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("cli"):
                assert not any(a.name.startswith("_") for a in node.names), f"{path}: imports a private CLI name"
            if path.name != "cli.py" and isinstance(node, ast.Name):
                assert node.id != "SystemExit", f"{path}:{node.lineno}: SystemExit outside a CLI"
    for cls in (errors.MissingExtra, errors.OptionError, errors.DataSetError, errors.ModelFileError,
                errors.LayersDoNotFit):
        assert issubclass(cls, errors.WorkstationError) and issubclass(cls, EdgeemoError)


@pytest.fixture(scope="module")
def converted(run, fer):
    out_dir = run[0]
    tfl = out_dir / "tiny.int8.tflite"
    # --force: one epoch on 41 pictures gives a near-random model, so int8 may differ from float on a
    # few of the 21 check faces (> 1.5 points); the refusal itself is tested below.
    res = cli("convert", out_dir / "model.keras", "--calib", fer, "--dataset", "fer2013", "--out", tfl,
              "--name", "tiny-synthetic", "--calib-size", 30, "--force")
    return tfl, json.loads(res.stdout)


def test_convert_writes_full_int8_with_metadata(converted, run, fer):
    tfl, rep = converted
    from edgeemo.runtime import interpreter_class
    _, Interpreter = interpreter_class()
    interp = Interpreter(model_path=str(tfl))
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    assert inp["dtype"] == np.int8 and outp["dtype"] == np.int8
    assert list(inp["shape"]) == [1, SIZE, SIZE, 1] and outp["shape"][-1] == 7
    assert rep["tensors"] == "int8" and rep["calibration_faces"] == 30 and rep["check_images"] == 21
    for k in ("float_accuracy", "tflite_accuracy", "top1_agreement"):
        assert 0.0 <= rep[k] <= 1.0
    assert rep["accuracy_drop_points"] == pytest.approx(100 * (rep["float_accuracy"] - rep["tflite_accuracy"]),
                                                        abs=0.02)
    assert rep["bytes"] == tfl.stat().st_size
    assert json.loads(tfl.with_suffix(".report.json").read_text()) == rep
    # the float check is the Keras model's own validation accuracy (same faces, same preprocessing)
    assert rep["float_accuracy"] == json.loads((run[0] / "report.json").read_text())["accuracy"]

    info = json.loads(cli("info", tfl, "--json").stdout)
    assert info["name"] == "tiny-synthetic" and info["embedded"] is True
    assert info["labels"] == list(LABELS)
    assert info["input"] == {"size": SIZE, "channels": 1, "color": "gray"}
    assert info["input_dtype"] == "int8" and info["output_dtype"] == "int8"
    assert info["metrics"]["conversion_check"] == {k: rep[k] for k in ("check_images", "float_accuracy",
                                                                       "tflite_accuracy", "top1_agreement")}
    assert info["metrics"]["keras_validation"]["n"] == 21
    assert info["training"]["arch"] == "tiny"
    assert info["dataset"]["calibration"] == {"path": str(fer), "dataset": "fer2013", "faces": 30}
    assert info["dataset"]["train_images"] == 41


def test_convert_refuses_an_int8_model_that_loses_accuracy(run, fer, tmp_path, monkeypatch):
    from edgeemo_convert import quantize
    monkeypatch.setattr(quantize, "MAX_DROP", -1.0)     # any int8 result now counts as too great a loss
    tfl = tmp_path / "refused.int8.tflite"
    res = cli("convert", run[0] / "model.keras", "--calib", fer, "--dataset", "fer2013", "--out", tfl,
              "--calib-size", 20, ok=False)
    assert res.exit_code == 1
    assert "points below float" in res.output and "--force" in res.output
    assert not tfl.exists() and list(tmp_path.iterdir()) == []


def test_convert_error_messages(run, fer, tmp_path):
    res = cli("convert", tmp_path / "nope.keras", "--calib", fer, ok=False)
    assert res.exit_code == 1 and "nope.keras: model file not found" in res.output
    res = cli("convert", run[0] / "model.keras", "--calib", tmp_path / "nodata", ok=False)
    assert res.exit_code == 1 and "nodata: no such file or folder" in res.output


def test_evaluate_tflite_through_the_device_runtime(converted, fer, tmp_path):
    tfl, _ = converted
    out = tmp_path / "eval"
    res = cli("evaluate", tfl, "--data", fer, "--dataset", "fer2013", "--out", out)
    rep = json.loads((out / "report.json").read_text())
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    check_report_schema(rep, 21)
    assert rep["tensors"] == "int8" and rep["split"] == "val" and rep["per_face_ms"] > 0
    assert json.loads(res.stdout)["accuracy"] == rep["accuracy"]
    # the same figure, computed here with the runtime and the device crop code
    from edgeemo.runtime import Model
    from edgeemo_convert import datasets, prepare
    fs = datasets.load(fer, "fer2013").split("val")
    m = Model(tfl)
    pred = m.predict(prepare.to_inputs(fs, m.size, m.channels)).argmax(axis=1)
    assert rep["accuracy"] == round(float((pred == fs.labels).mean()), 4)
    np.testing.assert_array_equal(np.asarray(rep["confusion_matrix"]).sum(axis=1), np.bincount(fs.labels, minlength=7))


def test_evaluate_keras_matches_the_training_report(run, fer, tmp_path):
    out = tmp_path / "eval_keras"
    cli("evaluate", run[0] / "model.keras", "--data", fer, "--dataset", "fer2013", "--out", out)
    rep = json.loads((out / "report.json").read_text())
    trained = json.loads((run[0] / "report.json").read_text())
    assert rep["accuracy"] == trained["accuracy"]
    assert rep["confusion_matrix"] == trained["confusion_matrix"]


# --- recipes -------------------------------------------------------------------------------------------

def test_seed_recipes_have_the_study_parameter_counts():
    from edgeemo_convert import archs
    counts = {name: archs.build(name).count_params() for name in ("seed-basic", "seed-dropout", "seed-best")}
    assert counts == {"seed-basic": 37_349, "seed-dropout": 37_989, "seed-best": 7_954_391}
    for name in counts:
        m = archs.build(name)
        assert m.input_shape == (None, 128, 128, 3) and m.output_shape == (None, 7)


def test_edge_recipe_fits_500kb_as_int8(tmp_path):
    import keras
    from edgeemo_convert import archs
    from edgeemo_convert.quantize import to_tflite
    keras.utils.set_random_seed(0)
    m = archs.build("edge")
    assert m.count_params() < 480_000
    calib = np.random.default_rng(0).integers(0, 256, (8, 48, 48, 1), dtype=np.uint8)
    flat = to_tflite(m, calib)
    assert len(flat) <= 500 * 1024, f"edge as int8 is {len(flat):,} bytes"


def test_the_run_folder_carries_its_face_geometry_into_convert(fer, tmp_path):
    """What was trained is what ships: the geometry given to `train` is in the run folder, and `convert RUN`
    stores it with no flag repeated; a flag given to convert still wins."""
    run_dir = tmp_path / "geo"
    cli("train", "--data", fer, "--dataset", "fer2013", "--arch", "tiny", "--epochs", 1, "--batch-size", 16,
        "--input-size", SIZE, "--margin", 0.05, "--face-fraction", 0.9, "--flip-average",
        "--view-fractions", "0.8,0.95", "--out", run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["extra"]["geometry"] == {"margin": 0.05, "face_fraction": 0.9, "flip_average": True,
                                        "view_fractions": [0.8, 0.95]}
    res = cli("convert", run_dir, "--calib", fer, "--dataset", "fer2013", "--out", tmp_path / "geo.tflite",
              "--calib-size", 30, "--force")
    assert f"from {run_dir / 'config.json'}: margin 0.05, face-fraction 0.9, flip-average True" in res.output
    info = json.loads(cli("info", tmp_path / "geo.tflite", "--json").stdout)
    assert (info["crop_margin"], info["face_fraction"], info["flip_average"], info["view_fractions"]) == \
        (0.05, 0.9, True, [0.8, 0.95])
    cli("convert", run_dir / "model.keras", "--calib", fer, "--dataset", "fer2013", "--out", tmp_path / "g2.tflite",
        "--calib-size", 30, "--force", "--no-flip-average", "--view-fractions", "")
    info = json.loads(cli("info", tmp_path / "g2.tflite", "--json").stdout)
    assert (info["crop_margin"], info["face_fraction"], info["flip_average"]) == (0.05, 0.9, False)
    assert not info.get("view_fractions")
