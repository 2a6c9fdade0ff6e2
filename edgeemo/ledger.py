"""Exactly-once hand-off of `edgeemo watch`: moving a recorded file on to done/ or failed/, and the crash-loop
guard. (The folders themselves, their set-up and locks: ``edgeemo.folders``.)

The order that makes a run restartable at any moment: append the record (one write per file, fsynced), then
move the file out of the inbox. After a crash a file is unrecorded (classify it again) or recorded and still
in the inbox (``edgeemo.results.ResultFiles.tail_index`` finds its name and sha256 among the last records; move it on without a
new record). A torn last line is cut at start, and a CSV row cut short is completed from results.jsonl.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import threading
from pathlib import Path

from . import atomic, jsonl
from .imageio import MAX_FILE_BYTES

log = logging.getLogger("edgeemo")

FAILED_STATUSES = ("unreadable", "error")
ERROR_SUFFIX = ".error.json"


def file_sha256(path: Path) -> str | None:
    """sha256 of a regular file's bytes, as its record has it: None for a link (never followed), a FIFO or
    other special file (never read: it could block), a file over MAX_FILE_BYTES (refused unread) or a file
    that cannot be read."""
    h = hashlib.sha256()
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK), "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
                return None
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


# --- moving files on -------------------------------------------------------------------------------------------

class FileChanged(OSError):
    """The inbox name now points at another file than the one whose record was written."""


class Mover:
    """Moves a finished file into done/ or failed/ under a free name; failed files get <name>.error.json.

    The move is a hard link under the new name, which fails rather than replace an existing file, then the
    removal of the inbox name: the inbox watch then sees no event from our own moves (a rename out of the
    folder is an event that watchdog holds for half a second to pair it, delaying the events behind it).
    Where a link is refused (FAT/exFAT, or a file the service may read but not write while
    fs.protected_hardlinks is on) it is an ``os.replace`` after checking under a lock that the name is free.
    A crash between the link and the removal leaves one file under two names; ``finish`` recognises that."""

    NO_LINK = {errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}

    def __init__(self, done: Path, failed: Path):
        self.done, self.failed = done, failed
        self._lock = threading.Lock()

    @staticmethod
    def _candidates(name: str):
        """The name, then name-1, name-2, ...; each short enough that it and its <name>.error.json fit the
        filesystem's limit (NAME_MAX bytes): a long name is cut and given a hash of the whole name."""
        stem, dot, ext = name.rpartition(".")
        stem, ext = (stem, dot + ext) if stem else (name, "")
        yield _fit(name)
        for k in range(1, 1_000_000):
            yield _fit(f"{stem}-{k}{ext}")

    @staticmethod
    def _orphan_of(json_path: Path, rec: dict) -> bool:
        """An error file without its image, written for this very record before a crash."""
        try:
            data = jsonl.parse(json_path.read_bytes())
        except OSError:
            return False
        return data is not None and data.get("file") == rec.get("file") and data.get("sha256") == rec.get("sha256")

    @staticmethod
    def _check(path: Path, expect: tuple[int, int] | None) -> None:
        if expect is not None:
            st = os.lstat(path)
            if (st.st_dev, st.st_ino) != expect:
                raise FileChanged(f"{path}: not the file that was read")

    @staticmethod
    def _same(a: Path, b: Path) -> bool:
        try:
            sa, sb = os.lstat(a), os.lstat(b)
        except OSError:
            return False
        return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)

    def finish(self, src: Path, rec: dict, expect: tuple[int, int] | None = None) -> Path:
        """Move ``src`` on; with ``expect`` (device, inode of the bytes the record describes) a name that now
        points at another file raises FileChanged and moves nothing."""
        failed = rec.get("status") in FAILED_STATUSES
        folder = self.failed if failed else self.done
        with self._lock:
            if not os.path.lexists(src):
                raise FileNotFoundError(errno.ENOENT, "vanished", str(src))
            for cand in self._candidates(src.name):
                dst = folder / cand
                error_file = dst.with_name(dst.name + ERROR_SUFFIX)
                if os.path.lexists(dst):
                    if not self._same(src, dst):
                        continue
                    if failed and not os.path.lexists(error_file):      # linked, then the crash
                        atomic.write_json(error_file, {**rec, "moved_to": str(dst)})
                    os.unlink(src)
                    return dst
                if failed:
                    if os.path.lexists(error_file) and not self._orphan_of(error_file, rec):
                        continue
                    atomic.write_json(error_file, {**rec, "moved_to": str(dst)})
                try:
                    os.link(src, dst, follow_symlinks=False)
                except FileExistsError:
                    continue
                except OSError as exc:
                    if exc.errno not in self.NO_LINK:
                        raise
                    self._check(src, expect)
                    os.replace(src, dst)            # the name was free just now, and only we write here
                    return dst
                try:
                    self._check(dst, expect)        # the inode linked is the one that was read
                except FileChanged:
                    os.unlink(dst)
                    if failed:
                        error_file.unlink(missing_ok=True)
                    raise
                os.unlink(src)
                return dst
        raise OSError(errno.EEXIST, f"no free name for {src.name} in {folder}")


NAME_MAX = 255


def _fit(name: str) -> str:
    """``name`` if it and ``name + ERROR_SUFFIX`` fit NAME_MAX bytes; else its start, a hash of the whole
    name, and its extension, cut at a character boundary (the record keeps the original name)."""
    raw = os.fsencode(name)
    room = NAME_MAX - len(ERROR_SUFFIX) - 1            # and ".<name>.tmp" while the error file is written
    room -= len(".tmp")
    if len(raw) <= room:
        return name
    _, dot, ext = name.rpartition(".")
    tail = os.fsencode(dot + ext) if dot and len(os.fsencode(dot + ext)) <= 16 else b""
    digest = hashlib.sha1(raw).hexdigest()[:12].encode()
    head = raw[:room - len(tail) - len(digest) - 1]
    while head and (head[-1] & 0xC0) == 0x80:          # do not split a UTF-8 character
        head = head[:-1]
    if head and head[-1] >= 0xC0:
        head = head[:-1]
    return os.fsdecode(head + b"~" + digest + tail)




class Attempts:
    """Crash-loop guard: a marker per file in hand, holding how many runs started on it. A marker that
    survives a restart means the daemon died on that file (crash, hang killed by the watchdog, out of memory)."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.folder / hashlib.sha1(os.fsencode(name)).hexdigest()

    @staticmethod
    def _read(p: Path) -> tuple[str, int]:
        """(name, count) of a marker: JSON, so any name survives (newlines, bytes that are not UTF-8)."""
        data = jsonl.parse(p.read_bytes())
        return str(data["name"]), int(data["count"])        # TypeError when it is no marker (None)

    def count(self, name: str) -> int:
        try:
            return self._read(self._path(name))[1]
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def begin(self, name: str) -> int:
        n = self.count(name) + 1
        try:
            self._path(name).write_text(json.dumps({"name": name, "count": n}) + "\n", encoding="ascii")
        except OSError as exc:
            log.debug("cannot write the attempt marker of %s: %s", name, exc)
        return n

    def end(self, name: str) -> None:
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.debug("cannot remove the attempt marker of %s: %s", name, exc)

    def left_over(self) -> list[tuple[str, int]]:
        out = []
        for p in self.folder.iterdir():
            try:
                out.append(self._read(p))
            except (OSError, ValueError, KeyError, TypeError):
                p.unlink(missing_ok=True)
        return out
