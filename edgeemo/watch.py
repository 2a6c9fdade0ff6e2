"""`edgeemo watch`: classify every photo that lands in an inbox folder exactly once.

Per file: classify it, append its record to ``results.jsonl`` (and ``results.csv``; one ``write`` per record,
fsynced), then ``os.replace`` it into ``done/``, or into ``failed/`` beside a ``<name>.error.json`` saying why.
A name that is taken gets a suffix (``photo-1.jpg``); nothing is ever overwritten.

Exactly once across ``kill -9`` and power cuts: the record is written before the file leaves the inbox, so
after a crash a file is either unrecorded (it is classified again) or recorded and still in the inbox. At
start the daemon removes a torn last line from the result files, completes a CSV row that the crash cut off,
and looks up the files in the inbox among the last records: a file whose name and sha256 are recorded is
moved on without a new record. A file that was being processed when the daemon died three times in a row
(it crashes or hangs the decoder) is set aside in ``failed/`` rather than retried forever.

New files are found by a scan at start, then by watchdog events: close-after-write and renames into the
inbox (inotify), or, with ``--poll`` or where inotify is unavailable, by polling until a file's size and
mtime stay unchanged for ``--settle`` seconds. Dot-files and ``.part``, ``.tmp`` and ``~`` names are ignored
until they are renamed. The work queue is bounded: when it is full, events are dropped and the folder is
scanned again once there is room, so memory stays flat however many files arrive.

SIGTERM and SIGINT finish the file in hand, flush and exit 0. Under systemd (``Type=notify``) the daemon
sends READY=1, STATUS= with counters and WATCHDOG=1 pings, which stop when a worker is stuck on one file.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import signal
import stat
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path

from . import config as cfg
from watchdog.events import FileSystemEventHandler

from .config import SetupError, WatchSettings
from .notify import Notifier
from .record import make_record

log = logging.getLogger("edgeemo")

IGNORED_SUFFIXES = (".part", ".tmp", "~")
FAILED_STATUSES = ("unreadable", "error")
ERROR_SUFFIX = ".error.json"
LOCK_NAME = ".edgeemo.lock"
STATE_DIR = ".edgeemo-state"    # in the results folder: markers of the files in hand (crash-loop guard)
MAX_ATTEMPTS = 3
TAIL_BYTES = 4 << 20            # the last records searched for replays: far more than the files in hand
TICK = 0.2
MAX_BACKOFF = 60.0


def ignored(name: str) -> bool:
    """Names the watcher leaves alone until they are renamed: dot-files and temporary names."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


def file_sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


# --- folders --------------------------------------------------------------------------------------------------

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
    """Moves a finished file into done/ or failed/ under a free name; failed files get <name>.error.json."""

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

    def destination(self, rec: dict, name: str) -> Path:
        failed = rec.get("status") in FAILED_STATUSES
        folder = self.failed if failed else self.done
        for cand in self._candidates(name):
            dst = folder / cand
            if os.path.lexists(dst):
                continue
            if failed:
                j = dst.with_name(dst.name + ERROR_SUFFIX)
                if os.path.lexists(j) and not self._orphan_of(j, rec):
                    continue
            return dst
        raise OSError(errno.EEXIST, f"no free name for {name} in {folder}")

    def finish(self, src: Path, rec: dict) -> Path:
        with self._lock:
            if not os.path.lexists(src):
                raise FileNotFoundError(errno.ENOENT, "vanished", str(src))
            dst = self.destination(rec, src.name)
            if rec.get("status") in FAILED_STATUSES:
                write_json_atomic(dst.with_name(dst.name + ERROR_SUFFIX), {**rec, "moved_to": str(dst)})
            os.replace(src, dst)
        return dst


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


# --- the queue ---------------------------------------------------------------------------------------------------

