"""Face detection on real photos (../shared/data/scenes), detector selection, and the face crop."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeemo import crop, imageio
from edgeemo.detect import DetectOptions, DetectorError, make_detector
from edgeemo_convert.detection_scoring import iou, load_imglab, match


def scene_scores(det, scenes):
    truth = load_imglab(scenes / "training.xml")
    found_total = labelled = false_pos = 0
    for name, boxes in truth.items():
        found = [f.xywh for f in det.detect(imageio.read_image(scenes / name).pixels)]
        tp, fp = match(found, boxes, 0.4)
        found_total += tp
        labelled += len(boxes)
        false_pos += fp
    dogs = len(det.detect(imageio.read_image(scenes / "dogs.jpg").pixels))
    return found_total, labelled, false_pos, dogs


def test_yunet_recall_and_false_positives(data_dir, yunet_model):
    det = make_detector("yunet", yunet_model)
    found, labelled, fp, dogs = scene_scores(det, data_dir / "scenes")
    assert labelled == 18
    assert found == 18            # measured: 18/18 at IoU >= 0.4
    assert fp == 0                # no extra boxes on the labelled group photos
    assert dogs <= 1              # measured: 1 box (score 0.85) on dogs.jpg


def test_haar_recall_and_false_positives(data_dir):
    det = make_detector("haar")
    found, labelled, fp, dogs = scene_scores(det, data_dir / "scenes")
    assert found >= 14            # measured: 14/18 with edgeemo's downscaling, as at full resolution
    assert fp == 0
    assert dogs <= 1


def test_auto_uses_yunet_when_found_else_haar(yunet_model, monkeypatch):
    monkeypatch.setenv("EDGEEMO_YUNET_MODEL", str(yunet_model))
    assert make_detector("auto").name == "yunet"
    monkeypatch.delenv("EDGEEMO_YUNET_MODEL")
    monkeypatch.setattr("edgeemo.detect.YUNET_SEARCH", ())
    assert make_detector("auto").name == "haar"


def test_yunet_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DetectorError, match="no such file.*OpenCV Zoo"):
        make_detector("yunet", tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(DetectorError, match="not a usable YuNet"):
        make_detector("yunet", bad)
    with pytest.raises(DetectorError, match="unknown detector"):
        make_detector("mtcnn")


def test_options_limit_faces(data_dir, yunet_model):
    img = imageio.read_image(data_dir / "scenes" / "bald_guys.jpg").pixels
    many = make_detector("yunet", yunet_model).detect(img)
    few = make_detector("yunet", yunet_model, DetectOptions(max_faces=3)).detect(img)
    assert len(many) > 3 and len(few) == 3
    assert [f.w * f.h for f in few] == sorted((f.w * f.h for f in many), reverse=True)[:3]
    big = make_detector("yunet", yunet_model, DetectOptions(min_face=10_000)).detect(img)
    assert big == []


def test_none_detector_is_the_whole_image():
    faces = make_detector("none").detect(np.zeros((48, 50), np.uint8))
    assert [f.xywh for f in faces] == [(0, 0, 50, 48)]


def test_crop_square_margin_and_padding():
    img = np.zeros((100, 200), np.uint8)
    img[40:60, 90:110] = 255                       # a white 20x20 square
    face = crop.crop_face(img, (90, 40, 20, 20), 48, margin=0.0)
    assert face.shape == (48, 48) and face.min() == 255
    wide = crop.crop_face(img, (90, 40, 20, 20), 48, margin=0.5)   # 40x40 window, the square in its middle
    assert wide[20:28, 20:28].min() == 255 and wide[:8].max() == 0
    edge = crop.crop_face(img, (0, 0, 30, 30), 48, margin=0.5)     # leaves the image: padded, not shifted
    assert edge.shape == (48, 48)
    assert crop.square_box((10, 10, 20, 40), 0.0) == (0, 10, 40)
    rgb = crop.crop_face(np.zeros((50, 50, 3), np.uint8), (0, 0, 50, 50), 32, channels=3)
    assert rgb.shape == (32, 32, 3)


def test_iou_and_matching():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert match([(0, 0, 10, 10), (50, 50, 10, 10)], [(1, 1, 10, 10)], 0.4) == (1, 1)


def test_crop_blur_from_model_metadata():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (96, 96), dtype=np.uint8)
    sharp = crop.crop_face(img, (0, 0, 96, 96), 24)
    soft = crop.crop_face(img, (0, 0, 96, 96), 24, blur={"sigma": 3.2, "at": 48})
    assert soft.shape == sharp.shape == (24, 24)
    assert soft.std() < sharp.std() / 3          # noise is smoothed away
    assert abs(float(soft.mean()) - float(sharp.mean())) < 3
    # sigma 0 is no blur at all
    assert np.array_equal(crop.crop_face(img, (0, 0, 96, 96), 24, blur={"sigma": 0, "at": 48}), sharp)
    assert np.array_equal(crop.whole_image(img, 24, blur={"sigma": 3.2, "at": 48}), soft)


def test_crop_pads_like_the_padded_photo():
    """The crop cuts before converting; where the square leaves the photo (even entirely), its pixels must
    be those of the photo padded with its edge pixels."""
    import cv2
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    for box in [(-10, -5, 30, 30), (60, 30, 25, 20), (-80, 10, 20, 20), (100, 90, 15, 15), (5, 5, 20, 20)]:
        x0, y0, side = crop.square_box(box, 0.25)
        pad = max(0, -x0, -y0, x0 + side - 70, y0 + side - 40)
        big = cv2.copyMakeBorder(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        ref = big[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
        assert np.array_equal(crop.crop_face(img, box, side, margin=0.25), ref), box


def test_yunet_ships_in_the_package_and_auto_uses_it(monkeypatch, tmp_path):
    """A plain `pip install` detects with YuNet: its file and MIT licence are package data, and "auto" finds
    it when nothing else is installed."""
    import fnmatch
    import hashlib
    import tomllib

    from edgeemo import detect
    shipped = detect.SHIPPED_YUNET
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == \
        "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0"
    licence = (shipped.parent / "LICENSE-yunet.txt").read_text()
    assert "MIT License" in licence and "opencv_zoo" in licence
    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["edgeemo"]
    for f in (shipped, shipped.parent / "LICENSE-yunet.txt"):
        rel = f.relative_to(root / "edgeemo").as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), rel
    monkeypatch.delenv("EDGEEMO_YUNET_MODEL", raising=False)
    monkeypatch.setattr("edgeemo.detect.YUNET_SEARCH", (str(tmp_path / "etc.onnx"), str(tmp_path / "opt.onnx"),
                                                       str(shipped)))
    det = make_detector("auto")
    assert det.name == "yunet" and det.model_path == shipped
    (tmp_path / "opt.onnx").write_bytes(shipped.read_bytes())         # an installed file wins over the shipped one
    assert make_detector("auto").model_path == tmp_path / "opt.onnx"


def test_yunet_dnn_engine_gives_facedetectoryns_faces(data_dir, yunet_model):
    """The cv2.dnn decoder (for OpenCV < 4.8) and cv2.FaceDetectorYN give the same faces and scores."""
    from edgeemo.detect.yunet import YuNet, default_engine
    assert default_engine() == "facedetectoryn"       # this venv's opencv-python-headless is >= 4.10
    ref, dnn = YuNet(yunet_model), YuNet(yunet_model, engine="dnn")
    assert (ref.engine, dnn.engine) == ("facedetectoryn", "dnn")
    total = 0
    for photo in sorted((data_dir / "scenes").glob("*.jpg")):
        img = imageio.read_image(photo).pixels
        a, b = ref.detect(img), dnn.detect(img)
        assert [f.xywh for f in a] == [f.xywh for f in b], photo.name
        assert np.allclose([f.score for f in a], [f.score for f in b], atol=1e-4), photo.name
        total += len(a)
    assert total >= 40                                 # 45 faces on these photos: the check compares something
    assert scene_scores(dnn, data_dir / "scenes")[:3] == (18, 18, 0)
    with pytest.raises(DetectorError, match="unknown YuNet engine"):
        YuNet(yunet_model, engine="tensorrt")


def test_haar_falls_back_to_debians_cascade_folder(data_dir, monkeypatch, tmp_path):
    """Debian's python3-opencv has no cv2.data: the cascade comes from opencv-data's folder, and without it the
    error says which package to install."""
    import cv2

    from edgeemo.detect import haar
    system = tmp_path / "opencv4" / "haarcascades"
    system.mkdir(parents=True)
    (system / haar.CASCADE).write_bytes((Path(cv2.data.haarcascades) / haar.CASCADE).read_bytes())
    monkeypatch.delattr(cv2, "data")
    monkeypatch.setattr(haar, "SYSTEM_CASCADE_DIRS", (str(tmp_path / "absent"), str(system)))
    det = make_detector("haar")
    assert det.model_path == system / haar.CASCADE
    assert len(det.detect(imageio.read_image(data_dir / "scenes/2008_001009.jpg").pixels)) >= 1
    monkeypatch.setattr(haar, "SYSTEM_CASCADE_DIRS", (str(tmp_path / "absent"),))
    with pytest.raises(DetectorError, match="apt install opencv-data"):
        make_detector("haar")
    monkeypatch.setattr(cv2, "__version__", "5.0.0")
    with pytest.raises(DetectorError, match="no longer ships the Haar cascades"):
        make_detector("haar")


DEBIAN_PYTHON = Path("/usr/bin/python3")
ON_DEBIAN_OPENCV = r"""
import json, sys
import cv2
from edgeemo import imageio
from edgeemo.detect import make_detector
yunet, haar = make_detector("auto"), make_detector("haar")
faces = {}
for p in sys.argv[1:]:
    img = imageio.read_image(p).pixels
    faces[p] = [[f.xywh for f in yunet.detect(img)], len(haar.detect(img))]
