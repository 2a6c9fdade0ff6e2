"""`edgeemo convert`: Keras model -> full-integer int8 TFLite with embedded metadata.

The representative set is 300-500 real, preprocessed training faces (stratified, seeded). The int8 file
is checked against the float model on validation faces through the device runtime; a model that loses
more than 1.5 accuracy points is refused unless ``force``.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from edgeemo import modelfile
from edgeemo.errors import EdgeemoError
from edgeemo.labels import LABELS

from . import archs, datasets, prepare
from .train import _tf, predict

MAX_DROP = 0.015


class QuantizationRefused(EdgeemoError, RuntimeError):
    pass


def representative_faces(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Exactly ``min(n, len(y))`` faces, spread over the classes in proportion to their counts, seeded."""
    if n >= len(y):
        return x
    _, picks = prepare.stratified_count_split(y, n, seed)
    return x[picks]


def to_tflite(keras_model, calib: np.ndarray | None) -> bytes:
    """TFLite flatbuffer: full-int8 (int8 in/out) with a representative set, or float32 when calib is None."""
    tf, _ = _tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if calib is not None:
        def rep():
            for face in calib:
                yield [face[None].astype(np.float32) / 255.0]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):     # the converter prints its SavedModel signature
        return conv.convert()


# How the device frames and averages faces for a model, as `edgeemo train` records it in the run folder's
# config.json ("geometry") and `edgeemo convert` stores it in the model file; these are the defaults.
GEOMETRY_DEFAULTS = {"margin": 0.15, "face_fraction": 1.0, "flip_average": False, "view_fractions": ()}


def run_geometry(model_path: Path) -> dict:
    """The geometry the training run recorded beside ``model_path`` (config.json), or {} when none."""
    cfg = Path(model_path).parent / "config.json"
    try:
        c = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return {}
    geo = (c.get("extra") or {}).get("geometry") if isinstance(c, dict) else None
    if not isinstance(geo, dict):
        return {}
    out = {k: geo[k] for k in GEOMETRY_DEFAULTS if k in geo}
    if "view_fractions" in out:
        out["view_fractions"] = tuple(float(f) for f in out["view_fractions"])
    return out


def model_file(model: Path) -> Path:
    """A run folder's model.keras, or the file given."""
    model = Path(model)
    return model / "model.keras" if model.is_dir() else model


def run_metadata(model_path: Path) -> dict:
    """Data set and metrics of the training run the model came from (its config.json/report.json)."""
    info = {}
    cfg, rep = model_path.parent / "config.json", model_path.parent / "report.json"
    if cfg.exists():
        c = json.loads(cfg.read_text())
        info["training"] = {k: c.get(k) for k in ("arch", "optimizer", "epochs", "batch_size", "lr", "seed",
                                                  "label_smoothing", "class_weights", "blur_sigma")}
        if c.get("blur_sigma"):
            info["blur"] = {"sigma": float(c["blur_sigma"]), "at": 48}
        info["dataset"] = c.get("data", {})
    if rep.exists():
        r = json.loads(rep.read_text())
        info["keras_validation"] = {"accuracy": r.get("accuracy"), "macro_f1": r.get("macro_f1"), "n": r.get("n")}
    return info