class Intake:
    """Names waiting for a worker: ``ready`` (complete: closed after writing, or renamed in) and ``pending``
    (found by a scan or a poll: ready once size and mtime have not changed for ``settle`` seconds).
    At most ``capacity`` names are held; beyond that a name is dropped and ``overflowed`` is set, and the
    owner rescans the folder when there is room again."""

    def __init__(self, capacity: int, settle: float):
        self.capacity, self.settle = capacity, settle
        self._cv = threading.Condition()
        self._ready: OrderedDict[str, None] = OrderedDict()
        self._pending: dict[str, list] = {}
        self._busy: dict[str, bool] = {}
        self._closed = False
        self.overflowed = False

    def __len__(self) -> int:
        with self._cv:
            return len(self._ready) + len(self._pending)

    def add(self, name: str, ready: bool) -> bool:
        """Offer a name; False when it was dropped because the queue is full."""
        with self._cv:
            if self._closed:
                return True
            if name in self._busy:
                self._busy[name] = True        # seen again while in hand: look once more afterwards
                return True
            if name in self._ready or (not ready and name in self._pending):
                return True
            if name in self._pending:
                del self._pending[name]
            elif len(self._ready) + len(self._pending) >= self.capacity:
                self.overflowed = True
                return False
            if ready:
                self._ready[name] = None
                self._cv.notify()
            else:
                self._pending[name] = [None, 0.0]
            return True

    def take(self, timeout: float) -> str | None:
        with self._cv:
            self._cv.wait_for(lambda: self._ready or self._closed, timeout)
            if self._closed or not self._ready:
                return None
            name, _ = self._ready.popitem(last=False)
            self._busy[name] = False
            return name

    def release(self, name: str) -> bool:
        """The worker is done with ``name``; True if an event for that name came meanwhile."""
        with self._cv:
            return self._busy.pop(name, False)

    def check_pending(self, stat_fn, now: float) -> None:
        with self._cv:
            items = list(self._pending.items())
        promote, drop = [], []
        for name, entry in items:
            try:
                st = stat_fn(name)
            except OSError:
                drop.append((name, entry))
                continue
            sig = (st.st_size, st.st_mtime_ns)
            if entry[0] != sig:
                entry[0], entry[1] = sig, now
            elif now - entry[1] >= self.settle:
                promote.append((name, entry))
        if promote or drop:
            with self._cv:
                for name, entry in drop:
                    if self._pending.get(name) is entry:
                        del self._pending[name]
                for name, entry in promote:
                    if self._pending.get(name) is entry:
                        del self._pending[name]
                        self._ready[name] = None
                self._cv.notify_all()

    def counts(self) -> tuple[int, int, int]:
        with self._cv:
            return len(self._ready), len(self._pending), len(self._busy)

    def needs_rescan(self) -> bool:
        with self._cv:
            return self.overflowed and len(self._ready) + len(self._pending) <= self.capacity // 2

    def clear_overflow(self) -> None:
        with self._cv:
            self.overflowed = False

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


# --- service skeleton shared with the camera -------------------------------------------------------------------

class Health:
    """When each worker started on its current item; the watchdog is fed only while none is stuck."""

    def __init__(self, n: int):
        self._since: list[float | None] = [None] * n

    def busy(self, i: int) -> None:
        self._since[i] = time.monotonic()

    def idle(self, i: int) -> None:
        self._since[i] = None

    def stuck(self, now: float, limit: float) -> list[int]:
        return [i for i, t in enumerate(self._since) if t is not None and now - t > limit]


class Tally:
    def __init__(self):
        self._lock = threading.Lock()
        self.c: Counter = Counter()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.c[key] += n

    def snapshot(self) -> Counter:
        with self._lock:
            return Counter(self.c)


def describe(rec: dict) -> str:
    faces = rec.get("faces") or []
    if rec["status"] == "ok":
        return f"{len(faces)} face{'s' if len(faces) != 1 else ''}: " + ", ".join(
            f"{f['label']} ({f['confidence']:.2f})" for f in faces)
    return rec["status"].replace("_", " ")


def make_classifiers(s: WatchSettings, n: int) -> list:
    """n independent classifiers (an interpreter is not shared between threads)."""
    from .detect import DetectorError
    from .modelfile import ModelFileError
    from .pipeline import Classifier
    from .runtime import RuntimeUnavailable
    out = []
    try:
        for _ in range(n):
            out.append(Classifier(s.model, s.detector, s.detector_model, s.threads, s.min_face, s.max_faces,
                                  s.score_threshold))
    except (ModelFileError, DetectorError, RuntimeUnavailable) as exc:
        raise SetupError(str(exc)) from None
    c = out[0]
    log.info("model %s (%s, %s), detector %s, %d worker%s", c.model.name, c.model.path.name,
             "int8" if c.model.quantized else "float", c.detector.name, n, "s" if n > 1 else "")
    return out


