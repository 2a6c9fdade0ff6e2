"""int8 inference: load a .tflite model with whichever TFLite interpreter is installed and run faces.

Interpreter packages are tried in order at first use: ``ai_edge_litert`` (LiteRT), ``tflite_runtime``
(frozen at 2.14, fails with numpy 2: a fallback only), ``tensorflow.lite`` (workstations). Full-int8
models (int8 input and output) are quantised and dequantised with the tensors' own scale and zero point;
float models are fed floats.
"""
from __future__ import annotations

import faulthandler
import hashlib
import importlib
import os
import sys
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import modelfile
from .crop import FaceGeometry
from .errors import EdgeemoError, SetupError
from .folders import expand_user
from .modelfile import ModelFileError

from .options import DEFAULT_MODEL_NAME, MAX_PASSES, SHIPPED_MODELS  # noqa: F401 (the names --model takes)
# Averaging (models with "flip_average" or "view_fractions"): the mirrored pass and the further views are
# skipped for a face whose first answer is already this confident. On FER2013 val/ (3,561 faces) the shipped
# model gets 69.00% so, at 3.11 model runs per face (with SOFT_MARGIN), about the same as with all 6 runs for
# every face (`python bench/view_average.py`).
SKIP_MIRROR_AT = 0.6
# ...but not as a hard cut: a face whose first answer's confidence c lies within SOFT_MARGIN of the threshold
# gets w * first + (1 - w) * average, w = (c - (threshold - margin)) / (2 * margin). The answer then moves
# smoothly with c, so a rounding difference between two CPUs' int8 kernels (one output step, 1/256) moves it
# by a hair instead of switching between one look and six: x86 and ARM give the same labels
# (`python bench/view_average.py` counts the flips under one step).
SOFT_MARGIN = 0.03
_BACKENDS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")


def first_weight(conf: np.ndarray, threshold: float, margin: float = SOFT_MARGIN) -> np.ndarray:
    """How much a face's first answer counts alone, from its confidence: 1 at threshold + margin and above
    (no further passes), 0 at threshold - margin and below (the plain average of every pass), linear between.
    margin 0 is the hard cut: 1 from the threshold up, else 0."""
    conf = np.asarray(conf, np.float32)
    if margin <= 0:
        return (conf >= threshold).astype(np.float32)
    return np.clip((conf - (threshold - margin)) / (2 * margin), 0.0, 1.0).astype(np.float32)


class RuntimeUnavailable(EdgeemoError, RuntimeError):
    pass


@lru_cache(maxsize=1)
def interpreter_class():
    """(module name, Interpreter class) of the first importable TFLite runtime."""
    tried = []
    for mod in _BACKENDS:
        try:
            if mod == "tensorflow.lite":       # the API lives at tf.lite, not in the tensorflow.lite package
                return mod, importlib.import_module("tensorflow").lite.Interpreter
            return mod, importlib.import_module(mod).Interpreter
        except Exception as exc:  # ImportError, or tflite_runtime's numpy-2 failure
            tried.append(f"{mod}: {type(exc).__name__}: {exc}".splitlines()[0])
    raise RuntimeUnavailable("no TFLite interpreter could be loaded; install ai-edge-litert "
                             "(pip install ai-edge-litert). Tried: " + "; ".join(tried))


def shipped_model_path(name: str = "default") -> Path | None:
    """The model shipped inside the package under ``name`` (a key of SHIPPED_MODELS), or None if this build
    has none."""
    p = Path(__file__).resolve().parent / "models" / SHIPPED_MODELS[name]
    return p if p.is_file() else None


def default_model_path() -> Path | None:
    """The default model shipped inside the package, or None if this build has none."""
    return shipped_model_path("default")


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    if model is None:
        env = os.environ.get("EDGEEMO_MODEL")
        if env:
            model = env
        else:
            p = default_model_path()
            if p is None:
                raise ModelFileError("no default model is installed with this edgeemo build; "
                                     "pass --model FILE.tflite (or set EDGEEMO_MODEL)")
            return p
    if str(model) in SHIPPED_MODELS:
        p = shipped_model_path(str(model))
        if p is None:
            raise ModelFileError(f"--model {model}: this edgeemo build has no shipped {model!s} model "
                                 f"({SHIPPED_MODELS[str(model)]}); pass --model FILE.tflite")
        return p
    p = expand_user(model)
    if not p.is_file():
        raise ModelFileError(f"{p}: model file not found (give a .tflite file, or a shipped model: "
                             f"{', '.join(SHIPPED_MODELS)})")
    return p


PASSES_WANTED = (f"a whole number from 1 (one pass per face, the cheapest) to {MAX_PASSES} (every look the "
                 "model's averaging offers)")


def valid_passes(passes) -> bool:
    return not isinstance(passes, bool) and isinstance(passes, (int, np.integer)) and 1 <= passes <= MAX_PASSES


@contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 while the interpreter is built: TFLite prints an INFO line ("Created
    TensorFlow Lite XNNPACK delegate for CPU") there that no setting turns off. Errors still arrive as
    Python exceptions. A native crash meanwhile (a segmentation fault in the runtime's set-up) still leaves
    its trace on the real standard error: faulthandler writes there, naming the Python frame that crashed."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    crash_file = None
    if not faulthandler.is_enabled():   # (the CLI enables it on a copy of fd 2, which this does not silence)
        crash_file = os.fdopen(os.dup(saved), "w")
        faulthandler.enable(file=crash_file)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if crash_file is not None:
            faulthandler.disable()
            crash_file.close()


def _build_interpreter(cls, data: bytes, threads: int):
    """Build and allocate the TFLite interpreter: the step in whose native code a runtime built for another
    CPU crashes (as faulthandler's trace then shows by this function's name)."""
    with _quiet_stderr():
        interp = cls(model_content=data, num_threads=max(1, int(threads)))
        interp.allocate_tensors()
    return interp


class Model:
    """A TFLite emotion model and its metadata.

    ``predict(faces)`` takes uint8 faces shaped (N, size, size) or (N, size, size, channels), pixels 0..255,
    or each face in several views, (N, views, size, size, channels) as ``edgeemo.crop.model_views`` cuts
    them, and returns float32 probabilities (N, len(labels)). ``predict(faces, more_views=fn)``: ``fn(idx)``
    returns the further views of the faces ``idx`` (as ``edgeemo.crop.further_views`` cuts them), called only
    for the faces that get them.

    ``skip_mirror_at``: the first view of each face is always run; the further views and, for a model
    trained to average each face with its mirror image, the mirror images of every view are run only for
    faces whose first answer's top probability is below this, and all answers averaged; ``None`` does it
    for every face.

    ``passes``: at most this many model runs per face (1 to MAX_PASSES; None: all the model offers), taken
    in the order of ``pass_order()``: the first view, its mirror image, the first further view, its mirror
    image, ... One pass costs ``macs_per_pass()`` multiply-accumulates.
    """

    def __init__(self, path: str | os.PathLike | None = None, threads: int = 1,
                 skip_mirror_at: float | None = SKIP_MIRROR_AT, passes: int | None = None,
                 soft_margin: float = SOFT_MARGIN):
        self.path = resolve_model_path(path)
        data = self.path.read_bytes()
        try:
            self.meta = modelfile.read_metadata(data)
        except ModelFileError as exc:
            raise ModelFileError(f"{self.path}: {exc}") from None
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.name = self.meta.get("name") or self.path.stem
        self.labels = list(self.meta["labels"])
        self.size = int(self.meta["input"]["size"])
        self.channels = int(self.meta["input"]["channels"])
        self.margin = float(self.meta.get("crop_margin", 0.0))
        self.blur = self.meta.get("blur") or None
        self.flip_average = bool(self.meta.get("flip_average", False))
        self.fraction = float(self.meta.get("face_fraction", 1.0))
        self.views = tuple(float(f) for f in self.meta.get("view_fractions", ()))
        self.geometry = FaceGeometry(self.size, self.channels, self.margin, self.blur, self.fraction, self.views)
        self.skip_mirror_at = skip_mirror_at
        self.soft_margin = float(soft_margin)
        if passes is not None and not valid_passes(passes):
            raise SetupError(f"--passes {passes!r}: must be {PASSES_WANTED}")
        self.passes = None if passes is None else int(passes)
        self._macs = None
        self.invocations = 0                # interpreter runs so far (one per face, plus those averaged in)
        self.run_seconds = 0.0              # time spent in those runs
        norm = self.meta["normalization"]
        self._mean, self._std = float(norm["mean"]), float(norm["std"])
        self.backend, cls = interpreter_class()
        try:
            self._interp = _build_interpreter(cls, data, threads)
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{self.path}: the interpreter rejected the model ({exc})") from None
        self.threads = threads
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        self._in, self._out = inp, out
        shape = list(inp["shape"])
        if len(shape) != 4 or shape[1] != self.size or shape[2] != self.size or shape[3] != self.channels:
            raise ModelFileError(f"{self.path}: input tensor {shape} does not match the metadata "
                                 f"({self.size}x{self.size}x{self.channels})")
        if int(out["shape"][-1]) != len(self.labels):
            raise ModelFileError(f"{self.path}: {out['shape'][-1]} outputs but {len(self.labels)} labels")
        self.input_dtype = np.dtype(inp["dtype"])
        self.output_dtype = np.dtype(out["dtype"])
        self.quantized = self.input_dtype in (np.int8, np.uint8)
        if int(shape[0]) != 1:
            self._interp.resize_tensor_input(inp["index"], [1, self.size, self.size, self.channels])
            self._interp.allocate_tensors()
        self._lut = self._input_table()

    def info(self) -> dict:
        from . import cost
        try:
            macs = self.macs_per_pass()
        except cost.CostUnavailable:
            macs = None
        return {**{k: v for k, v in self.meta.items()}, "file": str(self.path), "sha256": self.sha256,
                "bytes": self.path.stat().st_size, "input_dtype": str(self.input_dtype),
                "output_dtype": str(self.output_dtype), "runtime": self.backend,
                "macs_per_pass": macs, "max_passes": self.max_passes()}

    def macs_per_pass(self) -> dict:
        """Multiply-accumulates of one pass, counted from the graph's CONV_2D, DEPTHWISE_CONV_2D and
        FULLY_CONNECTED ops: {"total": n, op name: n, ...} (``edgeemo.cost.count_macs``)."""
        if self._macs is None:
            from . import cost
            self._macs = cost.count_macs(self._interp)
        return self._macs

    def pass_order(self, n_views: int | None = None, cut: bool = True) -> list[tuple[int, bool]]:
        """The looks at a face, in the order they are run: (view index, mirrored); view 0 is the model's own
        framing, 1.. its ``view_fractions``. Cut to ``passes`` unless ``cut`` is False."""
        n_views = 1 + len(self.views) if n_views is None else n_views
        order = [(v, m) for v in range(n_views) for m in ((False, True) if self.flip_average else (False,))]
        return order[:self.passes] if self.passes and cut else order

    def offered_passes(self) -> int:
        """Model runs per face that this model's averaging offers (``passes`` left aside)."""
        return len(self.pass_order(cut=False))

    def max_passes(self) -> int:
        """Model runs per face at most, with this model's averaging and the ``passes`` knob."""
        return len(self.pass_order())

    def _input_table(self) -> np.ndarray:
        """The model's input value for each pixel value 0..255: normalised, and quantised with the input
        tensor's scale and zero point for int8 models. One table lookup per face then does it all."""
        return self._quantize(np.arange(256, dtype=np.float32))

    def _quantize(self, pixels: np.ndarray) -> np.ndarray:
        x = (pixels - np.float32(self._mean)) / np.float32(self._std)
        if not self.quantized:
            return x.astype(self.input_dtype)
        scale, zero = self._in["quantization"]
        info = np.iinfo(self.input_dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(self.input_dtype)

    def _dequantize_output(self, y: np.ndarray) -> np.ndarray:
        if self.output_dtype in (np.int8, np.uint8):
            scale, zero = self._out["quantization"]
            return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
        return y.astype(np.float32)

    def predict(self, faces: np.ndarray, more_views=None) -> np.ndarray:
        faces = np.asarray(faces)
        if faces.ndim == 3:
            faces = faces[..., None]
        views = faces[:, None] if faces.ndim == 4 else faces
        if views.ndim != 5 or views.shape[2:] != (self.size, self.size, self.channels):
            raise ValueError(f"faces must be (N, {self.size}, {self.size}, {self.channels}) or (N, views, "
                             f"{self.size}, {self.size}, {self.channels}), got {faces.shape}")
        if views.shape[0] == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        first = self._inputs(views[:, 0])
        out = self._run(first)
        order = self.pass_order(views.shape[1] if more_views is None or views.shape[1] > 1 else None)
        if len(order) > 1:
            alone = np.zeros(len(out), np.float32) if self.skip_mirror_at is None else \
                first_weight(out.max(axis=1), self.skip_mirror_at, self.soft_margin)
            todo = np.flatnonzero(alone < 1)
            if len(todo):
                # Averaged in where unsure: the model was trained on mirrored faces and on faces cut at
                # several scales, so each view (and its mirror image) is another look at the same face.
                if any(v for v, _ in order):
                    further = views[todo, 1:] if more_views is None or views.shape[1] > 1 \
                        else np.asarray(more_views(todo))
                    if further.shape[2:] != views.shape[2:] or len(further) != len(todo):
                        raise ValueError(f"more_views gave views shaped {further.shape}; expected ({len(todo)}, "
                                         f"views, {self.size}, {self.size}, {self.channels}) for the faces it "
                                         "was given")
                answers, inputs = [out[todo]], {0: first[todo]}
                for v, mirrored in order[1:]:
                    if v not in inputs:
                        inputs[v] = self._inputs(further[:, v - 1])
                    answers.append(self._run(inputs[v][:, :, ::-1] if mirrored else inputs[v]))
                w = alone[todo, None]
                out[todo] = w * out[todo] + (1 - w) * np.mean(answers, axis=0)
        return out

    def _inputs(self, faces: np.ndarray) -> np.ndarray:
        return self._lut[faces] if faces.dtype == np.uint8 else self._quantize(faces.astype(np.float32))

    def _run(self, x: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        raw = np.empty((x.shape[0], len(self.labels)), self.output_dtype)
        # One face per invoke: the tensors stay allocated for batch 1, the common case on a device (a
        # larger batch costs the same per face here: the model's arithmetic dominates).
        for i in range(x.shape[0]):
            self._interp.set_tensor(self._in["index"], np.ascontiguousarray(x[i:i + 1]))
            self._interp.invoke()
            raw[i] = self._interp.get_tensor(self._out["index"])[0]
        self.invocations += x.shape[0]
        self.run_seconds += time.perf_counter() - t0
        return self._dequantize_output(raw)
