"""`edgeemo classify` at scale: a streaming walk, N worker processes, one writer, resumable.

- ``walk`` streams the inputs with ``os.scandir``: it never lists a whole tree first (a folder of up to
  SORT_LIMIT entries is taken in name order; a larger one in the order the filesystem gives).
- ``Pool`` runs N worker processes, each with its own interpreter, model and detector. Each has its own
  pipe and is given two files ahead (so it never waits for the parent between files) and takes them in
  order, so the parent always knows which file a worker has in hand: a worker that dies on a file (a
  decoder crash, the OOM killer) costs that file one ``error`` record and is replaced; the file queued
  behind it goes to another worker; the run goes on. Records are written by the parent, in completion order.
- ``run`` is the whole batch, the function `edgeemo classify` calls: the walk, this process or the pool,
  the result files, a ``Summary``.
- ``Done`` is what ``--resume`` skips: the inputs that already have a record in ``results.jsonl``, keyed by
  path, size and mtime (``--resume``) or path and sha256 (``--resume=hash``), held as a sorted array of
  64-bit hashes (8 bytes per record).
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import multiprocessing as mp
import os
import signal
import stat
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .errors import EdgeemoError
from .jsonl import read as read_jsonl
from .record import RecordError
from .record import check as check_record

log = logging.getLogger("edgeemo")
SORT_LIMIT = 10_000
CRASH_ENV = "EDGEEMO_TEST_CRASH_ON"      # tests only: a worker exits abruptly on the file of this name


def walk(paths: Iterable[str | os.PathLike], recursive: bool = False) -> Iterator[Path]:
    """Files named, and the files inside named folders (hidden entries skipped inside folders; symbolic links
    to files included; a path that does not exist is yielded as is, to get its record)."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            yield from _walk_dir(p, recursive)
        else:
            yield p


def _walk_dir(folder: Path, recursive: bool) -> Iterator[Path]:
    try:
        it = os.scandir(folder)
    except OSError:
        return
    with it:
        batch: list[os.DirEntry] = []
        streaming = False
        for entry in it:
            if entry.name.startswith("."):
                continue
            if streaming:
                yield from _entry(entry, recursive)
                continue
            batch.append(entry)
            if len(batch) > SORT_LIMIT:          # a huge folder: stream it in the filesystem's order
                streaming = True
                for e in batch:
                    yield from _entry(e, recursive)
                batch = []
        for e in sorted(batch, key=lambda e: e.name):
            yield from _entry(e, recursive)


def _entry(e: os.DirEntry, recursive: bool) -> Iterator[Path]:
    try:
        if e.is_dir(follow_symlinks=not e.is_symlink()):
            if recursive and not e.is_symlink():
                yield from _walk_dir(Path(e.path), recursive)
            return
    except OSError:
        pass
    yield Path(e.path)


def count(paths, recursive: bool) -> int:
    """How many inputs ``walk`` yields (for the time left), without holding them."""
    return sum(1 for _ in walk(paths, recursive))


# --- resume -----------------------------------------------------------------------------------------------------

def _key(*parts) -> int:
    return int.from_bytes(hashlib.blake2b("\0".join(map(str, parts)).encode("utf-8", "surrogateescape"),
                                          digest_size=8).digest(), "little")


def stat_key(path: str, size: int, mtime_ns: int) -> int:
    return _key("stat", os.path.abspath(path), size, mtime_ns)


def hash_key(path: str, sha256: str) -> int:
    return _key("hash", os.path.abspath(path), sha256)


class Done:
    """The inputs already recorded in a results.jsonl (see the module's text)."""

    def __init__(self, keys: np.ndarray, mode: str):
        self.keys, self.mode = keys, mode

    @classmethod
    def load(cls, jsonl: Path, mode: str, warn=None) -> "Done":
        """The inputs recorded in ``jsonl``; a line that is no record is ignored, and named (the first five)
        through ``warn`` (default: the log)."""
        warn = warn or (lambda message: log.warning("%s", message))
        keys: list[int] = []
        if jsonl.exists():
            skipped = 0
            for n, rec in read_jsonl(jsonl):
                try:
                    check_record(rec)
                except RecordError as exc:
                    skipped += 1
                    if skipped <= 5:
                        warn(f"{jsonl}, line {n}: not a result record "
                             f"({'not JSON, or torn' if rec is None else exc}); --resume ignores it")
                    continue
                if not rec.get("file"):
                    continue
                if mode == "hash":
                    if rec.get("sha256"):
                        keys.append(hash_key(rec["file"], rec["sha256"]))
                elif rec.get("size") is not None and rec.get("mtime_ns") is not None:
                    keys.append(stat_key(rec["file"], rec["size"], rec["mtime_ns"]))
        return cls(np.unique(np.array(keys, dtype=np.uint64)), mode)

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: int) -> bool:
        i = int(np.searchsorted(self.keys, np.uint64(key)))
        return i < len(self.keys) and int(self.keys[i]) == key

    def has(self, path: Path) -> bool:
        """Whether ``path`` (as it is now) already has a record."""
        if not len(self.keys):
            return False
        try:
            st = os.stat(path)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        if self.mode == "hash":
            from .ledger import file_sha256
            sha = file_sha256(path)
            return sha is not None and hash_key(str(path), sha) in self
        return stat_key(str(path), st.st_size, st.st_mtime_ns) in self


