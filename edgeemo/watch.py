"""`edgeemo watch`: classify every photo (or video) that lands in an inbox folder exactly once.

Per file: classify it, append its record to ``results.jsonl`` (and ``results.csv``; one ``write`` per record,
fsynced), then move it into ``done/``, or into ``failed/`` beside a ``<name>.error.json`` saying why (a hard
link and an unlink, or ``os.replace`` where links are refused; see ``ledger.Mover``). A name that is taken
gets a suffix (``photo-1.jpg``); nothing is ever overwritten.

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

A video (``video.is_video``) gets one record per analysed frame (one in ``--every``), with face tracks
whose timelines go to ``tracks.jsonl``, and is moved on after its last frame; a video stopped half-way
(SIGTERM, a crash) is continued after its last recorded frame at the next start (its tracks start again).

SIGTERM and SIGINT finish the file in hand (a video: the frame in hand), flush and exit 0. Under systemd (``Type=notify``) the daemon
sends READY=1, STATUS= with counters and WATCHDOG=1 pings, which stop when a worker is stuck on one file.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEventHandler

from .config import WatchSettings
from .errors import SetupError, StartError
from . import imageio
from .intake import Intake
from .folders import prepare_folder
from .ledger import ERROR_SUFFIX, FAILED_STATUSES, Attempts, FileChanged, Mover, file_sha256
from .record import summary
from .results import open_ledger
from .service import STATE_DIR, Backoff, Service, make_classifiers

log = logging.getLogger("edgeemo")

IGNORED_SUFFIXES = (".part", ".tmp", "~")
MAX_ATTEMPTS = 3


def ignored(name: str) -> bool:
    """Names the watcher leaves alone until they are renamed: dot-files and temporary names."""
    return name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


# --- the folder daemon -----------------------------------------------------------------------------------------

class FolderDaemon(Service):
    def __init__(self, s: WatchSettings):
        super().__init__(s, s.workers)
        self.inbox = prepare_folder(s.inbox, "inbox", create=False)
        self.done = prepare_folder(s.done, "done")
        self.failed = prepare_folder(s.failed, "failed")
        self.out = prepare_folder(s.out, "results")
        dev = os.stat(self.inbox).st_dev
        for what, p in (("done", self.done), ("failed", self.failed)):
            if os.stat(p).st_dev != dev:
                raise SetupError(f"{p} (the {what} folder) is on another filesystem than the inbox {self.inbox}; "
                                 f"files are moved by a link or a rename, which cannot cross filesystems, so put "
                                 f"both on the same one")
        self._lock([self.inbox, self.done, self.failed, self.out], self.out)
        try:
            self.classifiers = make_classifiers(s, s.workers)
            imageio.share_decode_budget(s.workers)       # the workers decode at the same time
            self.results = open_ledger(self.out, s.format, self.classifiers[0].labels)
            from .results import TrackLog
            self.tracks = TrackLog(self.out, s.format)      # the timelines of the face tracks of videos
        except BaseException:
            self._release_locks()
            raise
        self.mover = Mover(self.done, self.failed)
        self.attempts = Attempts(self.out / STATE_DIR)
        self.intake = Intake(s.queue_size, s.settle)
        self.observer = None
        self._inbox_id: tuple[int, int] | None = None
        self._last_scan = 0.0
        self._backlog = False
        self._events_lost = threading.Event()      # set from the watcher's thread on an inotify queue overflow
        self._overflows = _OverflowListener(self._events_lost.set)
        self.mode = "poll" if s.poll else "inotify"
        self.workers: list[threading.Thread] = []

    # start-up
    def recover(self) -> None:
        names = set(self._entries())
        ledger = self.results.tail_index(names)
        recorded_names = {n for n, _ in ledger}
        # A replay is a file recorded but not moved on when the daemon died: its attempt marker is still
        # there (it is removed only after the move). The same photo dropped again while the daemon was
        # stopped, after the first was moved on, has none: it is a new file and gets its own record.
        in_hand = {n for n, _ in self.attempts.left_over()}
        for name in sorted(recorded_names):
            src = self.inbox / name
            rec = ledger.get((name, file_sha256(src)))
            if rec is None:
                continue
            if "frame" in rec and rec.get("status") in ("ok", "no_face"):
                continue             # a video's frame: handle() continues it after its last recorded frame
            if name not in in_hand:
                log.info("%s: the same name and content as a file recorded before; it was dropped again and is "
                         "classified as a new file", src)
                continue
            try:
                dst = self.mover.finish(src, rec)
            except OSError as exc:
                raise StartError(f"{src}: recorded before the restart but cannot be moved on ({exc}); fix the "
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
        rec = self.classifiers[0].record(
            str(src), "error", sha256=file_sha256(src),
            error=f"{src}: edgeemo stopped {count} times while processing this file (a crash, a hang stopped by "
                  f"the watchdog, or running out of memory), so it was set aside; see the service log "
                  f"(journalctl -u edgeemo) for the cause")
        if self.commit(rec, src, None):
            self.attempts.end(name)

    def start(self) -> None:
        self.recover()
        for i, clf in enumerate(self.classifiers):
            t = threading.Thread(target=self._work, args=(i, clf), name=f"edgeemo-worker-{i}", daemon=True)
            t.start()
            self.workers.append(t)
        st = os.stat(self.inbox)
        self._inbox_id = (st.st_dev, st.st_ino)
        logging.getLogger("watchdog").addHandler(self._overflows)
        self.observer = self._start_observer()
        self.intake.trust_mtime = self.mode == "inotify"
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
                obs.schedule(handler, str(self.inbox), recursive=False,          # created: for links
                             event_filter=[FileClosedEvent, FileMovedEvent, FileCreatedEvent])
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

    def rescan(self) -> int:
        """Offer every file in the inbox (pending: it may still be being written), until the queue is full;
        returns how many the queue did not hold already."""
        self.intake.clear_overflow()
        found = 0
        for name in self._entries():
            found += name not in self.intake
            if not self.intake.add(name, ready=False):
                break
        self._last_scan = time.monotonic()
        return found

    def _entries(self):
        """Names in the inbox that are not ignored and not folders. A link is an entry whatever it points at
        (a folder, nothing, itself): it gets a record saying what it is, and is set aside."""
        with os.scandir(self.inbox) as it:
            for e in it:
                if not ignored(e.name) and not e.is_dir(follow_symlinks=False):
                    yield e.name

    def _stat(self, name: str):
        """The file's status, or the link's own where its target cannot be reached (a loop, a dangling link)."""
        try:
            return os.stat(self.inbox / name)
        except OSError:
            return os.lstat(self.inbox / name)

    def tick(self, now: float) -> None:
        self.intake.check_pending(self._stat, now)
        if self.intake.overflowed and not self._backlog:
            log.info("more files than the queue holds (%d); the others are picked up by scanning the inbox again "
                     "as the queue empties", self.intake.capacity)
            self._backlog = True
        elif self._backlog and not self.intake.overflowed and not len(self.intake):
            self._backlog = False
        if self.intake.needs_rescan():
            self.rescan()
        if self._events_lost.is_set():
            self._events_lost.clear()
            self._log_scan("the scan after an inotify queue overflow", self.rescan(), always=True)
        try:
            st = os.stat(self.inbox)
        except OSError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode):
            log.error("the inbox %s has disappeared; stopping (create it again and restart the service)", self.inbox)
            self.exit_code = 1
            self.stop_event.set()
        elif (st.st_dev, st.st_ino) != self._inbox_id:
            # removed and created again between two ticks: the old watch is on a folder that is gone
            log.warning("the inbox %s was replaced by a new folder; watching the new one", self.inbox)
            self._inbox_id = (st.st_dev, st.st_ino)
            self._stop_observer()
            self.observer = self._start_observer()
            self._log_scan("the new inbox", self.rescan())
        elif self.s.rescan and now - self._last_scan >= self.s.rescan and not self.intake.overflowed:
            self._log_scan("a periodic scan", self.rescan())
        elif self.observer is not None and not self.observer.is_alive():
            log.error("the file watcher for %s stopped unexpectedly; exiting so that the service is restarted",
                      self.inbox)
            self.exit_code = 1
            self.stop_event.set()

    def _log_scan(self, what: str, found: int, always: bool = False) -> None:
        if always and not found:
            log.warning("%s of %s found no file the queue did not hold already", what, self.inbox)
        elif found:
            log.warning("%s of %s found %d file%s that no event announced (lost events); they are processed now",
                        what, self.inbox, found, "s" if found != 1 else "")
        else:
            log.debug("%s of %s found nothing new", what, self.inbox)

    def wake(self) -> None:
        self.intake.close()

    def queue_depth(self) -> int:
        return len(self.intake)

    def status_text(self) -> str:
        c = self.tally.snapshot()
        ready, pending, busy = self.intake.counts()
        done = c["ok"] + c["no_face"]
        failed = c["unreadable"] + c["error"]
        text = (f"{done + failed} processed: {done} done ({c['ok']} ok, {c['no_face']} no face), {failed} failed; "
                f"{ready + pending + busy} waiting" + (" (and more in the inbox)" if self._backlog else ""))
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

    def _classify(self, clf, src: Path):
        """(record, identity of the bytes it describes), or (None, None) when the file vanished. The bytes are
        read through one descriptor, so the record describes exactly what its identity names."""
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            log.debug("%s vanished before it was processed", src)
            return None, None
        except OSError as exc:
            return clf.record(str(src), "unreadable", error=f"{src}: cannot read ({exc.strerror or exc})"), None
        if stat.S_ISLNK(st.st_mode):
            # Never followed: a producer could point it anywhere the service may read.
            return clf.record(str(src), "unreadable", error=f"{src}: a symbolic link; links in the inbox are not "
                              f"followed: put the file itself there (copy, move or hard-link it)"), None
        try:
            data, ident = imageio.read_bytes_and_identity(src, follow=False)
        except imageio.ImageError as exc:
            if not os.path.lexists(src):
                return None, None
            return clf.record(str(src), exc.status, error=str(exc)), None
        return clf.analyze(src, data=data).record, ident

    def handle(self, clf, name: str, worker: int | None = None) -> None:
        src = self.inbox / name
        self.attempts.begin(name)
        left = False                  # a stop came first: the file stays in the inbox for the next start
        try:
            from .video import is_video
            if is_video(src):
                left = not self.video(clf, src, worker)
                return
            rec, ident = self._classify(clf, src)
            if rec is not None and imageio.looks_incomplete(rec) and self._recently_changed(src):
                # A producer may close a file and append the rest later: look again once it has been left
                # alone for --settle seconds; only then is it judged truncated.
                log.debug("%s is incomplete and was changed just now; looking again later", src)
                self.intake.add(name, ready=False)
                return
            if ident is not None and self._identity(src) != ident:
                # replaced or rewritten while it was classified: the record would describe other bytes
                log.info("%s changed while it was classified; classifying its new content", src)
                self.intake.add(name, ready=False)
                return
            left = rec is not None and not self.commit(rec, src, worker, ident)
        finally:
            # a marker survives only a crash; after a clean stop the file is simply tried again
            self.attempts.end(name)
            if left:
                log.info("%s: left in the inbox for the next start", src)

    def video(self, clf, src: Path, worker: int | None) -> bool:
        """A video in the inbox: a record per analysed frame, appended as it comes, then the move (decided by
        its last record: an ``error`` or ``unreadable`` one sets it aside in failed/). Continued after the
        frames recorded before a stop or a crash. False if a stop came first."""
        import contextlib
        from .video import classify_video
        try:
            ident = imageio.identity(os.lstat(src))
            sha = file_sha256(src)
        except OSError:
            log.debug("%s vanished before it was processed", src)
            return True
        before = self.results.tail_index({src.name}).get((src.name, sha))
        start = 0
        if before is not None and isinstance(before.get("frame"), int) and before.get("status") in ("ok", "no_face"):
            start = before["frame"] + 1
            log.info("%s: frames up to %d were recorded before the restart; continuing from frame %d (its face "
                     "tracks start again)", src, before["frame"], start)
        last = before if start else None
        frames = classify_video(clf, src, self.s.every, sha, self.tracks_ended, start=start)
        with contextlib.closing(frames):
            for rec in frames:
                if worker is not None:
                    self.health.busy(worker)          # a long video is progress, not a stuck worker
                if not self._append(rec, src, worker):
                    return False
                self.counted(rec)
                last = rec
                if self.stop_event.is_set() and rec["status"] in ("ok", "no_face"):
                    log.info("%s: stopped after frame %s; it is continued from there at the next start", src,
                             rec.get("frame"))
                    return False
        if last is None:             # a video with no frame left after ``start``: nothing more to record
            last = clf.record(str(src), "no_face", sha256=sha)
        if self._identity(src) != ident:
            log.info("%s changed while it was analysed; its records describe the earlier content", src)
        return self._move(last, src, worker, ident)

    def tracks_ended(self, line: dict) -> None:
        try:
            self.tracks.write(line)
        except OSError as exc:
            log.warning("a face track's timeline not written to %s (%s)", self.out, exc.strerror or exc)

    @staticmethod
    def _identity(src: Path):
        try:
            return imageio.identity(os.lstat(src))
        except OSError:
            return None

    def _recently_changed(self, src: Path) -> bool:
        try:
            return time.time() - os.lstat(src).st_mtime < max(self.s.settle, 1.0)
        except OSError:
            return False

    def _wait(self, worker: int | None, seconds: float) -> bool:
        """Sleep without counting as stuck; True if a stop was requested meanwhile."""
        if worker is not None:
            self.health.idle(worker)
        stopped = self.stop_event.wait(seconds)
        if worker is not None:
            self.health.busy(worker)
        return stopped

    def commit(self, rec: dict, src: Path, worker: int | None, ident=None) -> bool:
        """Append the record, then move the file on; retried with back-off (disk full, permissions) without
        classifying again. False if a stop came first (the state on disk is then one that a restart resumes)."""
        if not self._append(rec, src, worker):
            return False
        self.counted(rec)
        return self._move(rec, src, worker, ident)

    def _append(self, rec: dict, src: Path, worker: int | None) -> bool:
        """Append a record, retried with back-off; False if a stop came first."""
        backoff = Backoff()
        while True:
            try:
                self.results.append(rec)
                return True
            except OSError as exc:
                delay = backoff.next()
                log.error("%s: cannot append its result to %s (%s); the file stays in the inbox; retrying in "
                          "%.0f s (free some disk space or fix the folder's permissions)", src, self.out,
                          exc.strerror or exc, delay)
                if self._wait(worker, delay):
                    return False

    def _move(self, rec: dict, src: Path, worker: int | None, ident=None) -> bool:
        """Move a recorded file on (done/ or failed/ by its record), retried with back-off."""
        backoff = Backoff()
        while True:
            try:
                dst = self.mover.finish(src, rec, expect=ident[:2] if ident else None)
                break
            except FileNotFoundError:
                log.warning("%s: vanished from the inbox after it was classified; its result is recorded", src)
                return True
            except FileChanged:
                log.warning("%s: replaced between its record and its move; the new content is classified as a "
                            "new file", src)
                self.intake.add(src.name, ready=False)
                return True
            except OSError as exc:
                delay = backoff.next()
                log.error("%s: recorded, but it cannot be moved on (%s); retrying in %.0f s (check that the "
                          "service may write to %s and %s)", src, exc.strerror or exc, delay, self.done, self.failed)
                if self._wait(worker, delay):
                    return False
        if rec["status"] in FAILED_STATUSES:
            log.warning("%s; moved to %s (reason in %s%s)", rec["error"], dst, dst.name, ERROR_SUFFIX)
        else:
            log.info("%s: %s -> %s", src.name, summary(rec), dst)
        return True

    def _stop_observer(self) -> None:
        if self.observer is None:
            return
        # watchdog 7 may log a harmless "queue_events() called when the thread is inactive" while stopping
        wlog = logging.getLogger("watchdog")
        level = wlog.level
        wlog.setLevel(logging.CRITICAL)
        try:
            self.observer.stop()
            self.observer.join(timeout=5)
        except (OSError, RuntimeError) as exc:          # its folder is gone: nothing left to stop
            log.debug("stopping the old file watcher: %s", exc)
        finally:
            wlog.setLevel(level)
        self.observer = None

    def shutdown(self) -> None:
        self.intake.close()
        for t in self.workers:
            t.join()
        self._stop_observer()
        logging.getLogger("watchdog").removeHandler(self._overflows)
        self.tracks.close()
        self.results.close()
        self._release_locks()
        log.info("stopped: %s", self.status_text())


class _OverflowListener(logging.Handler):
    """Calls ``callback`` when watchdog reports that the kernel's inotify queue overflowed (events were lost),
    so that the inbox is scanned at once rather than at the next periodic scan. watchdog handles the
    overflow inside its watch group and tells nobody but its log ("Inotify queue overflowed; filesystem
    events were lost", watchdog 7); where a version says nothing, the periodic scan (--rescan) recovers."""

    def __init__(self, callback):
        super().__init__(logging.WARNING)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if "queue overflow" in record.getMessage().lower():
                self.callback()
        except Exception:  # noqa: BLE001 - a log handler must never raise
            pass


def _complete_on_arrival(path) -> bool:
    """A symbolic link, a FIFO or other special file, or a hard link to a file that already has another name:
    nothing more is written to it as a file (no close event follows), so it is taken as it is."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISREG(st.st_mode):
        return st.st_nlink > 1
    return not stat.S_ISDIR(st.st_mode)


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
        elif kind == "created" and _complete_on_arrival(event.src_path):
            path, ready = event.src_path, True          # `ln -s` or `ln`: no write, so no close event follows
        else:
            return
        if not path:
            return
        parent, name = os.path.split(os.fsdecode(path))
        if os.path.normpath(parent) != self.inbox or ignored(name):
            return
        self.d.intake.add(name, ready=ready)


# --- entry point -------------------------------------------------------------------------------------------------
