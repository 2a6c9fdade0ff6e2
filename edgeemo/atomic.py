"""Writing a whole file so that a reader, or a power cut, sees the old content or the new, never half of it:
the one atomic writer (a hidden temporary file beside the target, flushed to disk, then renamed over it)."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if fsync:                   # the rename itself survives a power cut once the folder is on disk
            _fsync_folder(path.parent)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str, fsync: bool = True) -> None:
    # names that are not UTF-8 (surrogate escapes) are written as backslash escapes instead of failing
    write_bytes(path, text.encode("utf-8", errors="backslashreplace"), fsync)


def write_json(path: str | Path, data, fsync: bool = True, indent: int | None = 2) -> None:
    write_text(path, json.dumps(data, ensure_ascii=False, indent=indent, allow_nan=False) + "\n", fsync)
