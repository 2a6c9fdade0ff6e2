"""Int8 file -> float Keras model: the way back from ``quantize``, to train on from a model that shipped.

A full-int8 TFLite file of a res40-type recipe keeps every convolution's kernel (int8, one scale per output
channel) with its batch normalisation folded in as a bias (int32). ``float_model`` dequantizes them into the
recipe's Keras model and sets each batch normalisation so that it adds that bias and nothing else, both at
inference and when training normalises by the batch: its moving mean and variance are the convolution's own
output statistics on the faces given, gamma their standard deviation and beta mean + bias. The float model
answers as the int8 file does (version 3 of the default model: 99.1% the same top-1 answers on FER2013
`val/`), and ``edgeemo train --init FILE.tflite`` fine-tunes it like any trained start.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import archs
from .errors import LayersDoNotFit, ModelFileError

EPSILON = 1e-3          # Keras' BatchNormalization default, which the recipes use


def float_model(path, arch: str, faces: np.ndarray, option: str = "--init", num_classes: int = 7):
    """The ``arch`` Keras model (float32) with the weights of the TFLite file at ``path``.

    ``faces``: uint8 (N, size, size, channels) training faces at the model's input size, for the batch
    normalisation statistics (a couple of thousand are plenty). A file whose layers are not ``arch``'s, or
    that is no TFLite model, exits naming ``option`` and the file."""
    path = Path(path)
    layers_of_file = _weights(path, option)
    model = archs.build(arch, num_classes, faces.shape[1], faces.shape[3])
    layers = [lay for lay in model.layers if type(lay).__name__ in ("Conv2D", "Dense")]
    mismatch = LayersDoNotFit(f"{option} {path}: its layers do not fit the {arch} recipe ({len(layers_of_file)} "
                               f"convolution and dense layers, the recipe has {len(layers)}; give the --arch it was "
                               f"trained with)")
    if len(layers) != len(layers_of_file):
        raise mismatch
    # Keras lists layers in its own topological order (a block's 3x3 convolution may come before its 1x1
    # shortcut): each layer takes the first unused one of the file with its kernel's shape. Layers of one
    # shape feed each other, so both orders keep them in the same sequence.
    bias, used = {}, set()
    for layer in layers:
        dense = type(layer).__name__ == "Dense"
        want = tuple(layer.kernel.shape)
        k = next((i for i, (w, _) in enumerate(layers_of_file)
                  if i not in used and _keras_kernel(w, dense).shape == want), None)
        if k is None:
            raise mismatch
        used.add(k)
        w, b = layers_of_file[k]
        layer.set_weights([_keras_kernel(w, dense), b] if dense else [_keras_kernel(w, dense)])
        bias[id(layer)] = b
    norms = [lay for lay in model.layers if type(lay).__name__ == "BatchNormalization"]
    convs = [next(c for c in layers if c.output is bn.input) for bn in norms]
    for bn, conv in zip(norms, convs):        # first the bias alone (mean 0, variance 1), so that each
        c = len(bias[id(conv)])               # convolution's statistics are measured on the true network
        bn.set_weights([np.full(c, np.sqrt(1.0 + EPSILON), np.float32), bias[id(conv)],
                        np.zeros(c, np.float32), np.ones(c, np.float32)])
    stats = _channel_stats(model, [c.output for c in convs], faces)
    for bn, conv, (mean, var) in zip(norms, convs, stats):
        bn.set_weights([np.sqrt(var + EPSILON), mean + bias[id(conv)], mean, var])
    return model


def _weights(path: Path, option: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(kernel, bias)] of each CONV_2D and FULLY_CONNECTED op, in the file's order, as float32."""
    from edgeemo.runtime import interpreter_class
    if not path.is_file():
        raise ModelFileError(f"{option} {path}: no such model file")
    try:
        interp = interpreter_class()[1](model_path=str(path))
        interp.allocate_tensors()
        ops = interp._get_ops_details()     # the runtime's only listing of ops and their weight tensors
    except Exception as exc:   # noqa: BLE001 - any unreadable file gets the same clear message
        raise ModelFileError(f"{option} {path}: not a TFLite model this runtime can read ({exc})") from exc
    details = {t["index"]: t for t in interp.get_tensor_details()}

    def value(i):
        v = interp.get_tensor(i).astype(np.float64)
        q = details[i]["quantization_parameters"]
        scales, zeros = q["scales"], q["zero_points"]
        if len(scales) == 0:             # a float file
            return v.astype(np.float32)
        shape = [1] * v.ndim
        if len(scales) > 1:
            shape[q["quantized_dimension"]] = -1
        return ((v - zeros.reshape(shape)) * scales.reshape(shape)).astype(np.float32)

    return [(value(op["inputs"][1]), value(op["inputs"][2])) for op in ops
            if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED") and len(op["inputs"]) >= 3]


def _keras_kernel(w: np.ndarray, dense: bool) -> np.ndarray:
    """TFLite's (out, h, w, in) convolution or (out, in) dense kernel in Keras' layout."""
    return w.T if dense else np.transpose(w, (1, 2, 3, 0))


def _channel_stats(model, outputs, faces: np.ndarray, batch: int = 256):
    """Per-channel mean and variance of each of ``outputs`` (float64 sums over every pixel of every face)."""
    import keras
    probe = keras.Model(model.input, outputs)
    sums = None
    for i in range(0, len(faces), batch):
        got = probe(faces[i:i + batch].astype(np.float32) / 255.0, training=False)
        got = [np.asarray(g, np.float64).reshape(-1, g.shape[-1]) for g in got]
        part = [(len(g), g.sum(0), (g * g).sum(0)) for g in got]
        sums = part if sums is None else [(a[0] + b[0], a[1] + b[1], a[2] + b[2]) for a, b in zip(sums, part)]
    out = []
    for n, s, s2 in sums:
        mean = s / n
        out.append((mean.astype(np.float32), np.maximum(s2 / n - mean * mean, 0.0).astype(np.float32)))
    return out
