"""Exactly-once bookkeeping of `edgeemo watch`: the result files, moving files on, and the crash-loop guard.

The order that makes a run restartable at any moment: append the record (one write per file, fsynced), then
move the file out of the inbox. After a crash a file is unrecorded (classify it again) or recorded and still
in the inbox (``ResultLog.tail_index`` finds its name and sha256 among the last records; move it on without a
new record). A torn last line is cut at start, and a CSV row cut short is completed from results.jsonl.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from .config import SetupError

log = logging.getLogger("edgeemo")

FAILED_STATUSES = ("unreadable", "error")
ERROR_SUFFIX = ".error.json"
LOCK_NAME = ".edgeemo.lock"
TAIL_BYTES = 4 << 20            # the last records searched for replays: far more than the files in hand


def file_sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


class FolderLock:
    """An exclusive flock on ``<folder>/.edgeemo.lock``: one daemon per folder."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_NAME
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise SetupError(f"{folder}: cannot create {LOCK_NAME} ({exc.strerror}); check that the service user "
                             f"may write to this folder") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise SetupError(f"{folder} is in use by another edgeemo watch (pid {owner}); stop it first, or give "
                             f"this one its own folders") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def prepare_folder(path: Path, what: str, create: bool = True) -> Path:
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SetupError(f"{path}: cannot create the {what} folder ({exc.strerror or exc})") from None
    if not path.is_dir():
        hint = "create it (mkdir -p) or fix the path" if not path.exists() else "it is a file, not a folder"
        raise SetupError(f"{path}: the {what} folder does not exist; {hint}" if not path.exists()
                         else f"{path}: {hint}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise SetupError(f"{path}: the {what} folder is not writable by this user (uid {os.getuid()}); fix its "
                         f"owner or mode, or, under systemd, its ReadWritePaths=")
    return path


# --- the result files ------------------------------------------------------------------------------------------