print(json.dumps({"cv2": cv2.__version__, "engine": yunet.engine, "yunet": str(yunet.model_path),
                  "haar": str(haar.model_path), "faces": faces}))
"""


def test_debian_opencv_4_6_detects_with_the_shipped_yunet(data_dir, tmp_path):
    """What a 32-bit Raspberry Pi OS user gets: Debian bookworm's python3-opencv 4.6 (.ci/run installs it with
    opencv-data), whose FaceDetectorYN cannot run the shipped file. edgeemo's detectors there, run by Debian's
    own Python: YuNet through cv2.dnn with this venv's boxes, and Haar from opencv-data's folder."""
    import json
    import subprocess

    from edgeemo.detect import SHIPPED_YUNET
    photos = [str(p) for p in sorted((data_dir / "scenes").glob("*.jpg"))]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HOME": str(tmp_path)}
    run = subprocess.run([str(DEBIAN_PYTHON), "-c", ON_DEBIAN_OPENCV, *photos], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (f"Debian's python3 with python3-opencv and opencv-data (apt) is needed: "
                                 f"{run.stderr[-2000:]}")
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["cv2"].startswith("4.6") and got["engine"] == "dnn"
    assert got["yunet"] == str(SHIPPED_YUNET)
    assert got["haar"] == "/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml"
    here = make_detector("yunet", SHIPPED_YUNET)
    for p in photos:
        assert [list(f.xywh) for f in here.detect(imageio.read_image(p).pixels)] == got["faces"][p][0], p
    assert sum(n for _, n in got["faces"].values()) >= 14