class Service:
    """Signals, the main loop, and systemd notifications; subclasses do the work in their own threads."""

    def __init__(self, n_workers: int):
        self.stop_event = threading.Event()
        self.notifier = Notifier.from_env()
        self.health = Health(n_workers)
        self.tally = Tally()
        self.exit_code = 0
        self._status = ""
        self._status_at = 0.0
        # a worker may take this long on one item before the watchdog pings stop (systemd then restarts us)
        wd = self.notifier.watchdog_interval
        self.stall_limit = 2 * wd if wd else None

    def _on_signal(self, signum, _frame) -> None:
        if not self.stop_event.is_set():
            log.info("%s: finishing the work in hand, then exiting", signal.Signals(signum).name)
        self.stop_event.set()
        self.wake()

    def wake(self) -> None:
        """Unblock the workers after stop_event was set."""

    def start(self) -> None:
        raise NotImplementedError

    def tick(self, now: float) -> None:
        """Periodic work in the main thread; set exit_code and stop_event on a fatal problem."""

    def status_text(self) -> str:
        raise NotImplementedError

    def shutdown(self) -> None:
        raise NotImplementedError

    def _notify(self, now: float, force: bool = False) -> None:
        if not self.notifier.enabled:
            return
        if self.notifier.watchdog_due(now):
            stuck = self.health.stuck(now, self.stall_limit) if self.stall_limit else []
            if stuck:
                log.error("worker %s has been busy on one item for more than %.0f s; not feeding the systemd "
                          "watchdog, so the service will be restarted", ",".join(map(str, stuck)), self.stall_limit)
            else:
                self.notifier.ping(now)
        if force or now - self._status_at >= 1.0:
            text = self.status_text()
            if text != self._status:
                self.notifier.status(text)
                self._status = text
            self._status_at = now

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            self.notifier.ready(self.status_text())
            self._status = self.status_text()
            while not self.stop_event.is_set():
                now = time.monotonic()
                self.tick(now)
                self._notify(now)
                self.stop_event.wait(TICK)
        finally:
            self.stop_event.set()
            self.wake()
            self.notifier.stopping(self.status_text())
            self.shutdown()
            self.notifier.close()
            for s, h in previous.items():
                signal.signal(s, h)
        return self.exit_code


# --- the folder daemon -----------------------------------------------------------------------------------------