def source_fields(path: Path) -> dict:
    """``size`` and ``mtime_ns`` of an input, kept in its record so that ``--resume`` can skip it later."""
    try:
        st = os.stat(path)
    except OSError:
        return {}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns} if stat.S_ISREG(st.st_mode) else {}


# --- workers ----------------------------------------------------------------------------------------------------

def _worker(conn, options, annotate, roots, done: Done | None, blur: bool = False) -> None:
    """One worker process: build a classifier, then classify the paths it is sent until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C reaches the whole group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import cv2
    cv2.setNumThreads(1)          # the parallelism is the processes: OpenCV's own threads would only contend
    from .pipeline import Classifier
    try:
        clf = Classifier(options)
    except Exception as exc:         # the parent says it, once (it builds the same classifier itself)
        conn.send(("fatal", None, str(exc)))
        return
    crash_on = os.environ.get(CRASH_ENV)
    while True:
        try:
            path = conn.recv()
        except EOFError:
            return
        if path is None:
            return
        path = Path(path)
        if done is not None and done.has(path):
            conn.send(("skip", str(path), None))
            continue
        if crash_on and path.name == crash_on:
            os._exit(3)
        conn.send(("rec", str(path), classify_one(clf, path, annotate, roots, blur)))


def classify_one(clf, path: Path, annotate: Path | None, roots, blur: bool = False) -> dict:
    """One input's record (and its annotated copy); shared by the workers and the in-process loop."""
    import logging
    result = clf.analyze(path, **source_fields(path))
    rec = result.record
    if annotate and result.image is not None:
        from . import annotate as ann
        root = next((r for r in roots if path.is_relative_to(r)), None)
        try:
            ann.save(result.image.pixels, rec["faces"], ann.annotated_path(annotate, path, root), result.image.scale,
                     blur)
        except OSError as exc:
            logging.getLogger("edgeemo").warning("%s: annotated copy not written (%s)", path, exc)
    return rec


class Pool:
    """N worker processes, each fed up to ``depth`` paths ahead (see the module's text)."""

    def __init__(self, n: int, options, annotate, roots, done: Done | None, depth: int = 2, blur: bool = False):
        self.ctx = mp.get_context("spawn")     # a fresh interpreter: nothing of the parent's state is shared
        self.n = n
        self.args = (options, annotate, roots, done, blur)
        self.depth = depth                     # a worker never waits for the parent between two files
        self.workers: list[dict] = []
        for _ in range(n):
            self.workers.append(self._start())

    def _start(self) -> dict:
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker, args=(child, *self.args), daemon=True)
        p.start()
        child.close()
        return {"proc": p, "conn": parent, "paths": deque()}

    def slots(self) -> list[dict]:
        """One entry per path the workers can take now, the least loaded workers first."""
        return [w for level in range(self.depth) for w in self.workers if len(w["paths"]) <= level]

    def busy(self) -> int:
        return sum(len(w["paths"]) for w in self.workers)

    def give(self, w: dict, path: Path) -> None:
        w["paths"].append(path)
        w["conn"].send(str(path))

    def results(self, timeout: float | None):
        """(kind, path, record) tuples as workers finish; ``("crash", path, exitcode)`` for a worker that died
        with a file in hand (it is replaced), ``("again", path, None)`` for each further file that worker
        had been given: it was never started and goes to another worker; ``("fatal", path, message)`` for a
        worker that could not build its classifier."""
        waitables = {w["conn"]: w for w in self.workers if w["paths"]}
        waitables.update({w["proc"].sentinel: w for w in self.workers if w["paths"]})
        out = []
        seen = set()
        for ready in wait(list(waitables), timeout):
            w = waitables[ready]
            if id(w) in seen:                      # its pipe and its sentinel can both be ready
                continue
            seen.add(id(w))
            try:
                while w["paths"] and w["conn"].poll():
                    kind, path, rec = w["conn"].recv()
                    if kind == "fatal":            # it could not build its classifier
                        return [(kind, str(w["paths"][0]), rec)]
                    w["paths"].popleft()
                    out.append((kind, path, rec))
                if w["proc"].is_alive() or not w["paths"]:
                    continue
            except (EOFError, OSError):
                pass
            w["proc"].join(1)
            out.append(("crash", str(w["paths"].popleft()), w["proc"].exitcode))
            out.extend(("again", str(p), None) for p in w["paths"])
            self.workers.remove(w)
            w["conn"].close()
            self.workers.append(self._start())
        return out

    def close(self) -> None:
        for w in self.workers:
            try:
                w["conn"].send(None)
            except (OSError, ValueError):
                pass
        for w in self.workers:
            w["proc"].join(5)
            if w["proc"].is_alive():
                w["proc"].kill()
                w["proc"].join()
            w["conn"].close()


