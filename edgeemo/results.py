"""The result files and standard output: one encoder per format, used by every writer.

A record (``edgeemo.record``) becomes bytes here and nowhere else: ``jsonl_bytes`` (one compact JSON line)
and ``csv_bytes`` (one CSV row per face, or one row with empty face fields; columns ``csv_columns``; cells a
spreadsheet would run as a formula get a leading '). ``ResultFiles`` appends them to ``results.jsonl`` /
``results.csv`` (`classify --out`, `watch`, the camera daemon), ``StdoutWriter`` to standard output
(`classify` without --out): the same record gives the same bytes in both.

Each record is appended with a single ``os.write`` on an ``O_APPEND`` descriptor (all CSV rows of one image
together), then optionally fsynced, so a crash never leaves half a record behind other than a torn last line.
With ``repair=True`` (the daemons) a torn last line is cut at start and a CSV row cut short is completed from
results.jsonl; ``tail_index`` finds the records of files still in hand, for exactly-once moves.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import threading
from pathlib import Path

from . import jsonl
from .errors import EdgeemoError
from .labels import LABELS

log = logging.getLogger("edgeemo")

OUTPUT_FORMATS = ("csv", "jsonl")
CSV_BASE_COLUMNS = ("time", "file", "sha256", "status", "error", "width", "height", "face",
                    "x", "y", "w", "h", "score", "label", "confidence")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
TAIL_BYTES = 4 << 20            # the last records searched for replays: far more than the files in hand


class ResultsError(EdgeemoError):
    """A result file cannot be opened or has the wrong columns: the message names it and what to do.
    ``config``: the files belong to another model or setting (not a condition that clears by itself)."""

    def __init__(self, message: str, config: bool = False):
        super().__init__(message)
        self.config = config


# --- encoders --------------------------------------------------------------------------------------------------

def jsonl_bytes(rec: dict) -> bytes:
    """One JSON line. A file name that is not UTF-8 (Python holds its bytes as lone surrogates) is written
    as JSON escapes (\\udcff for the byte 0xff): valid JSON, and json.loads + os.fsencode give the name's
    bytes back."""
    return (json.dumps(rec, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n").encode(
        "utf-8", "backslashreplace")


def _csv_encode(rows) -> bytes:
    buf = io.StringIO()
    plain = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        # the csv module quotes a cell holding "\n" but not one holding a lone "\r" (it is not in the line
        # terminator), and many readers end a row at a "\r": such a row gets every cell quoted
        (quoted if any("\r" in str(c) for c in row) else plain).writerow(row)
    return buf.getvalue().encode("utf-8", "backslashreplace")      # a non-UTF-8 name: \udcff, as in JSON


def csv_header_bytes(labels) -> bytes:
    return _csv_encode([csv_columns(labels)])


def csv_bytes(rec: dict, labels) -> bytes:
    return _csv_encode(csv_rows(rec, labels))


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


# --- writers ---------------------------------------------------------------------------------------------------

def refuse_link(path: Path) -> None:
    """Result files are never written through a symbolic link: it could point anywhere the service may write."""
    if os.path.islink(path):
        raise ResultsError(f"{path} is a symbolic link (to {os.readlink(path)}); edgeemo never writes results "
                           f"through a link: remove it, or choose another output folder", config=True)


class _AppendFile:
    def __init__(self, path: str | os.PathLike, fsync: bool = False):
        self.path = Path(path)
        self.fsync = fsync
        refuse_link(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                               0o644)
        except OSError as exc:
            raise ResultsError(f"{self.path}: cannot open for appending results ({exc.strerror or exc})") from None

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(self._fd)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class StdoutWriter:
    """Records on standard output in one format (a CSV header first), the bytes ``ResultFiles`` would write."""

    def __init__(self, fmt: str, labels, stream=None):
        if fmt not in OUTPUT_FORMATS:
            raise ResultsError(f"unknown output format {fmt!r}; choose from {', '.join(OUTPUT_FORMATS)}")
        self.fmt, self.labels = fmt, list(labels)
        self._out = stream if stream is not None else sys.stdout.buffer
        if fmt == "csv":
            self._emit(csv_header_bytes(self.labels))

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._out.flush()

    def write(self, rec: dict) -> None:
        self._emit(jsonl_bytes(rec) if self.fmt == "jsonl" else csv_bytes(rec, self.labels))

    def close(self) -> None:
        self._out.flush()


class _JsonlFile(_AppendFile):
    def write(self, rec: dict) -> None:
        self.append(jsonl_bytes(rec))


class _CsvFile(_AppendFile):
    def __init__(self, path, labels, fsync: bool = False):
        super().__init__(path, fsync)
        self.labels = list(labels)
        if self.size() == 0:
            self.append(csv_header_bytes(self.labels))
        else:
            columns = csv_columns(self.labels)
            with open(self.path, newline="", encoding="utf-8") as fh:
                first = next(csv.reader(fh), [])
            if first != columns:
                self.close()
                raise ResultsError(f"{self.path}: existing CSV has other columns ({len(first)}: {first[:4]}...) "
                                   f"than this model writes; use another --out folder or move the file away",
                                   config=True)

    def write(self, rec: dict) -> None:
        self.append(csv_bytes(rec, self.labels))


class ResultFiles:
    """``results.jsonl`` and/or ``results.csv`` in one folder, appended under one lock.

    ``repair``: cut a torn last line and complete a CSV record cut short (the daemons; ``classify --out``
    appends only). ``fsync``: every record is on disk before ``append`` returns (the daemons)."""

    def __init__(self, out_dir, formats=OUTPUT_FORMATS, labels=(), fsync: bool = False, repair: bool = False):
        bad = [f for f in formats if f not in OUTPUT_FORMATS]
        if bad or not formats:
            raise ResultsError(f"unknown output format(s) {', '.join(bad) or '(none)'}; choose from "
                               f"{', '.join(OUTPUT_FORMATS)}")
        out_dir = Path(out_dir)
        self.jsonl_path = out_dir / "results.jsonl" if "jsonl" in formats else None
        self.csv_path = out_dir / "results.csv" if "csv" in formats else None
        self.labels = list(labels)
        self._files: list[_AppendFile] = []
        for path in (self.jsonl_path, self.csv_path):
            if path is not None:
                refuse_link(path)               # before a repair could cut a file the link points at
        try:
            last = self._repair_jsonl() if repair and self.jsonl_path is not None else []
            if repair and self.csv_path is not None and self.csv_path.exists():
                cut = self._cut_torn_tail(self.csv_path)
                if cut:
                    log.warning("%s: removed an incomplete last line (%d bytes: a write cut short, or the zeros a "
                                "power cut can leave)", self.csv_path, cut)
                self._repair_csv(last)
            if self.jsonl_path is not None:
                self._files.append(_JsonlFile(self.jsonl_path, fsync))
            if self.csv_path is not None:
                self._files.append(_CsvFile(self.csv_path, self.labels, fsync))
        except OSError as exc:
            self.close()
            raise ResultsError(f"{out_dir}: cannot open the result files ({exc.strerror or exc})") from None
        except ResultsError:
            self.close()
            raise
        self._lock = threading.Lock()

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self._files]

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
            rec = jsonl.parse(line)
            if rec is None:
                log.warning("%s: skipped a line that is not a JSON record near the end of the file", self.jsonl_path)
                continue
            out.append(rec)
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

    def _repair_csv(self, last: list[dict]) -> None:
        """The CSV rows of a record are written after its JSON line, so a crash can leave the last record
        without its rows, or with part of them: complete them from results.jsonl."""
        header = csv_header_bytes(self.labels)
        with open(self.csv_path, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            span = min(size, 1 << 20)
            fh.seek(size - span)
            tail = fh.read(span)
            base = size - span
            if size < len(header) and header.startswith(tail):
                fh.truncate(0)          # a header cut short: _CsvFile writes it again
                return
            if not last:
                return
            want = csv_bytes(last[-1], self.labels)
            if tail.endswith(want):
                return
            prev = csv_bytes(last[-2], self.labels) if len(last) > 1 else header
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
        if not names or self.jsonl_path is None or not self.jsonl_path.exists():
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
            rec = jsonl.parse(line)
            file = rec.get("file") if rec is not None else None
            name = os.path.basename(file) if isinstance(file, str) else ""
            if name in names:
                found[(name, rec.get("sha256"))] = rec
        return found

    def append(self, rec: dict) -> None:
        """Append one record to every result file; on an OSError all of them are cut back and it re-raises."""
        with self._lock:
            sizes = [f.size() for f in self._files]
            try:
                for f in self._files:
                    f.write(rec)
            except OSError:
                for f, n in zip(self._files, sizes):
                    try:
                        os.truncate(f.path, n)
                    except OSError:
                        pass
                raise

    write = append

    def close(self) -> None:
        for f in self._files:
            f.close()


TRACK_COLUMNS = ["file", "track", "first_time", "last_time", "frames_seen", "dominant", "label_changes",
                 "x", "y", "w", "h", *(f"seconds_{k}" for k in LABELS)]



class TrackLog:
    """``tracks.jsonl`` (and ``tracks.csv``) in the output folder: one line per face track of a video that ended,
    opened on the first one."""

    def __init__(self, out: Path | None, formats):
        self.out, self.formats = out, formats
        self._files = None
        self.written = 0
        self._lock = threading.Lock()        # the folder daemon's workers may end tracks at the same time

    def write(self, line: dict) -> None:
        if self.out is None:
            return
        with self._lock:
            self._write(line)

    def _write(self, line: dict) -> None:
        if self._files is None:
            self._files = {"jsonl": _AppendFile(self.out / "tracks.jsonl")}
            if "csv" in self.formats:
                new = not (self.out / "tracks.csv").exists()
                self._files["csv"] = _AppendFile(self.out / "tracks.csv")
                if new:
                    self._files["csv"].append(_csv_encode([TRACK_COLUMNS]))
        self._files["jsonl"].append(jsonl_bytes(line))
        if "csv" in self._files:
            box = line["best_box"] or [None] * 4
            self._files["csv"].append(_csv_encode([[line["file"], line["track"], line["first_time"],
                                                    line["last_time"], line["frames_seen"], line["dominant"],
                                                    line["label_changes"], *box,
                                                    *(line["seconds"].get(k, 0) for k in LABELS)]]))
        self.written += 1

    def close(self) -> None:
        for f in (self._files or {}).values():
            f.close()


def open_ledger(out_dir, formats, labels) -> ResultFiles:
    """The daemons' result files (`watch`, the camera): fsynced, repaired at start. Files of another model
    are a SetupError (exit status 2: not restarted into the same failure); a folder or disk that cannot be
    written is a StartError (exit status 1: systemd tries again)."""
    from .errors import SetupError, StartError
    try:
        return ResultFiles(out_dir, formats, labels, fsync=True, repair=True)
    except ResultsError as exc:
        raise (SetupError if exc.config else StartError)(str(exc)) from None
