"""The model shipped in the package: it loads without TensorFlow, carries its metadata, stays small, and
scores on real FER2013 faces (a fixed 700-image subset of val/, through the device runtime); and a golden
check of known faces through the device's own Classifier with `--detector none`."""
from __future__ import annotations

import pytest

from edgeemo.labels import LABELS
from edgeemo.runtime import Model, default_model_path


@pytest.fixture(scope="module")
def shipped():
    path = default_model_path()
    assert path is not None, "no default model in edgeemo/models/"
    return Model(path)


def test_shipped_model_is_int8_with_metadata(shipped):
    assert shipped.quantized and str(shipped.input_dtype) == "int8" and str(shipped.output_dtype) == "int8"
    assert shipped.meta["embedded"] and shipped.labels == list(LABELS)
    assert shipped.path.stat().st_size <= 500 * 1024
    assert shipped.meta["dataset"]["dataset"] == "fer2013"
    check = shipped.meta["metrics"]["conversion_check"]
    assert check["top1_agreement"] >= 0.985 and check["tflite_accuracy"] >= check["float_accuracy"] - 0.01
    # sharp training pictures: no input blur; 40x40 faces, the central 0.875 of the face frame, mirrored
    # pass where unsure
    assert shipped.blur is None and shipped.flip_average and shipped.size == 40
    assert shipped.margin == 0.0 and shipped.fraction == 0.875
    # and, for a face the first pass is unsure of, the central 40 and 44 of 48 pixels too, each mirrored
    assert shipped.views == (0.8333, 0.9167)


def test_info_shows_the_shipped_preprocessing():
    from typer.testing import CliRunner

    from edgeemo.cli import app
    out = CliRunner().invoke(app, ["info"]).stdout
    assert "edgeemo-fer2013-res40d" in out and "the central 0.875 of the face" in out and "mirrored" in out
    assert "also classified at 0.8333, 0.9167 of its frame, each mirrored too" in out
    assert "blur " not in out


def test_shipped_model_accuracy_on_fixed_val_subset(shipped, data_dir):
    from edgeemo_convert.evaluation import evaluate
    rep = evaluate(shipped.path, data_dir / "fer2013", "fer2013", split="val", detector="none", limit=700)
    assert rep["n"] == 700 and rep["tensors"] == "int8"
    # Measured: 0.687 on these 700 faces (0.687 on all 3,561 of val/); the guard sits about 2 points below.
    assert rep["accuracy"] >= 0.66, rep["accuracy"]


# (val/ file, label, probabilities) of the shipped model through edgeemo.Classifier(detector="none"),
# recorded when the model was shipped. A change in how a pre-cropped picture becomes the model's input
# (the whole picture, its central fraction and further views, gray conversion, resizing) moves these
# probabilities.
GOLDEN = [
    ('angry/PublicTest_10116449.jpg', 'neutral', {"angry": 0.2773, "disgust": 0.026, "fear": 0.11, "happy": 0.0085, "sad": 0.2344, "surprise": 0.0273, "neutral": 0.3158}),
    ('angry/PublicTest_10813312.jpg', 'angry', {"angry": 0.6641, "disgust": 0.1211, "fear": 0.0312, "happy": 0.0117, "sad": 0.1367, "surprise": 0.0117, "neutral": 0.0273}),
    ('disgust/PublicTest_11387162.jpg', 'disgust', {"angry": 0.0039, "disgust": 0.9844, "fear": 0.0039, "happy": 0.0, "sad": 0.0039, "surprise": 0.0, "neutral": 0.0039}),
    ('disgust/PublicTest_1145545.jpg', 'disgust', {"angry": 0.3086, "disgust": 0.6641, "fear": 0.0072, "happy": 0.002, "sad": 0.0104, "surprise": 0.0065, "neutral": 0.002}),
    ('fear/PublicTest_10150476.jpg', 'fear', {"angry": 0.0951, "disgust": 0.0176, "fear": 0.3743, "happy": 0.0228, "sad": 0.2161, "surprise": 0.0384, "neutral": 0.237}),
    ('fear/PublicTest_10434403.jpg', 'neutral', {"angry": 0.0527, "disgust": 0.0202, "fear": 0.0671, "happy": 0.0371, "sad": 0.2318, "surprise": 0.0391, "neutral": 0.5514}),
    ('happy/PublicTest_10130075.jpg', 'happy', {"angry": 0.0156, "disgust": 0.0156, "fear": 0.0156, "happy": 0.8281, "sad": 0.0195, "surprise": 0.0234, "neutral": 0.0859}),
    ('happy/PublicTest_10181609.jpg', 'happy', {"angry": 0.0195, "disgust": 0.0078, "fear": 0.0156, "happy": 0.8594, "sad": 0.0195, "surprise": 0.0078, "neutral": 0.0664}),
    ('sad/PublicTest_10404299.jpg', 'sad', {"angry": 0.2448, "disgust": 0.0169, "fear": 0.2122, "happy": 0.0117, "sad": 0.3652, "surprise": 0.0339, "neutral": 0.1152}),
    ('sad/PublicTest_10760798.jpg', 'angry', {"angry": 0.3496, "disgust": 0.013, "fear": 0.1699, "happy": 0.0391, "sad": 0.1895, "surprise": 0.0365, "neutral": 0.2012}),
    ('surprise/PublicTest_10709121.jpg', 'surprise', {"angry": 0.0078, "disgust": 0.0078, "fear": 0.0156, "happy": 0.0078, "sad": 0.0039, "surprise": 0.9453, "neutral": 0.0117}),
    ('surprise/PublicTest_10754294.jpg', 'sad', {"angry": 0.1927, "disgust": 0.0299, "fear": 0.2168, "happy": 0.0241, "sad": 0.4408, "surprise": 0.0625, "neutral": 0.0326}),
    ('neutral/PublicTest_10014592.jpg', 'sad', {"angry": 0.1016, "disgust": 0.0124, "fear": 0.2031, "happy": 0.0391, "sad": 0.3704, "surprise": 0.0566, "neutral": 0.2188}),
    ('neutral/PublicTest_10262886.jpg', 'neutral', {"angry": 0.0234, "disgust": 0.0078, "fear": 0.0156, "happy": 0.0117, "sad": 0.0234, "surprise": 0.0078, "neutral": 0.9102}),
]


@pytest.mark.parametrize("name, label, probs", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_known_faces_through_the_device_classifier(data_dir, name, label, probs):
    from edgeemo.pipeline import Classifier
    rec = Classifier(detector="none").classify_image(data_dir / "fer2013" / "val" / name)
    assert rec["status"] == "ok" and len(rec["faces"]) == 1
    face = rec["faces"][0]
    assert face["label"] == label
    for lab, p in probs.items():
        assert face["probs"][lab] == pytest.approx(p, abs=0.02), lab
