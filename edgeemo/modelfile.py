"""Model metadata carried inside the .tflite file.

A TFLite flatbuffer has a list of named metadata entries, each pointing to a buffer. edgeemo stores one
entry named ``edgeemo`` holding UTF-8 JSON: labels, input size and colour, normalisation, face-crop margin,
training data and metrics, version. The file then travels alone.

Reading is done here with a small flatbuffer reader (standard library only), so it works with any
interpreter package. Writing rebuilds the flatbuffer with the schema module that ai-edge-litert ships.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from .errors import EdgeemoError
from .labels import LABELS

METADATA_NAME = "edgeemo"
FORMAT_VERSION = 1

DEFAULTS = {
    "format": FORMAT_VERSION,
    "name": "unnamed",
    "version": "0",
    "labels": list(LABELS),
    "input": {"size": 48, "channels": 1, "color": "gray"},
    # model input = (pixel - mean) / std, pixels 0..255
    "normalization": {"mean": 0.0, "std": 255.0},
    "crop_margin": 0.15,
    # The central fraction of the face frame (the detector box enlarged by crop_margin, or a pre-cropped
    # picture) that the model sees: below 1 for a model trained on random crops of its faces.
    "face_fraction": 1.0,
    # Gaussian blur applied to each face at "at" x "at" pixels before it is resized to the input size,
    # for models trained on blurred pictures; None = no blur.
    "blur": None,
    # Average the probabilities of each face and its mirror image (test-time augmentation).
    "flip_average": False,
    # Further central fractions of the face frame, each like face_fraction: for a face whose first answer
    # is unsure, the answers at these fractions (and their mirror images with flip_average) are averaged in.
    "view_fractions": [],
    "dataset": {},
    "metrics": {},
}


class ModelFileError(EdgeemoError, ValueError):
    """The model file is missing, not a TFLite model, or carries unusable metadata."""


# --- a minimal flatbuffer reader (TFLite schema: Model.buffers = field 4, Model.metadata = field 6) ---

def _u32(buf, off):
    return struct.unpack_from("<I", buf, off)[0]


def _table_field(buf, table, field_index):
    """Absolute offset of a table field's value, or None if absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    vt_len = struct.unpack_from("<H", buf, vtable)[0]
    slot = 4 + 2 * field_index
    if slot >= vt_len:
        return None
    rel = struct.unpack_from("<H", buf, vtable + slot)[0]
    return table + rel if rel else None


def _deref(buf, off):
    return off + _u32(buf, off)


def _vector(buf, off):
    start = _deref(buf, off)
    return start + 4, _u32(buf, start)


def _string(buf, off):
    start, n = _vector(buf, off)
    return bytes(buf[start:start + n]).decode("utf-8", "replace")


def read_metadata_entries(buf: bytes) -> dict[str, bytes]:
    """All named metadata buffers of a TFLite flatbuffer."""
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelFileError("not a TFLite model (the file identifier TFL3 is missing)")
    root = _u32(buf, 0)
    meta_f = _table_field(buf, root, 6)
    bufs_f = _table_field(buf, root, 4)
    if meta_f is None or bufs_f is None:
        return {}
    bufs_start, n_bufs = _vector(buf, bufs_f)
    meta_start, n_meta = _vector(buf, meta_f)
    out = {}
    for i in range(n_meta):
        entry = _deref(buf, meta_start + 4 * i)
        name_f, index_f = _table_field(buf, entry, 0), _table_field(buf, entry, 1)
        if name_f is None or index_f is None:
            continue
        index = _u32(buf, index_f)
        if index >= n_bufs:
            continue
        b = _deref(buf, bufs_start + 4 * index)
        data_f = _table_field(buf, b, 0)
        if data_f is None:
            out[_string(buf, name_f)] = b""
            continue
        start, n = _vector(buf, data_f)
        out[_string(buf, name_f)] = bytes(buf[start:start + n])
    return out


def read_metadata(model: bytes | str | Path) -> dict:
    """edgeemo metadata of a model (bytes or path), merged over the defaults; ``embedded`` says whether
    the file carried its own."""
    buf = Path(model).read_bytes() if not isinstance(model, (bytes, bytearray)) else model
    raw = read_metadata_entries(buf).get(METADATA_NAME)
    meta = json.loads(json.dumps(DEFAULTS))
    if raw:
        try:
            found = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"the {METADATA_NAME!r} metadata is not valid JSON: {exc}") from exc
        meta.update(found)
    meta["embedded"] = bool(raw)
    validate(meta)
    return meta


def is_fraction(value) -> bool:
    """A usable central fraction of the face frame (``face_fraction``, each of ``view_fractions``): 0.25 to 1."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.25 <= float(value) <= 1.0


def validate(meta: dict) -> None:
    labels = meta.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ModelFileError("metadata 'labels' must be a non-empty list of names")
    inp = meta.get("input", {})
    if not isinstance(inp.get("size"), int) or inp["size"] < 8 or inp.get("channels") not in (1, 3):
        raise ModelFileError("metadata 'input' needs an integer size >= 8 and channels 1 or 3")
    norm = meta.get("normalization", {})
    if not float(norm.get("std", 0)):
        raise ModelFileError("metadata 'normalization.std' must be non-zero")
    if not is_fraction(meta.get("face_fraction", 1.0)):
        raise ModelFileError("metadata 'face_fraction' must be a number from 0.25 to 1")
    views = meta.get("view_fractions", [])
    if not isinstance(views, list) or not all(is_fraction(f) for f in views):
        raise ModelFileError("metadata 'view_fractions' must be a list of numbers from 0.25 to 1")
    blur = meta.get("blur")
    if blur is not None and (not isinstance(blur, dict) or float(blur.get("sigma", -1)) < 0
                             or int(blur.get("at", 0)) < 8):
        raise ModelFileError("metadata 'blur' must be {\"sigma\": >= 0, \"at\": face size >= 8} or null")


def embed_metadata(model: bytes, meta: dict) -> bytes:
    """Return a copy of the TFLite flatbuffer with ``meta`` stored as the ``edgeemo`` metadata buffer
    (replacing an earlier one)."""
    try:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover - both come with ai-edge-litert, a device dependency
        raise ModelFileError(f"writing model metadata needs ai-edge-litert ({exc}); pip install ai-edge-litert") from None

    clean = {k: v for k, v in meta.items() if k != "embedded"}
    validate({**DEFAULTS, **clean})
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    payload = json.dumps(clean, sort_keys=True).encode("utf-8")
    old = [e for e in (m.metadata or []) if (e.name or b"").decode() == METADATA_NAME]
    m.metadata = [e for e in (m.metadata or []) if e not in old]
    buf = schema.BufferT()
    buf.data = list(payload)
    m.buffers = list(m.buffers or [])
    if old:                    # replace the earlier entry's buffer in place: no orphan left behind
        index = old[0].buffer
        m.buffers[index] = buf
    else:
        m.buffers.append(buf)
        index = len(m.buffers) - 1
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = index
    m.metadata.append(entry)
    b = flatbuffers.Builder(len(model) + len(payload) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())
