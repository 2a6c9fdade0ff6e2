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
    "tiny": Recipe("tiny", 48, 1, "2 conv layers, for tests and smoke runs only"),
}


def build(name: str, num_classes: int = 7, input_size: int | None = None, channels: int | None = None):
    """Build the Keras model for a recipe; ``input_size``/``channels`` override the recipe's defaults."""
    import keras
    from keras import layers

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
    out = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name=name.replace("-", "_"))
