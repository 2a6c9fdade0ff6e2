"""The device package's shape: one options object with its checks, one error base with exit statuses, the
detector interface, folder cross-checks, and the face fraction the same on the batch and daemon paths."""
from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from edgeemo.cli import app


TIME = re.compile(rb'"time":"[^"]*"|^[^,\n]*(?=,)', re.M)


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_options_are_checked_in_one_place(device_model):
    from edgeemo.errors import SetupError
    from edgeemo.pipeline import Classifier, ClassifierOptions
    with pytest.raises(SetupError, match="--threads 0: must be an integer of at least 1"):
        ClassifierOptions(threads=0)
    with pytest.raises(SetupError, match="--detector 'retina': must be one of auto, yunet, haar, none"):
        Classifier(device_model, detector="retina")
    with pytest.raises(SetupError, match=r"--score-threshold 1.5: must be a number in \(0, 1\]"):
        ClassifierOptions(score_threshold=1.5)
    bad = run("classify", "x.jpg", "--model", device_model, "--min-face", 0)
    assert bad.exit_code == 2 and "edgeemo: error: --min-face 0: must be an integer of at least 1" in bad.output
    opts = ClassifierOptions(model=device_model, detector="none", min_face=30)
    clf = Classifier(opts)
    assert clf.options is opts and clf.detector.precropped and clf.detector.model_path is None


def test_every_error_has_one_base_and_an_exit_status(tmp_path):
    from edgeemo.detect import DetectorError
    from edgeemo.errors import EdgeemoError, SetupError
    from edgeemo.modelfile import ModelFileError
    from edgeemo.results import ResultsError
    from edgeemo.runtime import RuntimeUnavailable
    for cls in (DetectorError, ModelFileError, ResultsError, RuntimeUnavailable, SetupError):
        assert issubclass(cls, EdgeemoError)
    assert SetupError.exit_code == 2 and ModelFileError.exit_code == 1
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"not a model at all")
    res = run("info", fake)
    assert res.exit_code == 1 and res.output.startswith("edgeemo: error: ") and str(fake) in res.output
    res = run("classify", tmp_path, "--model", fake)
    assert res.exit_code == 1 and "not a TFLite model" in res.output


def test_every_detector_states_the_interface(yunet_model):
    from edgeemo.detect import BACKENDS, DETECTORS, make_detector
    assert set(BACKENDS) | {"auto"} == set(DETECTORS)
    for name in BACKENDS:
        det = make_detector(name, yunet_model if name == "yunet" else None)
        assert det.name == name and isinstance(det.precropped, bool) and callable(det.detect)
        expected = {"yunet": yunet_model, "none": None}.get(name)
        if name == "haar":
            assert det.model_path.name == "haarcascade_frontalface_default.xml" and det.model_path.is_file()
        else:
            assert det.model_path == expected
        assert det.precropped == (name == "none")


def test_done_and_failed_must_be_two_folders(tmp_path):
    from edgeemo.config import resolve
    from edgeemo.errors import SetupError
    inbox = tmp_path / "in"
    inbox.mkdir()
    same = {"inbox": str(inbox), "done": str(tmp_path / "x"), "failed": str(tmp_path / "x")}
    with pytest.raises(SetupError, match="done and failed are the same folder"):
        resolve(same)       # checked before anything starts (the CLI turns it into exit status 2)
    assert resolve({**same, "failed": str(tmp_path / "y")}).failed == tmp_path / "y"


def test_conditions_that_clear_by_themselves_exit_1_not_2(tmp_path):
    """Issue 10, defect 7: exit status 2 (which the unit never restarts) was also given for a results folder
    that cannot be created or written at start; 2 is kept for configuration errors."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    (tmp_path / "a-file").write_text("not a folder")        # nothing can be created under a file
    blocked = CliRunner().invoke(app, ["watch", str(inbox), "--out", str(tmp_path / "a-file" / "results"),
                                       "--detector", "none"])
    assert blocked.exit_code == 1 and "cannot create the results folder" in blocked.output
    typo = CliRunner().invoke(app, ["watch", str(tmp_path / "no-such-inbox")])
    assert typo.exit_code == 2 and "does not exist" in typo.output


def test_face_fraction_is_the_central_part_of_the_frame_on_both_paths():
    import numpy as np
    from edgeemo import crop
    from edgeemo.modelfile import DEFAULTS, ModelFileError, validate
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    half = crop.FaceGeometry(24, 1, 0.0, None, 0.5)
    whole = crop.model_inputs(img, None, half)[0, :, :, 0]
    assert np.array_equal(whole, img[12:36, 12:36])                    # pre-cropped: the central half
    photo = np.zeros((100, 100), np.uint8)
    photo[20:68, 30:78] = img
    boxed = crop.model_inputs(photo, [(30, 20, 48, 48)], half)[0, :, :, 0]
    assert np.array_equal(boxed, whole)                                # a detector box: the same pixels
    wide = crop.model_inputs(photo, [(42, 32, 24, 24)], crop.FaceGeometry(24, 1, 0.5, None, 0.5))[0, :, :, 0]
    assert np.array_equal(wide, whole)                                 # margin first, then the fraction
    assert np.array_equal(crop.model_inputs(img, None, crop.FaceGeometry(48))[0, :, :, 0], img)
    with pytest.raises(ModelFileError, match="face_fraction"):
        validate({**DEFAULTS, "face_fraction": 1.5})
    # further views: view 0 is model_inputs' face; view k is the face at fraction views[k-1], on both paths
    views = crop.FaceGeometry(24, 1, 0.0, None, 0.5, (0.25, 1.0))
    for pixels, boxes in ((img, None), (photo, [(30, 20, 48, 48), (30, 20, 48, 48)])):
        got = crop.model_views(pixels, boxes, views)
        assert got.shape == (1 if boxes is None else 2, 3, 24, 24, 1) and got.dtype == np.uint8
        assert np.array_equal(got[:, 0], crop.model_inputs(pixels, boxes, half))
        assert np.array_equal(got[0, 1, :, :, 0], crop._resize(img[18:30, 18:30], 24))
        assert np.array_equal(got[0, 2], crop.model_inputs(pixels, boxes, crop.FaceGeometry(24, 1, 0.0, None, 1.0))[0])
        assert np.array_equal(crop.further_views(pixels, boxes, views), got[:, 1:])   # the views alone
    for bad in ([1.5], [0.9, "x"], 0.9, [True]):
        with pytest.raises(ModelFileError, match="view_fractions"):
            validate({**DEFAULTS, "view_fractions": bad})
