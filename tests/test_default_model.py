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
    # Measured: 0.694 on these 700 faces (0.690 on all 3,561 of val/); the guard sits about 2 points below.
    assert rep["accuracy"] >= 0.67, rep["accuracy"]


# (val/ file, label, probabilities) of the shipped model through edgeemo.Classifier(detector="none"),
# recorded when the model was shipped, again when the averaging rule became soft (runtime.SOFT_MARGIN). A change in how a pre-cropped picture becomes the model's input
# (the whole picture, its central fraction and further views, gray conversion, resizing) moves these
# probabilities.
GOLDEN = [
    ('angry/PublicTest_10116449.jpg', 'neutral', {"angry": 0.1992, "disgust": 0.0241, "fear": 0.1289, "happy": 0.0059, "sad": 0.2891, "surprise": 0.0267, "neutral": 0.3249}),
    ('angry/PublicTest_10813312.jpg', 'angry', {"angry": 0.6693, "disgust": 0.0801, "fear": 0.0286, "happy": 0.015, "sad": 0.1309, "surprise": 0.0137, "neutral": 0.0625}),
    ('disgust/PublicTest_11387162.jpg', 'disgust', {"angry": 0.0, "disgust": 0.9961, "fear": 0.0, "happy": 0.0, "sad": 0.0, "surprise": 0.0, "neutral": 0.0}),
    ('disgust/PublicTest_1145545.jpg', 'disgust', {"angry": 0.3637, "disgust": 0.5928, "fear": 0.0072, "happy": 0.0067, "sad": 0.014, "surprise": 0.0112, "neutral": 0.0039}),
    ('fear/PublicTest_10150476.jpg', 'fear', {"angry": 0.0885, "disgust": 0.0182, "fear": 0.3555, "happy": 0.0234, "sad": 0.2057, "surprise": 0.0378, "neutral": 0.2702}),
    ('fear/PublicTest_10434403.jpg', 'neutral', {"angry": 0.0527, "disgust": 0.0202, "fear": 0.0664, "happy": 0.0326, "sad": 0.2578, "surprise": 0.0645, "neutral": 0.5052}),
    ('happy/PublicTest_10130075.jpg', 'happy', {"angry": 0.0117, "disgust": 0.0156, "fear": 0.0117, "happy": 0.8594, "sad": 0.0156, "surprise": 0.0195, "neutral": 0.0703}),
    ('happy/PublicTest_10181609.jpg', 'happy', {"angry": 0.0273, "disgust": 0.0117, "fear": 0.0117, "happy": 0.8594, "sad": 0.0156, "surprise": 0.0156, "neutral": 0.0586}),
    ('sad/PublicTest_10404299.jpg', 'angry', {"angry": 0.2969, "disgust": 0.0143, "fear": 0.2344, "happy": 0.015, "sad": 0.276, "surprise": 0.0306, "neutral": 0.1335}),
    ('sad/PublicTest_10760798.jpg', 'angry', {"angry": 0.3851, "disgust": 0.0129, "fear": 0.1965, "happy": 0.0516, "sad": 0.1723, "surprise": 0.0348, "neutral": 0.1468}),
    ('surprise/PublicTest_10709121.jpg', 'surprise', {"angry": 0.0156, "disgust": 0.0117, "fear": 0.0156, "happy": 0.0117, "sad": 0.0117, "surprise": 0.9141, "neutral": 0.0195}),
    ('surprise/PublicTest_10754294.jpg', 'sad', {"angry": 0.2064, "disgust": 0.0221, "fear": 0.2298, "happy": 0.0312, "sad": 0.388, "surprise": 0.0833, "neutral": 0.0391}),
    ('neutral/PublicTest_10014592.jpg', 'sad', {"angry": 0.0944, "disgust": 0.0137, "fear": 0.1621, "happy": 0.0514, "sad": 0.3574, "surprise": 0.0723, "neutral": 0.2474}),
    ('neutral/PublicTest_10262886.jpg', 'neutral', {"angry": 0.0195, "disgust": 0.0078, "fear": 0.0117, "happy": 0.0156, "sad": 0.0195, "surprise": 0.0078, "neutral": 0.9219}),
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
