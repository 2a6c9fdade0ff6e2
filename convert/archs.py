"""Named model recipes.

``seed-basic``, ``seed-dropout`` and ``seed-best`` are the three CNNs of the original JAFFE study, layer
by layer (128x128 RGB input there). ``edge`` and ``edge-small`` are edgeemo's own designs for full-int8
inference on ARM CPUs: 3x3 conv + BatchNorm + ReLU blocks (BatchNorm folds into the convolution at
conversion), max-pool downsampling, global average pooling, no Flatten-sized dense layer.

Every model takes float input already normalised to [0, 1] and ends in a softmax over the 7 labels.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    input_size: int
    channels: int          # 1 = gray, 3 = RGB
    description: str


RECIPES = {
    "seed-basic": Recipe("seed-basic", 128, 3, "study: 2 conv + dense 64 (37,349 params)"),
    "seed-dropout": Recipe("seed-dropout", 128, 3, "study: 3 conv + dropout + dense 64 (37,989 params)"),
    "seed-best": Recipe("seed-best", 128, 3, "study: LeNet-like, conv 6/16/120 + dense 84 (7,954,391 params)"),
    "edge": Recipe("edge", 48, 1, "edgeemo: 7 conv-BN-ReLU blocks 24-48-96-128, GAP (0.41 M params, ~50 M MACs)"),
    "edge24": Recipe("edge24", 24, 1, "edgeemo: 6 conv-BN-ReLU blocks 32-64-96-160 on 24x24 faces, GAP "
                     "(0.33 M params, ~15 M MACs); for blurred or low-resolution faces"),
    "edge-small": Recipe("edge-small", 48, 1, "edgeemo: 5 conv-BN-ReLU blocks 16-32-64-96, GAP (~0.1 M params)"),
    "res40": Recipe("res40", 40, 1, "edgeemo v2: stem 24 + residual stages 32-64-64-128 on 40x40 faces, GAP "
                    "(0.38 M params, ~63 M MACs); trained on random 36-48 px crops of 48x48 faces"),
    "res40d": Recipe("res40d", 40, 1, "res40 one residual block deeper at 10x10: stages 32-64-64x2-128 on 40x40 "
                     "faces, GAP (0.46 M params, ~71 M MACs); trained like res40"),
    "res40w": Recipe("res40w", 40, 1, "res40d at twice the width: stem 48 + stages 64-128-128x2-256 on 40x40 faces, "
                     "GAP (1.83 M params, ~284 M MACs); a teacher to distil into res40d, too big for the device budget"),
    "res40-small": Recipe("res40-small", 40, 1, "res40 at half width (16 + 16-32-32-64), for tests and smoke runs"),
    "fast40": Recipe("fast40", 40, 1, "the fast model's: 3x3 stem 16 at 40x40, a strided 3x3 conv to 48, then "
                     "depthwise-separable residual stages 48-96x2-192 at 20, 10 and 5 pixels, GAP "
                     "(~0.1 M params, ~11 M MACs); trained like res40"),
    "fast40d": Recipe("fast40d", 40, 1, "fast40 with a cheaper way down (a depthwise-separable strided conv "
                      "instead of a full one) and the multiply-adds saved spent deeper: stages 48-96x3-224 "
                      "(~0.17 M params, ~11.2 M MACs)"),
    "fast40-small": Recipe("fast40-small", 40, 1, "fast40 at a quarter width, for tests and smoke runs"),
    "tiny": Recipe("tiny", 48, 1, "2 conv layers, for tests and smoke runs only"),
}

# Recipes trained by edgeemo_convert.fasttrain: the training faces are loaded at SOURCE_SIZE and each batch
# is cut from them at random (scale, shift, rotation), so the model sees the face at ``input_size``.
# The res40 family: width multiplier and residual blocks per stage (stages 32-64-64-128 after a 24 stem).
RES40 = {"res40": (1.0, (1, 1, 1, 1)), "res40d": (1.0, (1, 1, 2, 1)), "res40w": (2.0, (1, 1, 2, 1)),
         "res40-small": (0.5, (1, 1, 1, 1))}
# The fast40 family: stem, the strided conv's width, then (width, depthwise-separable blocks) per stage, and
# whether the strided conv to 20 pixels is a full 3x3 conv or depthwise-separable.
FAST40 = {"fast40": (16, 48, ((48, 1), (96, 2), (192, 1)), "full"),
          "fast40d": (16, 48, ((48, 1), (96, 3), (224, 1)), "separable"),
          "fast40-small": (4, 12, ((12, 1), (24, 1), (48, 1)), "full")}
CROP_TRAINED = set(RES40) | set(FAST40)
SOURCE_SIZE = 48


def build(name: str, num_classes: int = 7, input_size: int | None = None, channels: int | None = None,
          for_training: bool = False):
    """Build the Keras model for a recipe; ``input_size``/``channels`` override the recipe's defaults.

    ``for_training`` (crop-trained recipes only) builds the training twin: bfloat16 mixed precision and
    fused batch normalisation, 2x faster on a CPU with AVX-512 BF16, with the same weights in the same
    order as the plain float32 model that is validated, saved and converted."""
    import keras

    if for_training:
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            return _build(name, num_classes, input_size, channels, fused_bn=True)
        finally:
            keras.mixed_precision.set_global_policy(previous)
    return _build(name, num_classes, input_size, channels, fused_bn=False)


def _build(name, num_classes, input_size, channels, fused_bn):
    import keras
    from keras import layers

    if fused_bn:
        layers = _FusedLayers(layers)

    if name not in RECIPES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(RECIPES)}")
    r = RECIPES[name]
    size = input_size or r.input_size
    ch = channels or r.channels
    inp = keras.Input((size, size, ch), name="face")
    x = inp

    if name == "seed-basic":
        x = layers.Conv2D(5, 5, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(3)(x)
        x = layers.Conv2D(15, 5, strides=3)(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(64)(x)
        x = layers.ReLU()(x)
    elif name == "seed-dropout":
        x = layers.Conv2D(5, 5, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(3)(x)
        x = layers.Dropout(0.25)(x)
        x = layers.Conv2D(15, 5, strides=3)(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(80, 5)(x)
        x = layers.ReLU()(x)
        # The study lists no pooling here, but its reported 37,989 parameters need a 1x1x80 map before
        # Flatten (2x2x80 would give 53,349): a 2x2 max-pool after this conv reproduces the figure exactly.
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.25)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(64)(x)
        x = layers.ReLU()(x)
    elif name == "seed-best":
        x = layers.Conv2D(6, 5, padding="same")(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(16, 5, padding="same")(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(120, 5)(x)
        x = layers.ReLU()(x)
        x = layers.Dropout(0.25)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(84)(x)
        x = layers.ReLU()(x)
        x = layers.Dropout(0.5)(x)
    elif name in RES40:
        scale, blocks = RES40[name]
        x = _conv_bn(layers, x, int(24 * scale), 1, relu=True)
        for i, (filters, n) in enumerate(zip((32, 64, 64, 128), blocks)):
            for b in range(n):
                x = _residual(layers, x, int(filters * scale), stride=2 if i > 0 and b == 0 else 1)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(0.2)(x)
    elif name in FAST40:
        stem, wide, stages, down = FAST40[name]
        x = _conv_bn(layers, x, stem, 1, relu=True)
        x = (_conv_bn if down == "full" else _separable)(layers, x, wide, 2, relu=True)
        for i, (filters, n) in enumerate(stages):
            for b in range(n):
                x = _residual(layers, x, filters, stride=2 if i > 0 and b == 0 else 1, conv=_separable)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(0.2)(x)
    elif name in ("edge", "edge24", "edge-small", "tiny"):
        plan = {
            "edge": [(24, 1), (48, 2), (96, 2), (128, 2)],
            "edge24": [(32, 1), (64, 2), (96, 2), (160, 1)],
            "edge-small": [(16, 1), (32, 1), (64, 2), (96, 1)],
            "tiny": [(8, 1), (16, 1)],
        }[name]
        for stage, (filters, reps) in enumerate(plan):
            for _ in range(reps):
                x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
                x = layers.BatchNormalization()(x)
                x = layers.ReLU()(x)
            if stage < len(plan) - 1:
                x = layers.MaxPooling2D(2)(x)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(0.4 if name in ("edge", "edge24") else 0.2)(x)
    out = layers.Dense(num_classes, activation="softmax", name="probs", dtype="float32")(x)
    return keras.Model(inp, out, name=name.replace("-", "_"))


def _conv_bn(layers, x, filters: int, stride: int, relu: bool, kernel: int = 3):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x) if relu else x


def _residual(layers, x, filters: int, stride: int, conv=None):
    """Basic ResNet block: two 3x3 conv-BN, a 1x1 conv-BN shortcut where the shape changes, ReLU after the sum.
    ``conv`` builds each 3x3 conv-BN: ``_conv_bn`` (the default), or ``_separable`` for the block with both
    convs depthwise-separable (a ninth of the multiply-adds or less)."""
    conv = conv or _conv_bn
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(layers, x, filters, stride, relu=False, kernel=1)
    y = conv(layers, x, filters, stride, relu=True)
    y = conv(layers, y, filters, 1, relu=False)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def _separable(layers, x, filters: int, stride: int, relu: bool):
    """3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN (ReLU if ``relu``)."""
    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    return _conv_bn(layers, x, filters, 1, relu=relu, kernel=1)



class _FusedLayers:
    """``keras.layers`` with BatchNormalization swapped for the fused TensorFlow kernel."""

    def __init__(self, layers):
        self._layers = layers

    def __getattr__(self, name):
        if name == "BatchNormalization":
            return lambda **kw: _fused_bn_class()(**kw)
        return getattr(self._layers, name)


_FUSED = None


def _fused_bn_class():
    """A BatchNormalization layer on ``tf.compat.v1.nn.fused_batch_norm`` (Keras 3's own layer computes the
    moments op by op: a third of a training step here). Weights: gamma, beta, moving mean and variance, in
    Keras' order; momentum 0.99 and epsilon 1e-3, Keras' defaults. Statistics stay in float32 under
    mixed precision."""
    global _FUSED
    if _FUSED is None:
        import keras
        import tensorflow as tf

        class FusedBatchNorm(keras.layers.Layer):
            def build(self, shape):
                c = shape[-1]
                self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
                self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")
                self.moving_mean = self.add_weight(shape=(c,), initializer="zeros", trainable=False,
                                                   name="moving_mean")
                self.moving_variance = self.add_weight(shape=(c,), initializer="ones", trainable=False,
                                                       name="moving_variance")

            def call(self, x, training=False):
                # ._value: the float32 variables themselves, not the bfloat16 autocast copies
                g, b = self.gamma._value, self.beta._value
                if training:
                    y, mean, var = tf.compat.v1.nn.fused_batch_norm(x, g, b, epsilon=1e-3, is_training=True)[:3]
                    self.moving_mean.assign(0.99 * self.moving_mean._value + 0.01 * mean)
                    self.moving_variance.assign(0.99 * self.moving_variance._value + 0.01 * var)
                    return y
                return tf.compat.v1.nn.fused_batch_norm(x, g, b, self.moving_mean._value,
                                                        self.moving_variance._value, epsilon=1e-3,
                                                        is_training=False)[0]

        _FUSED = FusedBatchNorm
    return _FUSED


def multiply_adds(model) -> int:
    """Multiply-adds of one forward pass of a Keras model: convolutions and dense layers (batch norm folds
    into the convolutions at conversion; pooling, adds and activations are not counted)."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            kh, kw = layer.kernel_size
            _, h, w, c_out = layer.output.shape
            total += h * w * kh * kw * layer.input.shape[-1] * c_out // layer.groups
        elif kind == "DepthwiseConv2D":
            kh, kw = layer.kernel_size
            _, h, w, c_out = layer.output.shape
            total += h * w * kh * kw * c_out
        elif kind == "Dense":
            total += layer.input.shape[-1] * layer.units
    return int(total)
