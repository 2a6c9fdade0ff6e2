"""`edgeemo classify` and the Python API: records, CSV/JSONL, annotation, bad input, exit codes."""
from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import edgeemo
from edgeemo.cli import app
from edgeemo.results import csv_columns, escape_cell

runner = CliRunner()


@pytest.fixture
def photo_dir(tmp_path, data_dir):
    """Two real photos with faces, one without, and every kind of bad input."""
    d = tmp_path / "in"
    d.mkdir()
    scenes = data_dir / "scenes"
    (d / "group.jpg").write_bytes((scenes / "2008_001322.jpg").read_bytes())
    (d / "portrait.png").write_bytes(cv2.imencode(".png", cv2.imread(str(scenes / "Tom_Cruise_avp_2014_4.jpg")))[1])
    (d / "dogs.jpg").write_bytes((scenes / "dogs.jpg").read_bytes())
    jpeg = (scenes / "2008_001009.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (d / "zero.jpg").write_bytes(b"")
    (d / "notes.txt").write_text("not an image")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200 + b"IEND\xaeB`\x82")
    huge = cv2.imencode(".png", np.zeros((2, 2), np.uint8))[1].tobytes()
    (d / "huge.png").write_bytes(huge[:16] + struct.pack(">II", 9000, 9000) + huge[24:])
    (d / "=cmd.jpg").write_bytes((scenes / "2008_001009.jpg").read_bytes())   # formula-looking name
    return d


def classifier(device_model, yunet_model):
    return edgeemo.Classifier(device_model, detector="yunet", detector_model=yunet_model)


def test_api_classifies_paths_and_arrays(device_model, yunet_model, data_dir):
    clf = classifier(device_model, yunet_model)
    rec = clf.classify_image(data_dir / "scenes" / "2008_001322.jpg")
    assert rec["status"] == "ok" and len(rec["faces"]) == 3
    assert (rec["width"], rec["height"]) == (500, 375)
    face = rec["faces"][0]
    assert face["label"] in edgeemo.LABELS and set(face["probs"]) == set(edgeemo.LABELS)
    assert abs(sum(face["probs"].values()) - 1.0) < 0.05
    assert face["confidence"] == max(face["probs"].values())
    assert rec["model"]["sha256"] and len(rec["sha256"]) == 64
    arr = cv2.imread(str(data_dir / "scenes" / "2008_001322.jpg"))
    rec2 = clf.classify_image(arr)
    assert rec2["file"] is None and [f["box"] for f in rec2["faces"]] == [f["box"] for f in rec["faces"]]
    assert clf.classify_image(data_dir / "scenes" / "dogs.jpg")["status"] in ("no_face", "ok")


def test_precropped_faces_with_detector_none(device_model, data_dir):
    clf = edgeemo.Classifier(device_model, detector="none")
    files = sorted((data_dir / "fer2013" / "val" / "happy").glob("*.jpg"))[:3]
    for f in files:
        rec = clf.classify_image(f)
        assert rec["status"] == "ok" and rec["faces"][0]["box"] == [0, 0, 48, 48]


def test_cli_writes_one_record_per_input_and_never_crashes(photo_dir, tmp_path, device_model, yunet_model):
    out = tmp_path / "out"
    ann = tmp_path / "ann"
    res = runner.invoke(app, ["classify", str(photo_dir), "--out", str(out), "--annotate", str(ann),
                              "--model", str(device_model), "--detector", "yunet",
                              "--detector-model", str(yunet_model)])
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_name = {Path(r["file"]).name: r for r in recs}
    assert set(by_name) == {p.name for p in photo_dir.iterdir()}          # nothing lost
    assert by_name["group.jpg"]["status"] == "ok" and len(by_name["group.jpg"]["faces"]) == 3
    assert by_name["portrait.png"]["status"] == "ok"
    expected = {"truncated.jpg": ("unreadable", "truncated"), "zero.jpg": ("unreadable", "empty file"),
                "notes.txt": ("unreadable", "not a supported image"), "corrupt.png": ("unreadable", "corrupt PNG"),
                "huge.png": ("error", "megapixel limit")}
    for name, (status, words) in expected.items():
        assert by_name[name]["status"] == status and words in by_name[name]["error"], by_name[name]
    # The summary speaks to the user.
    assert "images" in res.output and "unreadable" in res.output
    # CSV: fixed columns, one row per face, one row for an image without faces or with an error.
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    assert header == csv_columns(edgeemo.LABELS)
    n_faces = sum(len(r["faces"]) for r in recs)
    n_empty = sum(1 for r in recs if not r["faces"])
    assert len(body) == n_faces + n_empty
    files = [r[header.index("file")] for r in body]
    assert any(f.endswith("=cmd.jpg") and f.startswith("/") for f in files)    # absolute path: harmless
    # Annotated copies exist for every decodable image.
    assert (ann / "group.jpg").is_file() and (ann / "portrait.jpg").is_file()
    assert not (ann / "zero.jpg").exists()


