"""Sinks: append result records to JSON Lines and CSV files.

Each record is encoded first and appended with a single ``os.write`` on an ``O_APPEND`` descriptor (all
CSV rows of one image together), then optionally fsynced, so a crash never leaves half a record behind
other than a torn last line, which readers skip.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from .record import csv_columns, csv_rows

FORMATS = ("csv", "jsonl")


class SinkError(RuntimeError):
    pass


class _AppendFile:
    def __init__(self, path: str | os.PathLike, fsync: bool = False):
        self.path = Path(path)
        self.fsync = fsync
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot open for appending results ({exc.strerror or exc})") from None

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


class JsonlSink(_AppendFile):
    def write(self, rec: dict) -> None:
        self.append((json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))


class CsvSink(_AppendFile):
    def __init__(self, path, labels, fsync: bool = False):
        super().__init__(path, fsync)
        self.labels = list(labels)
        self.columns = csv_columns(self.labels)
        if self.size() == 0:
            self.append(self._encode([self.columns]))
        else:
            with open(self.path, newline="", encoding="utf-8") as fh:
                first = next(csv.reader(fh), [])
            if first != self.columns:
                self.close()
                raise SinkError(f"{self.path}: existing CSV has other columns ({len(first)}: {first[:4]}...) "
                                f"than this model writes; use another --out folder or move the file away")

    @staticmethod
    def _encode(rows) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return buf.getvalue().encode("utf-8")

    def write(self, rec: dict) -> None:
        self.append(self._encode(csv_rows(rec, self.labels)))


class Sinks:
    """The result files of a run: ``results.jsonl`` and/or ``results.csv`` in one folder."""

    def __init__(self, out_dir, formats=FORMATS, labels=(), fsync: bool = False, stem: str = "results"):
        bad = [f for f in formats if f not in FORMATS]
        if bad:
            raise SinkError(f"unknown output format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
        self.out_dir = Path(out_dir)
        self._sinks = []
        if "jsonl" in formats:
            self._sinks.append(JsonlSink(self.out_dir / f"{stem}.jsonl", fsync))
        if "csv" in formats:
            self._sinks.append(CsvSink(self.out_dir / f"{stem}.csv", labels, fsync))

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self._sinks]

    def write(self, rec: dict) -> None:
        for s in self._sinks:
            s.write(rec)

    def close(self) -> None:
        for s in self._sinks:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