class ResultLog:
    """``results.jsonl`` (the ledger) and ``results.csv``: repaired at start, then appended under one lock."""

    def __init__(self, out_dir: Path, formats, labels):
        from .sinks import CsvSink, JsonlSink, SinkError
        self.jsonl_path = out_dir / "results.jsonl"
        self.csv_path = out_dir / "results.csv" if "csv" in formats else None
        self.labels = list(labels)
        try:
            last = self._repair_jsonl()
            if self.csv_path is not None and self.csv_path.exists():
                self._repair_csv(last)
            self._sinks = [JsonlSink(self.jsonl_path, fsync=True)]
            if self.csv_path is not None:
                self._sinks.append(CsvSink(self.csv_path, self.labels, fsync=True))
        except SinkError as exc:
            raise SetupError(str(exc)) from None
        except OSError as exc:
            raise SetupError(f"{out_dir}: cannot open the result files ({exc.strerror or exc})") from None
        self._lock = threading.Lock()

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self._sinks]

    # start-up repairs
    @staticmethod
    def _cut_torn_tail(path: Path) -> int:
        """Truncate an incomplete last line (a write cut short by a crash); returns the bytes removed."""
        with open(path, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            end = size
            while end > 0:
                start = max(0, end - 65536)
                fh.seek(start)
                chunk = fh.read(end - start)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    keep = start + nl + 1
                    break
                end = start
            else:
                keep = 0
            if keep < size:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())
            return size - keep

    def _last_records(self, n: int) -> list[dict]:
        """The last n records of results.jsonl (oldest first); unparseable lines are skipped."""
        with open(self.jsonl_path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            span = min(size, 1 << 16)
            while True:
                fh.seek(size - span)
                lines = fh.read(span).split(b"\n")
                if span == size or len(lines) > n + 1 or span >= (8 << 20):
                    break
                span = min(size, span * 4)
        if span < size:
            lines = lines[1:]
        out = []
        for line in lines[::-1]:
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                log.warning("%s: skipped a line that is not valid JSON near the end of the file", self.jsonl_path)
                continue
            if len(out) == n:
                break
        return out[::-1]

    def _repair_jsonl(self) -> list[dict]:
        if not self.jsonl_path.exists():
            return []
        cut = self._cut_torn_tail(self.jsonl_path)
        if cut:
            log.warning("%s: removed an incomplete last line (%d bytes) left by an interrupted write; the file "
                        "it described is still in the inbox and is classified again", self.jsonl_path, cut)
        return self._last_records(2)

    def _csv_bytes(self, rec: dict) -> bytes:
        from .record import csv_rows
        from .sinks import CsvSink
        return CsvSink._encode(csv_rows(rec, self.labels))

    def _repair_csv(self, last: list[dict]) -> None:
        """The CSV rows of a record are written after its JSON line, so a crash can leave the last record
        without its rows, or with part of them: complete them from results.jsonl."""
        from .record import csv_columns
        from .sinks import CsvSink
        header = CsvSink._encode([csv_columns(self.labels)])
        with open(self.csv_path, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            span = min(size, 1 << 20)
            fh.seek(size - span)
            tail = fh.read(span)
            base = size - span
            if size < len(header) and header.startswith(tail):
                fh.truncate(0)          # a header cut short: CsvSink writes it again
                return
            if not last:
                return
            want = self._csv_bytes(last[-1])
            if tail.endswith(want):
                return
            prev = self._csv_bytes(last[-2]) if len(last) > 1 else header
            at = tail.rfind(prev)
            rest = tail[at + len(prev):] if at >= 0 else None
            if rest is None or not want.startswith(rest) or (len(last) == 1 and base + at != 0):
                log.warning("%s does not end with the rows of the last record in %s (was one of them edited or "
                            "replaced?); it is left as it is", self.csv_path, self.jsonl_path.name)
                return
            fh.truncate(base + at + len(prev))
            fh.seek(0, os.SEEK_END)
            fh.write(want)
            fh.flush()
            os.fsync(fh.fileno())
        log.warning("%s: completed the rows of the last record (%s), cut short by an interrupted run",
                    self.csv_path, last[-1].get("file"))

    def tail_index(self, names: set[str]) -> dict[tuple[str, str | None], dict]:
        """Records among the last TAIL_BYTES of results.jsonl whose file name is in ``names``, keyed by
        (name, sha256). Only these can be replays: records are written just before their file leaves the
        inbox, so at most one record per worker can be waiting for its move when the daemon dies."""
        if not names or not self.jsonl_path.exists():
            return {}
        with open(self.jsonl_path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - TAIL_BYTES))
            lines = fh.read().split(b"\n")
        if size > TAIL_BYTES:
            lines = lines[1:]
        found = {}
        for line in lines:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            name = os.path.basename(rec.get("file") or "") if isinstance(rec, dict) else ""
            if name in names:
                found[(name, rec.get("sha256"))] = rec
        return found

    def append(self, rec: dict) -> None:
        """Append one record to every result file; on an OSError both files are cut back and it re-raises."""
        with self._lock:
            sizes = [s.size() for s in self._sinks]
            try:
                for s in self._sinks:
                    s.write(rec)
            except OSError:
                for s, n in zip(self._sinks, sizes):
                    try:
                        os.truncate(s.path, n)
                    except OSError:
                        pass
                raise

    def close(self) -> None:
        for s in self._sinks:
            s.close()


# --- moving files on -------------------------------------------------------------------------------------------

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
        stem, dot, ext = name.rpartition(".")
        stem, ext = (stem, dot + ext) if stem else (name, "")
        yield name
        for k in range(1, 1_000_000):
            yield f"{stem}-{k}{ext}"

    @staticmethod
    def _orphan_of(json_path: Path, rec: dict) -> bool:
        """An error file without its image, written for this very record before a crash."""
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("file") == rec.get("file") and data.get("sha256") == rec.get("sha256")

    @staticmethod
    def _same(a: Path, b: Path) -> bool:
        try:
            sa, sb = os.lstat(a), os.lstat(b)
        except OSError:
            return False
        return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)

    def finish(self, src: Path, rec: dict) -> Path:
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
                        write_json_atomic(error_file, {**rec, "moved_to": str(dst)})
                    os.unlink(src)
                    return dst
                if failed:
                    if os.path.lexists(error_file) and not self._orphan_of(error_file, rec):
                        continue
                    write_json_atomic(error_file, {**rec, "moved_to": str(dst)})
                try:
                    os.link(src, dst, follow_symlinks=False)
                except FileExistsError:
                    continue
                except OSError as exc:
                    if exc.errno not in self.NO_LINK:
                        raise
                    os.replace(src, dst)            # the name was free just now, and only we write here
                    return dst
                os.unlink(src)
                return dst
        raise OSError(errno.EEXIST, f"no free name for {src.name} in {folder}")


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Attempts:
    """Crash-loop guard: a marker per file in hand, holding how many runs started on it. A marker that
    survives a restart means the daemon died on that file (crash, hang killed by the watchdog, out of memory)."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.folder / hashlib.sha1(os.fsencode(name)).hexdigest()

    def count(self, name: str) -> int:
        try:
            return int(self._path(name).read_text(encoding="utf-8", errors="surrogateescape").split("\n", 1)[0])
        except (OSError, ValueError):
            return 0

    def begin(self, name: str) -> int:
        n = self.count(name) + 1
        try:
            self._path(name).write_text(f"{n}\n{name}\n", encoding="utf-8", errors="surrogateescape")
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
                count, name = p.read_text(encoding="utf-8", errors="surrogateescape").split("\n")[:2]
                out.append((name, int(count)))
            except (OSError, ValueError):
                p.unlink(missing_ok=True)
        return out
