"""`edgeemo evaluate`: score a model on a labelled data set.

A ``.tflite`` file runs through the device runtime (edgeemo.runtime.Model) with the device's detection and
crop code, so what is evaluated is what ships; TensorFlow is not needed for it. A ``.keras`` model runs
in TensorFlow with the same preprocessing.
"""
from __future__ import annotations

import json
import time
from pathlib import Path


from . import datasets, metrics, plots, prepare


def pick_split(fs: datasets.FaceSet, split: str | None) -> datasets.FaceSet:
    present = {s for s in fs.splits if s}
    if split:
        if split not in present:
            raise ValueError(f"split {split!r} not in this data set (it has: {', '.join(sorted(present)) or 'none'})")
        return fs.split(split)
    if "val" in present:
        return fs.split("val")
    return fs


def evaluate(model, data, dataset: str, split=None, detector: str = "none", detector_model=None,
             limit: int | None = None, out=None, threads: int = 1, passes: int | None = None) -> dict:
    """``model``: a .tflite or .keras file, or a shipped model's name (default, fast). ``passes``: the
    device's averaging knob (``edgeemo classify --passes``) for a .tflite model."""
    from edgeemo.runtime import SHIPPED_MODELS, resolve_model_path
    if str(model) in SHIPPED_MODELS:
        model = resolve_model_path(str(model))
    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"{model}: model file not found")
    fs = pick_split(datasets.load(data, dataset), split)
    fs = fs.subset(prepare.fixed_subset(len(fs), limit))
    det = None
    if detector != "none":
        from edgeemo.detect import make_detector
        det = make_detector(detector, detector_model)
    t0 = time.perf_counter()
    if model.suffix == ".tflite":
        from edgeemo.runtime import Model
        m = Model(model, threads, passes=passes)
        x = prepare.to_inputs(fs, m.size, m.channels, det, m.margin, m.blur, m.fraction, m.views)
        t1 = time.perf_counter()
        probs = m.predict(x)
        runtime = {"runtime": m.backend, "tensors": "int8" if m.quantized else "float32",
                   "per_face_ms": round((time.perf_counter() - t1) * 1000 / max(len(x), 1), 3),
                   "passes": m.max_passes(), "passes_per_face": round(m.invocations / max(len(x), 1), 3),
                   "macs_per_pass": m.macs_per_pass()["total"]}
        runtime["macs_per_face"] = round(m.invocations / max(len(x), 1) * runtime["macs_per_pass"])
        labels = m.labels
    else:
        from .train import _tf, predict
        _, keras = _tf()
        km = keras.models.load_model(model)
        size, ch = int(km.input_shape[1]), int(km.input_shape[3])
        from .quantize import run_metadata
        x = prepare.to_inputs(fs, size, ch, det, 0.15, run_metadata(model).get("blur"))
        probs = predict(km, x)
        runtime = {"runtime": "tensorflow", "tensors": "float32"}
        from edgeemo.labels import LABELS as labels
    rep = metrics.report(fs.labels, probs.argmax(axis=1), labels)
    rep.update({"model": str(model), "data": str(data), "dataset": dataset, "split": split or
                ("val" if "val" in set(fs.splits) else "all"), "limit": limit, "detector": detector,
                "seconds": round(time.perf_counter() - t0, 2), **runtime, "data_notes": fs.notes})
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(rep, indent=1))
        plots.confusion_matrix(rep["confusion_matrix"], rep["labels"], out / "confusion.png",
                               f"{model.name} on {dataset}: accuracy {rep['accuracy']:.3f}")
    return rep
