"""The options several commands share, declared once: the values they take, their help, and (for typer)
their declarations.

classify, watch, evaluate, train, convert and study take the detector options; classify, watch and evaluate
take --model and --passes; the watch settings (edgeemo.config.WatchSettings) use the same help. Strings and
typer declarations only: importing this costs nothing (no numpy, no model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


DEFAULT_MODEL_NAME = "edgeemo-default.tflite"

# The models shipped inside the package, by the names --model takes (``--model fast``). A file of the same
# name in the working folder is reached as ./fast.
SHIPPED_MODELS = {"default": DEFAULT_MODEL_NAME, "fast": "edgeemo-fast.tflite"}
# The most model passes one face can get: the first view, its mirror image, and two further views, each
# mirrored (the shipped default's full averaging). ``passes`` (the --passes knob) is 1 up to this.
MAX_PASSES = 6

DETECTOR_HELP = ("Face detector: auto (YuNet if its ONNX file is found, else Haar), yunet, haar, none (pre-cropped "
                 "faces).")
DETECTOR_MODEL_HELP = "YuNet ONNX file (face_detection_yunet_*.onnx) [$EDGEEMO_YUNET_MODEL]."
MODEL_HELP = ("A .tflite file, or a model shipped with edgeemo: default (the most accurate) or fast (about a "
              "sixth of the default's cost per pass, less accurate). [default]")
PASSES_HELP = ("Averaging: at most this many model passes per face, from 1 (one look, the cheapest) to 6 (the "
               "face, its mirror image and two further crops, each mirrored; the default model's full averaging). "
               "Faces the model is already sure of get one pass. [all the model offers]")

# `name: Detector = "auto"`: the same option, help and short flag in every command that takes it
Detector = Annotated[str, typer.Option("--detector", "-d", help=DETECTOR_HELP)]
DetectorModel = Annotated[Optional[Path], typer.Option("--detector-model", envvar="EDGEEMO_YUNET_MODEL",
                                                       help=DETECTOR_MODEL_HELP)]
Passes = Annotated[Optional[int], typer.Option("--passes", help=PASSES_HELP)]
