"""A real `edgeemo watch` daemon for tests: started as a process on a temporary inbox, with helpers to drop
files, wait for records and read the result files. The ``daemon_factory`` fixture (conftest.py) makes them."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 60.0          # generous wait for things that take well under a second; never a timing assertion


def png_bytes(seed: int, size: int = 48) -> bytes:
    """A unique gray noise PNG (the 'none' detector treats the whole picture as the face)."""
    img = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def jpeg_bytes(seed: int, size: int = 64) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def waiting(d: "Daemon") -> set[str]:
    """Files still in the inbox (the done/, failed/ and results/ folders live inside it by default)."""
    return set(visible(d.inbox)) - {"done", "failed", "results"}


def wait_until(cond, what: str, daemon: "Daemon | None" = None, timeout: float = DEADLINE):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        if daemon is not None and daemon.proc is not None and daemon.proc.poll() is not None:
            break
        time.sleep(0.02)
    log = daemon.log_text()[-3000:] if daemon else ""
    raise AssertionError(f"timed out waiting for {what}\n--- daemon log ---\n{log}")


class Daemon:
    """`edgeemo watch` in a child process, with its log in a file."""

    def __init__(self, root: Path, model: Path, *args: str, inbox: Path | None = None, env: dict | None = None,
                 python_flags: tuple = ()):
        self.root = root
        self.inbox = inbox or root / "inbox"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.out = root / "inbox" / "results" if inbox is None else None
        self.args = [sys.executable, *python_flags, "-m", "edgeemo.cli", "watch", str(self.inbox),
                     "--model", str(model), "--detector", "none", "--settle", "0.3", *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.log_path = root / "daemon.log"

    @property
    def results(self) -> Path:
        return self.inbox / "results"

    def start(self, wait: bool = True) -> "Daemon":
        self.runs += 1
        self._log = open(self.log_path, "ab")
        self._log.write(f"=== run {self.runs}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=self.root)
        if wait:
            wait_until(lambda: f"=== run {self.runs}\n" in self.log_text() and
                       "watching " in self.log_text().split(f"=== run {self.runs}\n")[-1], "the daemon to start", self)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run_log(self) -> str:
        return self.log_text().split(f"=== run {self.runs}\n")[-1]

    def signal(self, sig: int, timeout: float = DEADLINE) -> int:
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = DEADLINE) -> int:
        try:
            rc = self.proc.wait(timeout)
        finally:
            self._log.close()
        return rc

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._log.close()

    def records(self) -> list[dict]:
        p = self.results / "results.jsonl"
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def n_records(self) -> int:
        p = self.results / "results.jsonl"
        return p.read_bytes().count(b"\n") if p.exists() else 0

    def csv_rows(self) -> list[dict]:
        with open(self.results / "results.csv", newline="") as fh:
            return list(csv.DictReader(fh))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "_log", None) and not self._log.closed:
            self._log.close()


def by_name(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(os.path.basename(r["file"]), []).append(r)
    return out
