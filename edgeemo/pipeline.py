"""The whole device path: read image -> detect faces -> crop and normalise -> int8 inference -> record.

    >>> import edgeemo
    >>> clf = edgeemo.Classifier()                      # the default model, detector "auto"
    >>> rec = clf.classify_image("photo.jpg")           # or a numpy array (gray, BGR, BGRA)
    >>> [f["label"] for f in rec["faces"]]

Bad input never raises: the record's ``status`` is ``unreadable`` or ``error`` and ``error`` says why.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from . import crop, imageio
from .detect import DETECTORS, DetectOptions, make_detector
from .errors import SetupError
from .record import make_record
from .runtime import PASSES_WANTED, Model, valid_passes

log = logging.getLogger("edgeemo")


_DETECT = DetectOptions()


@dataclass(frozen=True)
class ClassifierOptions:
    """Everything that sets up a Classifier, with its defaults and checks in one place. The CLI, the daemon's
    settings (``WatchSettings.classifier_options``) and Python code all build one; a bad value raises
    SetupError naming the option."""
    model: str | os.PathLike | None = None          # None: $EDGEEMO_MODEL, else the shipped model
    detector: str = "auto"
    detector_model: str | os.PathLike | None = None
    threads: int = 1
    min_face: int = _DETECT.min_face
    max_faces: int = _DETECT.max_faces
    score_threshold: float = _DETECT.score_threshold
    passes: int | None = None                       # at most this many model passes per face; None: all

    def __post_init__(self):
        checks = (("detector", self.detector in DETECTORS, f"one of {', '.join(DETECTORS)}"),
                  ("threads", _whole(self.threads, 1), "an integer of at least 1"),
                  ("min-face", _whole(self.min_face, 1), "an integer of at least 1 (pixels)"),
                  ("max-faces", _whole(self.max_faces, 1), "an integer of at least 1"),
                  ("score-threshold", isinstance(self.score_threshold, (int, float))
                   and 0.0 < float(self.score_threshold) <= 1.0, "a number in (0, 1]"),
                  ("passes", self.passes is None or valid_passes(self.passes), PASSES_WANTED))
        for name, ok, want in checks:
            if not ok:
                raise SetupError(f"--{name} {getattr(self, name.replace('-', '_'))!r}: must be {want}")

    def detect_options(self) -> DetectOptions:
        return DetectOptions(self.min_face, self.max_faces, float(self.score_threshold))


def _whole(v, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


@dataclass
class Analysis:
    record: dict
    image: imageio.Image | None


class Classifier:
    """Classify the faces in pictures. Takes a ClassifierOptions, or the same settings as keywords."""

    def __init__(self, model: str | os.PathLike | Model | ClassifierOptions | None = None, detector: str = "auto",
                 detector_model: str | os.PathLike | None = None, threads: int = 1,
                 min_face: int = _DETECT.min_face, max_faces: int = _DETECT.max_faces,
                 score_threshold: float = _DETECT.score_threshold, max_pixels: int = imageio.MAX_PIXELS,
                 passes: int | None = None):
        given = model if isinstance(model, Model) else None
        opts = model if isinstance(model, ClassifierOptions) else ClassifierOptions(
            None if given else model, detector, detector_model, threads, min_face, max_faces, score_threshold,
            passes)
        self.options = opts
        self.model = given or Model(opts.model, opts.threads, passes=opts.passes)
        self.detector = make_detector(opts.detector, opts.detector_model, opts.detect_options())
        self.max_pixels = max_pixels
        self._model_ref = {"name": self.model.name, "sha256": self.model.sha256}

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    def classify_faces(self, pixels: np.ndarray, boxes) -> np.ndarray:
        """Probabilities (N, labels) for the faces in ``boxes``: each face at the model's own framing, and
        the further views its metadata names cut only for the faces the model is unsure of."""
        boxes = None if self.detector.precropped else list(boxes)
        g = self.model.geometry
        faces = crop.model_inputs(pixels, boxes, g)

        def more_views(idx):
            return crop.further_views(pixels, None if boxes is None else [boxes[i] for i in idx], g)
        return self.model.predict(faces, more_views=more_views)

    def record(self, file, status: str, *, error: str | None = None, image: imageio.Image | None = None,
               sha256: str | None = None, faces: list | None = None, **extra) -> dict:
        """The result record of one picture, built here for every outcome, including files rejected before
        they are read (``status`` unreadable or error, with ``error`` saying why)."""
        return make_record(file, sha256 or (image.sha256 if image else None), status, error,
                           image.width if image else None, image.height if image else None, faces,
                           self._model_ref, **extra)

    def analyze(self, source, *, data: bytes | None = None, **extra) -> Analysis:
        """Classify one image (path or array); returns the record and the decoded image (None on failure).
        ``data``: the file's bytes, already read by the caller (the record names ``source``)."""
        name = None if isinstance(source, np.ndarray) else str(source)
        image = None
        try:
            if name is None:
                image = imageio.from_array(source)
            elif data is not None:
                image = imageio.from_bytes(data, name, self.max_pixels)
            else:
                image = imageio.read_image(source, self.max_pixels)
            boxes = self.detector.detect(image.pixels)
            if not boxes:
                return Analysis(self.record(name, "no_face", image=image, **extra), image)
            probs = self.classify_faces(image.pixels, boxes)
            faces = []
            inv = 1.0 / image.scale            # boxes in the file's own pixels, also for a reduced decode
            for b, p in zip(boxes, probs):
                k = int(np.argmax(p))
                box = [b.x, b.y, b.w, b.h] if inv == 1.0 else [int(round(v * inv)) for v in (b.x, b.y, b.w, b.h)]
                faces.append({"box": box, "score": round(float(b.score), 4),
                              "label": self.labels[k], "confidence": round(float(p[k]), 4),
                              "probs": {lab: round(float(v), 4) for lab, v in zip(self.labels, p)}})
            return Analysis(self.record(name, "ok", image=image, faces=faces, **extra), image)
        except imageio.ImageError as exc:
            return Analysis(self.record(name, exc.status, error=str(exc), sha256=getattr(exc, "sha256", None),
                                        **extra), None)
        except MemoryError:
            return Analysis(self.record(name, "error", error=f"{name}: out of memory while processing this image",
                                        sha256=image.sha256 if image else None, **extra), None)
        except Exception as exc:  # noqa: BLE001 - a bad file must never stop a run
            log.debug("unexpected failure on %s", name, exc_info=True)
            return Analysis(self.record(name, "error", error=f"{name or 'array'}: {type(exc).__name__}: {exc}",
                                        image=image, **extra), None)

    def classify_image(self, source, **extra) -> dict:
        """The result record for one image path or numpy array."""
        return self.analyze(source, **extra).record