def convert(model, calib, dataset="fer2013", out=None, name=None, version="1", margin=0.15, calib_size=400,
            check_size=2000, force=False, seed=0, float_model=False, echo=print, detector="auto",
            detector_model=None, flip_average=False, face_fraction: float = 1.0,
            view_fractions: tuple[float, ...] = ()) -> dict:
    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"{model}: model file not found; pass the model.keras of a training run")
    bad = [f for f in view_fractions if not modelfile.is_fraction(f)]
    if bad:         # said before the slow conversion; embed_metadata would refuse them after it
        raise ValueError(f"--view-fractions {', '.join(f'{f:g}' for f in bad)}: each must be a central fraction "
                         f"of the face frame from 0.25 to 1")
    if calib_size < 1:
        raise ValueError(f"--calib-size {calib_size}: the representative set needs at least 1 face (300-500 advised)")
    tf, keras = _tf()
    try:
        km = keras.models.load_model(model)
    except Exception as exc:  # keras raises ValueError/OSError/zipfile errors for a bad file
        raise ValueError(f"{model}: not a Keras model that can be loaded ({exc}); pass the model.keras "
                         f"written by `edgeemo train`") from None
    size, ch = int(km.input_shape[1]), int(km.input_shape[3])
    fs = datasets.load(calib, dataset)
    det = prepare.dataset_detector(dataset, detector, detector_model)
    # the faces as the device will make them: calibration and the float-vs-int8 check see what ships
    x = prepare.to_inputs(fs, size, ch, det, margin if det is not None else 0.0, None, face_fraction)
    tr, va = prepare.holdout_split(fs, 0.15, seed)
    if len(tr) == 0 or len(va) == 0:
        raise ValueError(f"{calib}: {len(fs)} usable images are too few to split into a representative set "
                         f"and a float-vs-int8 check; give more training data")
    if calib_size > len(tr):
        echo(f"only {len(tr)} training faces in {calib}; all of them form the representative set "
             f"(300-500 are advised)")
        calib_size = len(tr)
    calib_faces = representative_faces(x[tr], fs.labels[tr], calib_size, seed)
    echo(f"converting {model} ({'float32' if float_model else f'int8, {len(calib_faces)} representative faces'})")
    flat = to_tflite(km, None if float_model else calib_faces)

    run = run_metadata(model)
    blur = run.get("blur")
    if blur:
        # The training run validated on blurred faces (see TrainConfig.blur_sigma): so does this check,
        # and the device will blur faces the same way (metadata "blur").
        x[va] = prepare.to_inputs(fs.subset(va), size, ch, det, margin if det is not None else 0.0, blur,
                                  face_fraction)
    meta = {
        "name": name or model.parent.name or model.stem, "version": str(version), "labels": list(LABELS),
        "input": {"size": size, "channels": ch, "color": "gray" if ch == 1 else "rgb"},
        "normalization": {"mean": 0.0, "std": 255.0}, "crop_margin": margin, "blur": blur,
        "face_fraction": float(face_fraction),
        "dataset": {**run.get("dataset", {}), "calibration": {"path": str(calib), "dataset": dataset,
                                                              "faces": int(len(calib_faces))}},
        "training": run.get("training", {}), "created": _dt.date.today().isoformat(),
        "tensors": "float32" if float_model else "int8", "flip_average": bool(flip_average),
        "view_fractions": [float(f) for f in view_fractions],
    }
    check = va[prepare.fixed_subset(len(va), check_size, seed)]
    y = fs.labels[check]
    probs = predict(km, x[check])
    if flip_average:        # the device will average each face with its mirror image: so does the float side
        probs = (probs + predict(km, x[check][:, :, ::-1])) / 2.0
    p_float = probs.argmax(axis=1)
    out = Path(out) if out else model.with_suffix(".float.tflite" if float_model else ".int8.tflite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    # The metadata goes in before the check: the runtime reads the input size and colour from it.
    tmp.write_bytes(modelfile.embed_metadata(flat, {**meta, "metrics": {}}))
    from edgeemo.runtime import Model
    try:
        # Every face mirrored, as on the float side: the check measures what quantisation changes.
        p_tfl = Model(tmp, skip_mirror_at=None).predict(x[check]).argmax(axis=1)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    acc_f, acc_q = float((p_float == y).mean()), float((p_tfl == y).mean())
    agree = float((p_float == p_tfl).mean())
    report = {"model": str(model), "out": str(out), "tensors": meta["tensors"],
              "calibration_faces": int(len(calib_faces)), "check_images": int(len(check)),
              "float_accuracy": round(acc_f, 4), "tflite_accuracy": round(acc_q, 4),
              "top1_agreement": round(agree, 4), "accuracy_drop_points": round(100 * (acc_f - acc_q), 2),
              "keras_params": int(km.count_params()), "multiply_adds": archs.multiply_adds(km)}
    if not float_model and acc_f - acc_q > MAX_DROP and not force:
        tmp.unlink()
        raise QuantizationRefused(f"{model}: int8 accuracy {acc_q:.4f} is {100 * (acc_f - acc_q):.1f} points below "
                                  f"float {acc_f:.4f} on {len(check)} validation faces (limit "
                                  f"{100 * MAX_DROP:g}); {out} not written. Try another --calib-size or --seed, "
                                  f"or pass --force to write it anyway")
    meta["metrics"] = {**({"keras_validation": run["keras_validation"]} if "keras_validation" in run else {}),
                       "conversion_check": {k: report[k] for k in ("check_images", "float_accuracy",
                                                                   "tflite_accuracy", "top1_agreement")}}
    tmp.write_bytes(modelfile.embed_metadata(flat, meta))
    tmp.replace(out)
    report["bytes"] = out.stat().st_size
    out.with_suffix(".report.json").write_text(json.dumps(report, indent=1))
    echo(f"wrote {out} ({report['bytes']:,} bytes): float {acc_f:.4f}, {report['tensors']} {acc_q:.4f}, "
         f"top-1 agreement {agree:.4f} on {len(check)} validation faces")
    return report