class FolderDaemon(Service):
    def __init__(self, s: WatchSettings):
        super().__init__(s.workers)
        self.s = s
        self.inbox = prepare_folder(s.inbox, "inbox", create=False)
        self.done = prepare_folder(s.done, "done")
        self.failed = prepare_folder(s.failed, "failed")
        self.out = prepare_folder(s.out, "results")
        dev = os.stat(self.inbox).st_dev
        for what, p in (("done", self.done), ("failed", self.failed)):
            if os.stat(p).st_dev != dev:
                raise SetupError(f"{p} (the {what} folder) is on another filesystem than the inbox {self.inbox}; "
                                 f"files are moved with a rename, so put both on the same filesystem")
        self.locks = []
        try:
            for p in dict.fromkeys([self.inbox, self.done, self.failed, self.out]):
                self.locks.append(FolderLock(p))
            self.classifiers = make_classifiers(s, s.workers)
            self.results = ResultLog(self.out, s.format, self.classifiers[0].labels)
        except BaseException:
            self._release_locks()
            raise
        self.model_ref = {"name": self.classifiers[0].model.name, "sha256": self.classifiers[0].model.sha256}
        self.mover = Mover(self.done, self.failed)
        self.attempts = Attempts(self.out / STATE_DIR)
        self.intake = Intake(s.queue_size, s.settle)
        self.observer = None
        self.mode = "poll" if s.poll else "inotify"
        self.workers: list[threading.Thread] = []

    def _release_locks(self) -> None:
        for lk in self.locks:
            lk.release()

    # start-up
    def recover(self) -> None:
        names = {e.name for e in os.scandir(self.inbox) if not ignored(e.name) and not e.is_dir()}
        ledger = self.results.tail_index(names)
        recorded_names = {n for n, _ in ledger}
        for name in sorted(recorded_names):
            src = self.inbox / name
            rec = ledger.get((name, file_sha256(src)))
            if rec is None:
                continue
            try:
                dst = self.mover.finish(src, rec)
            except OSError as exc:
                raise SetupError(f"{src}: recorded before the restart but cannot be moved on ({exc}); fix the "
                                 f"folder's permissions and start again") from None
            self.attempts.end(name)
            names.discard(name)
            self.tally.add("recovered")
            log.info("%s: already recorded before the restart; moved to %s without a new record", src, dst)
        for name, count in self.attempts.left_over():
            if name not in names:
                self.attempts.end(name)
            elif count >= MAX_ATTEMPTS:
                self.set_aside(name, count)
                names.discard(name)
            else:
                log.warning("%s: edgeemo stopped while processing this file (attempt %d of %d); trying again",
                            self.inbox / name, count, MAX_ATTEMPTS)

    def set_aside(self, name: str, count: int) -> None:
        src = self.inbox / name
        rec = make_record(str(src), file_sha256(src), "error",
                          f"{src}: edgeemo stopped {count} times while processing this file (a crash, a hang "
                          f"stopped by the watchdog, or running out of memory), so it was set aside; see the "
                          f"service log (journalctl -u edgeemo) for the cause", model=self.model_ref)
        if self.commit(rec, src, None):
            self.attempts.end(name)

    def start(self) -> None:
        self.recover()
        for i, clf in enumerate(self.classifiers):
            t = threading.Thread(target=self._work, args=(i, clf), name=f"edgeemo-worker-{i}", daemon=True)
            t.start()
            self.workers.append(t)
        self.observer = self._start_observer()
        self.rescan()
        log.info("watching %s (%s); results in %s; finished files go to %s and %s", self.inbox, self.mode,
                 ", ".join(map(str, self.results.paths)), self.done, self.failed)

    def _start_observer(self):
        from watchdog.events import FileClosedEvent, FileCreatedEvent, FileModifiedEvent, FileMovedEvent
        from watchdog.observers.polling import PollingObserver
        handler = _Handler(self)
        if self.mode == "inotify":
            try:
                from watchdog.observers.inotify import InotifyObserver
                obs = InotifyObserver(generate_full_events=True)   # a rename from outside arrives as a move
                obs.schedule(handler, str(self.inbox), recursive=False,
                             event_filter=[FileClosedEvent, FileMovedEvent])
                obs.start()
                return obs
            except (ImportError, OSError) as exc:
                log.warning("inotify is not available for %s (%s); polling instead", self.inbox, exc)
                self.mode = "poll"
        obs = PollingObserver(timeout=min(1.0, self.s.settle / 2))
        obs.schedule(handler, str(self.inbox), recursive=False,
                     event_filter=[FileCreatedEvent, FileModifiedEvent, FileMovedEvent])
        obs.start()
        return obs

    def rescan(self) -> None:
        """Offer every file in the inbox (pending: it may still be being written), until the queue is full."""
        self.intake.clear_overflow()
        with os.scandir(self.inbox) as it:
            for e in it:
                if ignored(e.name):
                    continue
                try:
                    if e.is_dir():
                        continue
                except OSError:
                    continue
                if not self.intake.add(e.name, ready=False):
                    break

    def _stat(self, name: str):
        return os.stat(self.inbox / name)

    def tick(self, now: float) -> None:
        self.intake.check_pending(self._stat, now)
        if self.intake.needs_rescan():
            self.rescan()
        if not self.inbox.is_dir():
            log.error("the inbox %s has disappeared; stopping (create it again and restart the service)", self.inbox)
            self.exit_code = 1
            self.stop_event.set()
        elif self.observer is not None and not self.observer.is_alive():
            log.error("the file watcher for %s stopped unexpectedly; exiting so that the service is restarted",
                      self.inbox)
            self.exit_code = 1
            self.stop_event.set()

    def wake(self) -> None:
        self.intake.close()

    def status_text(self) -> str:
        c = self.tally.snapshot()
        ready, pending, busy = self.intake.counts()
        done = c["ok"] + c["no_face"]
        failed = c["unreadable"] + c["error"]
        text = (f"{done + failed} processed: {done} done ({c['ok']} ok, {c['no_face']} no face), {failed} failed; "
                f"{ready + pending + busy} waiting")
        if c["recovered"]:
            text += f"; {c['recovered']} recovered after a restart"
        return text

    # the workers
    def _work(self, i: int, clf) -> None:
        while not self.stop_event.is_set():
            name = self.intake.take(timeout=0.5)
            if name is None:
                continue
            self.health.busy(i)
            try:
                self.handle(clf, name, i)
            except Exception:  # noqa: BLE001 - a bug must not kill the worker thread silently
                log.exception("%s: unexpected failure; the file stays in the inbox", self.inbox / name)
            finally:
                self.health.idle(i)
                again = self.intake.release(name)
            if again and os.path.lexists(self.inbox / name):
                self.intake.add(name, ready=False)

    def _classify(self, clf, src: Path) -> dict | None:
        try:
            st = os.stat(src)
        except FileNotFoundError:
            if not os.path.lexists(src):
                log.debug("%s vanished before it was processed", src)
                return None
            return make_record(str(src), None, "unreadable", f"{src}: broken symbolic link (its target does not "
                               f"exist)", model=self.model_ref)
        except OSError as exc:
            return make_record(str(src), None, "unreadable", f"{src}: cannot read ({exc.strerror or exc})",
                               model=self.model_ref)
        if not stat.S_ISREG(st.st_mode):
            kind = ("FIFO" if stat.S_ISFIFO(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode)
                    else "device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "special file")
            return make_record(str(src), None, "unreadable", f"{src}: not a regular file (a {kind}); only image "
                               f"files belong in the inbox", model=self.model_ref)
        return clf.classify_image(src)

    def handle(self, clf, name: str, worker: int | None = None) -> None:
        src = self.inbox / name
        self.attempts.begin(name)
        finished = False
        try:
            rec = self._classify(clf, src)
            finished = rec is None or self.commit(rec, src, worker)
        finally:
            # a marker survives only a crash; after a clean stop the file is simply tried again
            self.attempts.end(name)
        if not finished:
            log.info("%s: left in the inbox for the next start", src)

    def _wait(self, worker: int | None, seconds: float) -> bool:
        """Sleep without counting as stuck; True if a stop was requested meanwhile."""
        if worker is not None:
            self.health.idle(worker)
        stopped = self.stop_event.wait(seconds)
        if worker is not None:
            self.health.busy(worker)
        return stopped

    def commit(self, rec: dict, src: Path, worker: int | None) -> bool:
        """Append the record, then move the file on; retried with back-off (disk full, permissions) without
        classifying again. False if a stop came first (the state on disk is then one that a restart resumes)."""
        delay = 1.0
        while True:
            try:
                self.results.append(rec)
                break
            except OSError as exc:
                log.error("%s: cannot append its result to %s (%s); the file stays in the inbox; retrying in "
                          "%.0f s (free some disk space or fix the folder's permissions)", src, self.out,
                          exc.strerror or exc, delay)
                if self._wait(worker, delay):
                    return False
                delay = min(delay * 2, MAX_BACKOFF)
        self.tally.add(rec["status"])
        delay = 1.0
        while True:
            try:
                dst = self.mover.finish(src, rec)
                break
            except FileNotFoundError:
                log.warning("%s: vanished from the inbox after it was classified; its result is recorded", src)
                return True
            except OSError as exc:
                log.error("%s: recorded, but it cannot be moved on (%s); retrying in %.0f s (check that the "
                          "service may write to %s and %s)", src, exc.strerror or exc, delay, self.done, self.failed)
                if self._wait(worker, delay):
                    return False
                delay = min(delay * 2, MAX_BACKOFF)
        if rec["status"] in FAILED_STATUSES:
            log.warning("%s; moved to %s (reason in %s%s)", rec["error"], dst, dst.name, ERROR_SUFFIX)
        else:
            log.info("%s: %s -> %s", src.name, describe(rec), dst)
        return True

    def shutdown(self) -> None:
        self.intake.close()
        for t in self.workers:
            t.join()
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
        self.results.close()
        self._release_locks()
        log.info("stopped: %s", self.status_text())


class _Handler(FileSystemEventHandler):
    """watchdog event handler: names of complete files (or candidates, when polling) go to the intake."""

    def __init__(self, daemon: FolderDaemon):
        super().__init__()
        self.d = daemon
        self.inbox = os.path.normpath(str(daemon.inbox))

    def dispatch(self, event) -> None:
        if event.is_directory:
            return
        kind = event.event_type
        if kind == "moved":
            path, ready = event.dest_path, True
        elif kind == "closed":
            path, ready = event.src_path, True
        elif kind in ("created", "modified") and self.d.mode == "poll":
            path, ready = event.src_path, False
        else:
            return
        if not path:
            return
        parent, name = os.path.split(os.fsdecode(path))
        if os.path.normpath(parent) != self.inbox or ignored(name):
            return
        self.d.intake.add(name, ready=ready)


# --- entry point -------------------------------------------------------------------------------------------------

def run_watch(given: dict, config_path=None) -> int:
    """Resolve the settings (raises SetupError, exit status 2), then run until stopped; returns the exit status."""
    s = cfg.resolve(given, config_path)
    logging.getLogger().setLevel(getattr(logging, s.log_level.upper()))
    if s.camera is not None:
        from .camera import CameraDaemon
        daemon: Service = CameraDaemon(s)
    else:
        daemon = FolderDaemon(s)
    return daemon.run()
