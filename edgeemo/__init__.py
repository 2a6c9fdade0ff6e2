"""edgeemo: facial-emotion classification on edge devices.

    import edgeemo
    clf = edgeemo.Classifier()                 # default int8 model, face detector "auto"
    record = clf.classify_image("photo.jpg")

Importing edgeemo is cheap and never imports TensorFlow; the runtime loads at first use.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .labels import LABELS

__all__ = ["LABELS", "Classifier", "Model", "__version__"]


def __getattr__(name):
    if name == "Classifier":
        from .pipeline import Classifier
        return Classifier
    if name == "Model":
        from .runtime import Model
        return Model
    raise AttributeError(f"module 'edgeemo' has no attribute {name!r}")
