"""The fast model shipped in the package (`--model fast`): int8 with its metadata, within its budget (at most
12 M multiply-accumulates per face, all passes included, and 300 KB), reachable by name from the CLI, the
Python API and the config file, and its accuracy guard on the fixed 700-face subset of FER2013 val/."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgeemo.cli import app
from edgeemo.labels import LABELS
from edgeemo.runtime import Model, resolve_model_path, shipped_model_path


@pytest.fixture(scope="module")
def fast():
    path = shipped_model_path("fast")
    assert path is not None, "no fast model in edgeemo/models/"
    return Model("fast")


def test_fast_model_is_int8_within_its_budget(fast):
    assert fast.path == shipped_model_path("fast") == resolve_model_path("fast")
    assert fast.quantized and str(fast.input_dtype) == "int8" and fast.labels == list(LABELS)
    assert fast.meta["embedded"] and fast.meta["dataset"]["dataset"] == "fer2013"
    assert fast.path.stat().st_size <= 300 * 1000
    # every pass its averaging can run counts: at most 12 M multiply-accumulates per face
    assert fast.macs_per_pass()["total"] * fast.max_passes() <= 12_000_000
    assert fast.macs_per_pass()["DEPTHWISE_CONV_2D"] > 0                 # the depthwise-separable recipe
    assert fast.macs_per_pass()["total"] < Model("default").macs_per_pass()["total"] / 6


def test_info_model_fast_prints_its_card_and_cost():
    run = CliRunner().invoke(app, ["info", "--model", "fast"])
    assert run.exit_code == 0, run.output
    assert "edgeemo-fer2013-fast" in run.stdout and "passes      1 per face" in run.stdout
    assert "MODEL_CARD.md (the shipped fast model" in run.stdout
    data = json.loads(CliRunner().invoke(app, ["info", "fast", "--json"]).stdout)
    assert data["cost"]["macs_per_face"] == data["macs_per_pass"]["total"] <= 12_000_000


def test_classify_model_fast(data_dir):
    photo = data_dir / "fer2013" / "val" / "happy" / "PublicTest_10130075.jpg"
    run = CliRunner().invoke(app, ["classify", str(photo), "--detector", "none", "--model", "fast"])
    assert run.exit_code == 0, run.output
    rec = json.loads(run.stdout.splitlines()[-1])
    assert rec["model"]["name"].startswith("edgeemo-fer2013-fast") and rec["faces"][0]["label"] == "happy"
    missing = CliRunner().invoke(app, ["classify", str(photo), "--detector", "none", "--model", "fastest"])
    assert missing.exit_code != 0 and "fastest: model file not found" in missing.output
    assert "shipped model: default, fast" in missing.output


def test_config_model_fast(tmp_path):
    from edgeemo import config
    (tmp_path / "inbox").mkdir()
    cfg = tmp_path / "edgeemo.toml"
    cfg.write_text(f'inbox = "{tmp_path / "inbox"}"\nmodel = "fast"\n')
    s = config.resolve({}, cfg)
    assert s.model == "fast"                     # a name, not a path next to the config file
    from edgeemo.pipeline import Classifier
    assert Classifier(s.classifier_options()).model.path == shipped_model_path("fast")


def test_fast_model_accuracy_on_fixed_val_subset(fast, data_dir):
    from edgeemo_convert.evaluation import evaluate
    rep = evaluate("fast", data_dir / "fer2013", "fer2013", split="val", detector="none", limit=700)
    assert rep["n"] == 700 and rep["tensors"] == "int8" and rep["passes_per_face"] == 1.0
    # Measured: 0.641 on these 700 faces (0.648 on all 3,561 of val/); the guard sits about 2 points below.
    assert rep["accuracy"] >= 0.62, rep["accuracy"]
