"""Result records: one per image, the same schema for `classify`, `watch` and the Python API.

JSON Lines record::

    {"file", "sha256", "status": "ok"|"no_face"|"unreadable"|"error", "error", "width", "height",
     "faces": [{"box": [x, y, w, h], "score", "label", "confidence", "probs": {label: p}}],
     "model": {"name", "sha256"}, "time"}

plus ``frame_time`` for camera frames, ``size`` and ``mtime_ns`` of the input file for ``classify`` (what
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