def crash_message(path: str, exitcode) -> str:
    how = (f"was killed by signal {-exitcode} ({signal.Signals(-exitcode).name})" if exitcode and exitcode < 0
           else f"exited with status {exitcode}")
    return (f"{path}: the worker process classifying it {how} (a decoder crash, or out of memory); it was "
            f"replaced and the run went on")


class Progress:
    """A one-line progress display on a terminal: files done, files/s, time left (once the total is known)."""

    def __init__(self, stream, total_fn=None):
        import threading
        self.stream, self.done, self.total = stream, 0, None
        self.t0 = self._shown = time.monotonic()
        if total_fn is not None:
            threading.Thread(target=lambda: setattr(self, "total", total_fn()), daemon=True).start()

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._shown >= 0.5:
            self._shown = now
            rate = self.done / max(now - self.t0, 1e-6)
            left = ""
            if self.total:
                secs = max(0.0, (self.total - self.done) / rate) if rate else 0
                left = f" of {self.total:,}; {int(secs // 60)} min {int(secs % 60):02d} s left"
            self.stream.write(f"\rclassifying: {self.done:,}{left}; {rate:,.1f} files/s   ")
            self.stream.flush()

    def end(self) -> None:
        self.stream.write("\r" + " " * 79 + "\r")
        self.stream.flush()


class BatchError(EdgeemoError):
    """The batch cannot go on: results not writable, workers that cannot start or keep dying (exit 1)."""

    exit_code = 1


@dataclass
class Summary:
    """What a batch did: counts by record status and by label, and where it stopped."""

    jobs: int
    status: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    faces: int = 0
    skipped: int = 0                # already recorded (--resume)
    seconds: float = 0.0
    result_paths: list = field(default_factory=list)
    videos: int = 0                 # videos among the inputs (their frames are counted as images)
    tracks: int = 0                 # face tracks written to tracks.jsonl
    stopped: bool = False           # the caller's stop() said so before the inputs ran out
    left: int = 0                   # inputs not started when it stopped

    @property
    def images(self) -> int:
        return sum(self.status.values())

    def text(self) -> str:
        n, dt = self.images, self.seconds
        per_label = ", ".join(f"{k} {v}" for k, v in self.labels.most_common()) or "none"
        return (f"{n} images in {dt:.1f} s ({n / dt if dt > 0 else 0:.1f} images/s, {self.jobs} "
                f"process{'es' if self.jobs > 1 else ''}): {self.faces} faces ({per_label}); "
                f"{self.status['no_face']} without a face; {self.status['unreadable']} unreadable; "
                f"{self.status['error']} errors"
                + (f"; {self.skipped} skipped (already recorded)" if self.skipped else "")
                + (f"; {self.videos} video{'s' if self.videos > 1 else ''}, {self.tracks} face tracks"
                   if self.videos else "")
                + (f"; results in {', '.join(map(str, self.result_paths))}" if self.result_paths else ""))


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run(paths, options, out: Path | None = None, formats=("jsonl",), annotate: Path | None = None,
        recursive: bool = False, jobs: int | None = None, resume: str | None = None,
        make_classifier=None, echo=lambda text: None, stop=lambda: False, progress_stream=None,
        every: int = 1, blur_faces: bool = False) -> Summary:
    """Classify every input under ``paths``: one record each, to ``out``'s result files (or standard output).

    ``options``: a ``pipeline.ClassifierOptions``. ``jobs``: worker processes (None: the usable cores; 1:
    this process, in name order). ``resume``: "stat" or "hash", skip inputs already recorded in
    ``out``/results.jsonl. Videos (``edgeemo.video``) are analysed in this process, one frame in ``every``,
    one record per analysed frame, their face tracks ending in ``out``/tracks.jsonl.
    ``make_classifier(options)`` builds this process's classifier (default
    ``pipeline.Classifier``); ``echo`` gets messages for the user; ``stop()`` is asked between files, and when
    it says so the run ends after the records in hand (``Summary.stopped``, ``Summary.left``)."""
    from .pipeline import Classifier
    from .results import ResultFiles, StdoutWriter
    paths = [Path(p) for p in paths]
    jobs = usable_cores() if jobs is None else jobs
    done = Done.load(out / "results.jsonl", resume, warn=lambda m: echo(f"edgeemo: warning: {m}")) \
        if resume else None
    inputs = walk(paths, recursive)
    first = [p for _, p in zip(range(2), inputs)]
    if len(first) < 2:
        jobs = 1                                       # one input: no worker to start
    inputs = itertools.chain(first, inputs)
    roots = [p for p in paths if p.is_dir()]
    # the workers start first: their start-up overlaps the parent's own (a model to label error records)
    pool = Pool(jobs, options, annotate, roots, done, blur=blur_faces) if jobs > 1 else None
    try:
        clf = (make_classifier or Classifier)(options)
        results = ResultFiles(out, list(formats), clf.labels, repair=resume is not None) if out else \
            StdoutWriter(formats[0], clf.labels)
    except BaseException:
        if pool:
            pool.close()
        raise
    if done is not None:
        echo(f"edgeemo: resuming: {len(done):,} inputs in {out / 'results.jsonl'} are skipped")
    summary = Summary(jobs, result_paths=list(results.paths) if out else [])
    progress = Progress(progress_stream, lambda: count(paths, recursive)) \
        if progress_stream is not None and len(first) > 1 else None

    def write(rec: dict) -> None:
        try:
            results.write(rec)
        except OSError as exc:
            raise BatchError(f"cannot write results ({exc}); stopped after {summary.images} images") from None
        summary.status[rec["status"]] += 1
        summary.faces += len(rec["faces"])
        summary.labels.update(f["label"] for f in rec["faces"])
        if rec["status"] in ("unreadable", "error"):
            log.warning("%s", rec["error"])
        if progress:
            progress.step()

    from .results import TrackLog
    tracks = TrackLog(out, formats)
    video = {"every": every, "tracks": tracks, "blur": blur_faces}
    t0 = time.perf_counter()
    try:
        if pool is None:
            inputs = _run_here(clf, inputs, done, annotate, roots, write, stop, summary, video)
        else:
            videos: list[Path] = []
            inputs = _run_pool(pool, clf, inputs, write, stop, summary, videos)
            inputs = itertools.chain(_run_here(clf, iter(videos), done, annotate, roots, write, stop, summary,
                                               video), inputs)
    finally:
        if progress:
            progress.end()
        results.close()
        tracks.close()
    summary.tracks = tracks.written
    summary.seconds = time.perf_counter() - t0
    if stop():
        summary.stopped, summary.left = True, sum(1 for _ in inputs)
    return summary