def test_csv_escapes_formula_cells(tmp_path, device_model):
    assert escape_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert escape_cell("+1+1") == "'+1+1" and escape_cell("@SUM") == "'@SUM" and escape_cell("-2+3") == "'-2+3"
    assert escape_cell("-0.5") == "-0.5" and escape_cell("photo.jpg") == "photo.jpg"
    # Through the CLI: a relative file name that starts with '=' is escaped in the CSV.
    img = tmp_path / "=1+2.jpg"
    img.write_bytes(cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1])
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        res = runner.invoke(app, ["classify", "=1+2.jpg", "--format", "csv", "--model", str(device_model),
                                  "--detector", "none"])
    finally:
        os.chdir(cwd)
    assert res.exit_code == 0
    line = [ln for ln in res.stdout.splitlines() if "1+2.jpg" in ln][0]
    assert ",'=1+2.jpg," in line


def test_missing_path_gets_a_record(tmp_path, device_model):
    res = runner.invoke(app, ["classify", str(tmp_path / "nope.jpg"), "--model", str(device_model),
                              "--detector", "none"])
    assert res.exit_code == 0
    rec = json.loads(res.stdout.splitlines()[0])
    assert rec["status"] == "unreadable" and "no such file" in rec["error"]


def test_usage_and_fatal_exit_codes(tmp_path, device_model):
    img = tmp_path / "a.jpg"
    img.write_bytes(cv2.imencode(".jpg", np.zeros((8, 8), np.uint8))[1])
    assert runner.invoke(app, ["classify", str(img), "--format", "xml", "--model", str(device_model)]).exit_code == 2
    assert runner.invoke(app, ["classify", str(img), "--detector", "mtcnn", "--model", str(device_model)]).exit_code == 2
    assert runner.invoke(app, ["classify", str(img), "--bogus"]).exit_code == 2
    res = runner.invoke(app, ["classify", str(img), "--model", str(tmp_path / "missing.tflite")])
    assert res.exit_code == 1 and "model file not found" in res.output
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"garbage" * 10)
    res = runner.invoke(app, ["classify", str(img), "--model", str(bad)])
    assert res.exit_code == 1 and "not a TFLite model" in res.output


def test_recursive_and_hidden_files(tmp_path, device_model):
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / ".hidden").mkdir()
    face = cv2.imencode(".png", np.full((48, 48), 100, np.uint8))[1].tobytes()
    for p in (top / "a.png", top / "sub" / "b.png", top / ".hidden" / "c.png", top / ".d.png"):
        p.write_bytes(face)
    flat = runner.invoke(app, ["classify", str(top), "--model", str(device_model), "--detector", "none"])
    deep = runner.invoke(app, ["classify", str(top), "-r", "--model", str(device_model), "--detector", "none"])
    names = lambda r: sorted(Path(json.loads(x)["file"]).name for x in r.stdout.splitlines())  # noqa: E731
    assert names(flat) == ["a.png"] and names(deep) == ["a.png", "b.png"]


def test_info_prints_embedded_metadata(device_model):
    res = runner.invoke(app, ["info", str(device_model), "--json"])
    assert res.exit_code == 0
    info = json.loads(res.stdout)
    assert info["embedded"] is True and info["labels"] == list(edgeemo.LABELS)
    assert info["input_dtype"] == "int8" and info["output_dtype"] == "int8"
    text = runner.invoke(app, ["info", str(device_model)]).stdout
    assert "angry, disgust, fear, happy, sad, surprise, neutral" in text


def test_device_side_never_imports_tensorflow(tmp_path, device_model):
    code = ("import sys, edgeemo, edgeemo.cli, edgeemo.pipeline\n"
            f"edgeemo.Classifier(r'{device_model}', detector='haar').classify_image(__import__('numpy').zeros((64, 64), 'uint8'))\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'edgeemo_convert')]\n"
            "print(bad)\nassert not bad\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_annotated_copies_can_have_their_faces_blurred(tmp_path, data_dir):
    from typer.testing import CliRunner

    from edgeemo.cli import app
    from edgeemo.detect import SHIPPED_YUNET
    from edgeemo.detect.yunet import YuNet
    from edgeemo.track import iou
    photo = data_dir / "scenes" / "2008_002079.jpg"
    det = YuNet(SHIPPED_YUNET)
    original = [f.xywh for f in det.detect(cv2.imread(str(photo)))]
    for flag, expected in (([], len(original)), (["--blur-faces"], 0)):
        ann = tmp_path / ("blurred" if flag else "plain")
        res = CliRunner().invoke(app, ["classify", str(photo), "--annotate", str(ann), "--detector", "yunet", *flag])
        assert res.exit_code == 0, res.output
        boxes = [f.xywh for f in det.detect(cv2.imread(str(ann / "2008_002079.jpg")))]
        found = sum(any(iou(o, b) >= 0.5 for b in boxes) for o in original)
        assert (found == 0) if flag else (found >= len(original) - 1), (flag, found)
