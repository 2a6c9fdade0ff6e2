"""Metadata inside the .tflite flatbuffer, and the runtime's int8 quantisation of inputs and outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeemo import modelfile
from edgeemo.modelfile import ModelFileError
from edgeemo.runtime import Model


def test_metadata_round_trip_and_replacement(tiny_model, tmp_path):
    raw = tiny_model.read_bytes()
    meta = modelfile.read_metadata(raw)
    assert meta["embedded"] and meta["name"] == "tiny-test"
    new = modelfile.embed_metadata(raw, {**meta, "name": "renamed", "crop_margin": 0.3,
                                         "metrics": {"accuracy": 0.5}})
    entries = modelfile.read_metadata_entries(new)
    assert list(entries).count("edgeemo") == 1                   # replaced, not duplicated
    got = modelfile.read_metadata(new)
    assert got["name"] == "renamed" and got["crop_margin"] == 0.3 and got["metrics"] == {"accuracy": 0.5}
    # The rewritten file still runs and gives the same answers.
    p = tmp_path / "renamed.tflite"
    p.write_bytes(new)
    faces = np.random.default_rng(1).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    assert np.array_equal(Model(p).predict(faces), Model(tiny_model).predict(faces))
    # Replacing leaves no orphan behind: the same metadata written again keeps the file's size (up to the
    # buffer alignment), however often it is done.
    again = modelfile.embed_metadata(new, modelfile.read_metadata(new))
    assert len(again) <= len(new) + 16 and len(modelfile.embed_metadata(again, modelfile.read_metadata(again))) == len(again)


def test_model_without_metadata_uses_defaults(tiny_model):
    from ai_edge_litert import schema_py_generated as schema
    import flatbuffers
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(tiny_model.read_bytes(), 0))
    m.metadata = [e for e in m.metadata if e.name not in (b"edgeemo", "edgeemo")]
    b = flatbuffers.Builder(0)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    meta = modelfile.read_metadata(bytes(b.Output()))
    assert meta["embedded"] is False and meta["labels"] == list(modelfile.DEFAULTS["labels"])


def test_bad_files_and_bad_metadata(tiny_model, tmp_path):
    with pytest.raises(ModelFileError, match="not a TFLite model"):
        modelfile.read_metadata(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="labels"):
        modelfile.embed_metadata(tiny_model.read_bytes(), {"labels": []})
    wrong = tmp_path / "wrong.tflite"
    wrong.write_bytes(modelfile.embed_metadata(tiny_model.read_bytes(), {"labels": ["a", "b"]}))
    with pytest.raises(ModelFileError, match="7 outputs but 2 labels"):
        Model(wrong)


def test_int8_input_quantisation_uses_the_tensor_parameters(tiny_model):
    m = Model(tiny_model)
    assert m.quantized and m.input_dtype == np.int8
    scale, zero = m._in["quantization"]
    faces = np.resize(np.arange(256), (1, 48, 48)).astype(np.uint8)      # every pixel value
    q = m._lut[faces]                                                    # the pixel -> int8 table
    expected = np.clip(np.round(faces / 255.0 / scale) + zero, -128, 127)
    assert np.array_equal(q, expected.astype(np.int8))
    probs = m.predict(faces)
    assert probs.shape == (1, 7) and abs(float(probs.sum()) - 1.0) < 0.05
    info = m.info()
    assert json.dumps(info) and info["input_dtype"] == "int8"


def test_interpreter_fallback_order(tiny_model, monkeypatch):
    import importlib

    from edgeemo import runtime
    real = importlib.import_module
    blocked = {"ai_edge_litert.interpreter", "tflite_runtime.interpreter"}

    def fake(name, *a, **k):
        if name in blocked:
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return real(name, *a, **k)

    faces = np.random.default_rng(2).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    expected = Model(tiny_model).predict(faces)
    monkeypatch.setattr(importlib, "import_module", fake)
    runtime.interpreter_class.cache_clear()
    try:
        m = Model(tiny_model)
        assert m.backend == "tensorflow.lite"
        assert np.abs(m.predict(faces) - expected).max() <= 1 / 128      # same int8 kernels, at most 1 step apart
        blocked.add("tensorflow")
        runtime.interpreter_class.cache_clear()
        with pytest.raises(runtime.RuntimeUnavailable, match="pip install ai-edge-litert"):
            Model(tiny_model)
    finally:
        runtime.interpreter_class.cache_clear()


def test_blur_metadata_is_validated_and_used(tiny_model, tmp_path):
    raw = tiny_model.read_bytes()
    with pytest.raises(ModelFileError, match="blur"):
        modelfile.embed_metadata(raw, {"blur": {"sigma": -1, "at": 48}})
    p = tmp_path / "blurred.tflite"
    p.write_bytes(modelfile.embed_metadata(raw, {"blur": {"sigma": 2.0, "at": 48}}))
    assert Model(p).blur == {"sigma": 2.0, "at": 48} and Model(tiny_model).blur is None


def test_flip_average_metadata(tiny_model, tmp_path):
    p = tmp_path / "flip.tflite"
    p.write_bytes(modelfile.embed_metadata(tiny_model.read_bytes(), {"flip_average": True}))
    plain, flip = Model(tiny_model), Model(p, skip_mirror_at=None)
    faces = np.random.default_rng(3).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    expected = (plain.predict(faces) + plain.predict(faces[:, :, ::-1])) / 2
    assert flip.flip_average and np.allclose(flip.predict(faces), expected)
    assert not np.allclose(plain.predict(faces), expected)       # the mirror image does change the answer


def test_further_views_are_averaged_in_with_their_mirror_images(tiny_model, tmp_path):
    from edgeemo import crop
    p = tmp_path / "views.tflite"
    meta = {"flip_average": True, "view_fractions": [0.75, 0.9]}
    p.write_bytes(modelfile.embed_metadata(tiny_model.read_bytes(), meta))
    plain, views = Model(tiny_model), Model(p, skip_mirror_at=None)
    assert views.views == (0.75, 0.9) and views.geometry.views == (0.75, 0.9) and plain.views == ()
    # noise that is brighter towards the centre (and the right): each view and mirror image differs in brightness,
    # to which the untrained model's answers respond
    yy, xx = np.mgrid[0:60, 0:60]
    ramp = np.clip(1.2 - np.hypot(yy - 30, xx - 30) / 30, 0.05, 1) * (0.5 + xx / 120)
    pictures = (np.random.default_rng(5).integers(0, 256, (3, 60, 60)) * ramp).astype(np.uint8)
    cut = np.concatenate([crop.model_views(pic, None, views.geometry) for pic in pictures])
    assert cut.shape == (3, 3, 48, 48, 1)
    expected = np.mean([plain.predict(v) for k in range(3) for v in (cut[:, k], cut[:, k, :, ::-1])], axis=0)
    before = views.invocations
    assert np.allclose(views.predict(cut), expected, atol=1e-6) and views.invocations - before == 3 * 6
    assert not np.allclose(plain.predict(cut[:, 0]), expected)       # the views do change the answer
    # faces given without views get the model's own view and its mirror image only
    assert np.allclose(views.predict(cut[:, 0]), (plain.predict(cut[:, 0]) + plain.predict(cut[:, 0, :, ::-1])) / 2)
    with pytest.raises(ValueError, match="views"):
        views.predict(cut[:, :, :40])
    # the further views cut on demand (``more_views``), only for the faces the model is unsure of
    asked = []

    def views_of(faces):
        def more_views(idx):
            asked.append(list(idx))
            return faces[idx, 1:]
        return more_views
    assert np.allclose(views.predict(cut[:, 0], more_views=views_of(cut)), expected, atol=1e-6)
    assert asked == [[0, 1, 2]]
    # with a threshold between two faces' confidence (faces at eight brightness levels, which the untrained
    # model's confidence follows), only the less sure faces' views are asked for
    graded = (pictures[[0]] * np.linspace(0.1, 1, 8)[:, None, None]).astype(np.uint8)
    cut8 = np.concatenate([crop.model_views(pic, None, views.geometry) for pic in graded])
    first = plain.predict(cut8[:, 0])
    conf = np.unique(first.max(axis=1))
    assert len(conf) > 1, "the test faces do not separate: pick others"
    asked.clear()
    # (the hard cut, soft_margin 0: these untrained faces' confidences lie within a hair of each other)
    got = Model(p, skip_mirror_at=float(conf[:2].mean()), soft_margin=0).predict(cut8[:, 0],
                                                                                 more_views=views_of(cut8))
    low = np.flatnonzero(first.max(axis=1) < conf[:2].mean())
    assert asked == [list(low)] and 0 < len(low) < 8
    every = Model(p, skip_mirror_at=None).predict(cut8)
    assert np.allclose(got[low], every[low], atol=1e-6) and np.array_equal(np.delete(got, low, 0), np.delete(first, low, 0))
    with pytest.raises(ValueError, match="more_views gave"):
        views.predict(cut[:, 0], more_views=lambda idx: cut[idx[:1], 1:])
    # the device's Classifier cuts every view its model names (crop.further_views) and averages them (the
    # untrained model is unsure of every face, so all of them run)
    from edgeemo.pipeline import Classifier
    clf = Classifier(str(p), detector="none")
    got = clf.classify_image(pictures[0])["faces"][0]["probs"]
    assert np.allclose([got[k] for k in clf.labels], expected[0], atol=1e-4)


def test_mirror_pass_only_for_unsure_faces(tiny_model, tmp_path):
    p = tmp_path / "flip.tflite"
    p.write_bytes(modelfile.embed_metadata(tiny_model.read_bytes(), {"flip_average": True}))
    plain = Model(tiny_model)
    # noise at eight brightness levels: the untrained model's confidence grows with brightness
    rng = np.random.default_rng(4)
    faces = (rng.integers(0, 256, (8, 48, 48)) * np.linspace(0.1, 1, 8)[:, None, None]).astype(np.uint8)
    first = plain.predict(faces)
    averaged = (first + plain.predict(faces[:, :, ::-1])) / 2
    conf, moved = first.max(axis=1), np.abs(averaged - first).max(axis=1) > 0
    # a threshold with, on each side, a face whose answer the mirror image changes
    cuts = [c for c in (np.unique(conf)[:-1] + np.unique(conf)[1:]) / 2
            if (moved & (conf >= c)).any() and (moved & (conf < c)).any()]
    assert cuts, "the test faces do not separate: pick others"
    got = Model(p, skip_mirror_at=float(cuts[0]), soft_margin=0).predict(faces)      # the hard cut
    sure = conf >= cuts[0]
    assert np.array_equal(got[sure], first[sure]) and np.allclose(got[~sure], averaged[~sure])
    # pixels given as floats get the same answers as uint8 pixels
    assert np.array_equal(Model(p).predict(faces.astype(np.float32)), Model(p).predict(faces))