def _run_here(clf, inputs, done, annotate, roots, write, stop, summary, video) -> Iterator[Path]:
    """One process, in name order; gives back the inputs not started."""
    from .video import classify_video, is_video
    for path in inputs:
        if stop():
            return itertools.chain([path], inputs)
        if done is not None and done.has(path):
            summary.skipped += 1
            continue
        if is_video(path):
            from .ledger import file_sha256
            summary.videos += 1
            for rec in classify_video(clf, path, video["every"], file_sha256(path), video["tracks"].write,
                                      **source_fields(path)):
                write(rec)
                if stop():
                    break
            continue
        write(classify_one(clf, path, annotate, roots, video["blur"]))
    return inputs


def _run_pool(pool: "Pool", clf, inputs, write, stop, summary, videos: list) -> Iterator[Path]:
    """The worker processes, records in completion order; gives back the inputs not started. Videos are put
    in ``videos`` for this process (their frames stay in order)."""
    from .video import is_video
    crashes_in_a_row = 0
    again: list[Path] = []                      # given to a worker that died before starting them
    try:
        exhausted = False
        while True:
            if not stop() and not exhausted:
                for w in pool.slots():
                    nxt = again.pop() if again else next(inputs, None)
                    while nxt is not None and not again and is_video(nxt):
                        videos.append(nxt)
                        nxt = next(inputs, None)
                    if nxt is None:
                        exhausted = True
                        break
                    pool.give(w, nxt)
            if not pool.busy():
                break
            for kind, path, rec in pool.results(0.5):
                if kind == "again":
                    again.append(Path(path))
                    exhausted = False
                    continue
                if kind == "fatal":
                    raise BatchError(f"a worker process could not set up its classifier: {rec}; try --jobs 1")
                crashes_in_a_row = crashes_in_a_row + 1 if kind == "crash" else 0
                if kind == "skip":
                    summary.skipped += 1
                elif kind == "rec":
                    write(rec)
                else:
                    write(clf.record(path, "error", error=crash_message(path, rec), **source_fields(Path(path))))
                if crashes_in_a_row > 2 * pool.n + 2:
                    raise BatchError(f"the worker processes keep dying ({crashes_in_a_row} files in a row; the "
                                     f"last {crash_message(path, rec)}); is memory short? Try --jobs 1")
    finally:
        pool.close()
    return itertools.chain(again, inputs)
