"""Result records: one per image, the same schema for `classify`, `watch` and the Python API.

JSON Lines record::

    {"file", "sha256", "status": "ok"|"no_face"|"unreadable"|"error", "error", "width", "height",
     "faces": [{"box": [x, y, w, h], "score", "label", "confidence", "probs": {label: p}}],
     "model": {"name", "sha256"}, "time"}

plus ``frame_time`` and ``frame`` for video and camera frames (``camera`` for a camera's), and in their
faces ``track``, ``track_label``, ``track_confidence`` and ``classified`` (``edgeemo.track``), ``size`` and ``mtime_ns`` of the input file for ``classify`` (what
``--resume`` compares), ``device`` in records gathered by ``edgeemo collect``. ``edgeemo.results`` encodes records as JSON Lines and CSV.
"""
from __future__ import annotations

import datetime as _dt
from collections import Counter

STATUSES = ("ok", "no_face", "unreadable", "error")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def make_record(file, sha256=None, status="ok", error=None, width=None, height=None, faces=None,
                model=None, **extra) -> dict:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    rec = {"file": None if file is None else str(file), "sha256": sha256, "status": status, "error": error,
           "width": width, "height": height, "faces": faces or [],
           "model": model or {"name": None, "sha256": None}, "time": now_iso()}
    rec.update(extra)
    return rec


def summary(rec: dict) -> str:
    """'3 faces: happy 2, neutral 1', or the status."""
    faces = rec.get("faces") or []
    if rec["status"] != "ok":
        return rec["status"].replace("_", " ")
    labels = Counter(f["label"] for f in faces)
    return (f"{len(faces)} face{'s' if len(faces) != 1 else ''}: "
            + ", ".join(f"{lab} {n}" for lab, n in labels.most_common()))


# --- the one record validator ------------------------------------------------------------------------------------
# Every reader of result records (edgeemo collect, classify --resume, edgeemo report) takes a record only if it has
# the shape above; anything else is refused with the field that is wrong, never half-used.

MAX_TEXT = 4096                 # a file name, an error message, a device name...
MAX_FACES = 1000
MAX_LABELS = 64
MAX_SIDE = 1_000_000            # pixels


class RecordError(ValueError):
    """Not an edgeemo result record: the message names the field."""


def _text(rec: dict, key: str, optional: bool = True, limit: int = MAX_TEXT) -> None:
    v = rec.get(key)
    if v is None and optional:
        return
    if not isinstance(v, str) or len(v) > limit:
        raise RecordError(f"{key!r} must be {'null or ' if optional else ''}a string of at most {limit} characters")


def _number(v, what: str, lo: float, hi: float, integer: bool = False):
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if not ok or isinstance(v, bool) or not (lo <= v <= hi):       # NaN fails lo <= v; inf fails v <= hi
        raise RecordError(f"{what} must be {'an integer' if integer else 'a number'} from {lo:g} to {hi:g}")
    return v


def check(rec) -> dict:
    """``rec`` itself if it is a result record of the shape above (extra keys allowed), else RecordError."""
    if not isinstance(rec, dict):
        raise RecordError("a record must be a JSON object")
    if rec.get("status") not in STATUSES:
        raise RecordError(f"'status' must be one of {', '.join(STATUSES)}")
    for key in ("file", "sha256", "error", "time", "device", "id"):
        _text(rec, key)
    ft = rec.get("frame_time")          # a camera's UTC time, or seconds from a video's start
    if ft is not None and not isinstance(ft, str):
        _number(ft, "'frame_time'", 0, 1e9)
    elif ft is not None:
        _text(rec, "frame_time")
    if rec.get("frame") is not None:
        _number(rec["frame"], "'frame'", 0, 2**53, integer=True)
    for key in ("width", "height"):
        if rec.get(key) is not None:
            _number(rec[key], repr(key), 0, MAX_SIDE, integer=True)
    for key in ("size", "mtime_ns"):
        if rec.get(key) is not None:
            _number(rec[key], repr(key), -2**63, 2**63 - 1, integer=True)
    model = rec.get("model")
    if model is not None:
        if not isinstance(model, dict):
            raise RecordError("'model' must be an object")
        _text(model, "name")
        _text(model, "sha256")
    faces = rec.get("faces", [])
    if not isinstance(faces, list) or len(faces) > MAX_FACES:
        raise RecordError(f"'faces' must be a list of at most {MAX_FACES}")
    for i, face in enumerate(faces):
        _check_face(face, i)
    return rec


def _check_face(face, i: int) -> None:
    where = f"faces[{i}]"
    if not isinstance(face, dict):
        raise RecordError(f"{where} must be an object")
    box = face.get("box")
    if not isinstance(box, list) or len(box) != 4:
        raise RecordError(f"{where}.box must be a list of 4 integers")
    for v in box:
        _number(v, f"{where}.box", -MAX_SIDE, MAX_SIDE, integer=True)
    for key in ("score", "confidence"):
        if face.get(key) is not None or key == "confidence":
            _number(face.get(key), f"{where}.{key}", 0.0, 1.0)
    _text(face, "label", optional=False, limit=MAX_LABELS)
    if face.get("track") is not None:
        _number(face["track"], f"{where}.track", 0, 2**53, integer=True)
    if face.get("track_label") is not None:
        _text(face, "track_label", limit=MAX_LABELS)
    if face.get("track_confidence") is not None:
        _number(face["track_confidence"], f"{where}.track_confidence", 0.0, 1.0)
    if face.get("classified") is not None and not isinstance(face["classified"], bool):
        raise RecordError(f"{where}.classified must be true or false")
    probs = face.get("probs")
    if probs is not None:
        if not isinstance(probs, dict) or len(probs) > MAX_LABELS:
            raise RecordError(f"{where}.probs must be an object of at most {MAX_LABELS} labels")
        for k, v in probs.items():
            if len(k) > MAX_LABELS:
                raise RecordError(f"{where}.probs has a label longer than {MAX_LABELS} characters")
            _number(v, f"{where}.probs[{k[:20]!r}]", 0.0, 1.0)
