"""Result records: one per image, the same schema for `classify`, `watch` and the Python API.

JSON Lines record::

    {"file", "sha256", "status": "ok"|"no_face"|"unreadable"|"error", "error", "width", "height",
     "faces": [{"box": [x, y, w, h], "score", "label", "confidence", "probs": {label: p}}],
     "model": {"name", "sha256"}, "time"}

plus ``frame_time`` for camera frames. CSV: one row per face, or one row with empty face fields for an
image with no face or an error; the columns are ``CSV_COLUMNS`` (probabilities as ``p_<label>``).
"""
from __future__ import annotations

import datetime as _dt

STATUSES = ("ok", "no_face", "unreadable", "error")
CSV_BASE_COLUMNS = ("time", "file", "sha256", "status", "error", "width", "height", "face",
                    "x", "y", "w", "h", "score", "label", "confidence")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


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


def csv_columns(labels) -> list[str]:
    return list(CSV_BASE_COLUMNS) + [f"p_{lab}" for lab in labels]


def escape_cell(value) -> str:
    """A CSV cell that a spreadsheet will not run as a formula: text starting = + - @ gets a leading '."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    s = str(value)
    if s.startswith(_FORMULA_START) and not _is_number(s):
        return "'" + s
    return s


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def csv_rows(rec: dict, labels) -> list[list[str]]:
    base = [rec.get("time"), rec.get("file"), rec.get("sha256"), rec.get("status"), rec.get("error"),
            rec.get("width"), rec.get("height")]
    faces = rec.get("faces") or []
    if not faces:
        return [[escape_cell(v) for v in base] + [""] * (len(CSV_BASE_COLUMNS) - len(base) + len(labels))]
    rows = []
    for i, f in enumerate(faces):
        x, y, w, h = f["box"]
        probs = f.get("probs", {})
        row = base + [i, x, y, w, h, f.get("score"), f.get("label"), f.get("confidence")]
        row += [probs.get(lab) for lab in labels]
        rows.append([escape_cell(v) for v in row])
    return rows
