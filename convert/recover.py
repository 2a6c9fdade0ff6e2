"""Int8 file -> float Keras model: the way back from ``quantize``, to train on from a model that shipped.

A full-int8 TFLite file of a res40-type recipe (or of a depthwise-separable fast recipe, whose depthwise
convolutions come back the same way) keeps every convolution's kernel (int8, one scale per output
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
KINDS = {"Conv2D": "CONV_2D", "DepthwiseConv2D": "DEPTHWISE_CONV_2D", "Dense": "FULLY_CONNECTED"}  # Keras: TFLite


def float_model(path, arch: str, faces: np.ndarray, option: str = "--init", num_classes: int = 7):
    """The ``arch`` Keras model (float32) with the weights of the TFLite file at ``path``.

    ``faces``: uint8 (N, size, size, channels) training faces at the model's input size, for the batch
    normalisation statistics (a couple of thousand are plenty). A file whose layers are not ``arch``'s, or
    that is no TFLite model, exits naming ``option`` and the file."""
    path = Path(path)
    layers_of_file = _weights(path, option)
    model = archs.build(arch, num_classes, faces.shape[1], faces.shape[3])
    layers = [lay for lay in model.layers if type(lay).__name__ in KINDS]
    mismatch = LayersDoNotFit(f"{option} {path}: its layers do not fit the {arch} recipe ({len(layers_of_file)} "
                               f"convolution and dense layers, the recipe has {len(layers)}; give the --arch it was "
                               f"trained with)")
    if len(layers) != len(layers_of_file):
        raise mismatch
    # Keras lists layers in its own topological order, which need not be the file's (a block's 1x1 shortcut
    # may come before or after its other convolutions, and may have the same kernel shape as one of them):
    # each layer takes the first unused op of the file of its kind and kernel shape whose inputs come from
    # the ops its own inputs come from (the nearest weighted layers upstream, through batch norms,
    # activations, adds and pooling), so the two graphs are matched by their wiring, not by their order.
    upstream = _keras_upstream(model, layers)
    bias, used, match = {}, set(), {}
    for layer in layers:
        kind = KINDS[type(layer).__name__]
        want = tuple(layer.kernel.shape)
        wired = {match[id(u)] for u in upstream[id(layer)]}
        k = next((i for i, (op, w, _, up) in enumerate(layers_of_file)
                  if i not in used and op == kind and _keras_kernel(w, kind).shape == want and up == wired), None)
        if k is None:
            raise mismatch
        used.add(k)
        match[id(layer)] = k
        _, w, b, _ = layers_of_file[k]
        dense = kind == "FULLY_CONNECTED"
        layer.set_weights([_keras_kernel(w, kind), b] if dense else [_keras_kernel(w, kind)])
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


def _keras_upstream(model, layers) -> dict[int, list]:
    """For each of ``layers`` (by id): the nearest of ``layers`` its input comes from, through any others."""
    weighted = {id(lay) for lay in layers}

    def sources(tensor, seen):
        op = tensor._keras_history.operation
        if id(op) in weighted:
            return [op]
        out = []
        for node in op._inbound_nodes:
            for t in node.input_tensors:
                if id(t) not in seen:
                    seen.add(id(t))
                    out += sources(t, seen)
        return out
    return {id(lay): sources(lay.input, set()) for lay in layers}


def _weights(path: Path, option: str) -> list[tuple[str, np.ndarray, np.ndarray, set]]:
    """[(op name, kernel, bias, upstream)] of each CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED op, in the
    file's order, as float32; ``upstream``: the indices in this list of the nearest such ops its input comes
    from (through the ops between: adds, pooling, reshapes)."""
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

    weighted = [op for op in ops if op["op_name"] in KINDS.values() and len(op["inputs"]) >= 3]
    position = {op["index"]: n for n, op in enumerate(weighted)}
    producer = {t: op for op in ops for t in op["outputs"]}

    def upstream(tensor, seen) -> set:
        op = producer.get(tensor)
        if op is None or op["index"] in seen:
            return set()
        seen.add(op["index"])
        if op["index"] in position:
            return {position[op["index"]]}
        found = set()
        for t in op["inputs"]:
            if t >= 0 and t in producer:                 # activations only: weights have no producer
                found |= upstream(t, seen)
        return found
    return [(op["op_name"], value(op["inputs"][1]), value(op["inputs"][2]), upstream(op["inputs"][0], set()))
            for op in weighted]


def _keras_kernel(w: np.ndarray, kind: str) -> np.ndarray:
    """TFLite's (out, h, w, in) convolution, (1, h, w, channels) depthwise or (out, in) dense kernel in
    Keras' layout ((h, w, channels, 1) for a depthwise one: one filter per channel)."""
    if kind == "FULLY_CONNECTED":
        return w.T
    if kind == "DEPTHWISE_CONV_2D":
        return w[0][..., None]
    return np.transpose(w, (1, 2, 3, 0))


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
