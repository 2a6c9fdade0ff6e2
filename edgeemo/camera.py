"""Camera mode of `edgeemo watch`: classify the newest frame, up to ``--fps`` frames a second.

Two threads. The grabber reads the camera continuously and keeps only its newest frame (``FrameSlot``); the
analyser takes that frame whenever it is free and the ``--fps`` cap allows, so a slow CPU analyses fewer
frames but never falls behind: a frame replaced before it was taken is dropped and counted (status, metrics,
the summary at stop). A recorded video given as the camera is read in order instead, one frame in
``--every``, nothing dropped, and its end stops the daemon.

``--camera 0`` (or 1, ...) opens a USB/V4L2 camera, a device path or a video URL through cv2.VideoCapture;
``--camera picamera2`` opens the Raspberry Pi CSI camera through picamera2 (imported only then; on Raspberry Pi
OS it comes from apt, so the venv needs --system-site-packages). Records carry ``frame_time`` (UTC, when the
frame was taken) and ``camera``; ``file`` is the saved frame, or null. ``--save-frames none|with-faces|all``
keeps JPEG frames in ``--frames-dir`` (default OUT/frames), deleting the oldest beyond ``--frames-max-mb``.
A camera that cannot be opened or stops delivering frames is retried with back-off (1 s doubling to 60 s);
that is logged, never fatal.
"""
from __future__ import annotations

import datetime as _dt
import logging
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from . import atomic
from .config import DEFAULT_FPS, WatchSettings
from .errors import SetupError
from .folders import prepare_folder
from .record import summary
from .results import open_ledger
from .service import Backoff, Service, make_classifiers

log = logging.getLogger("edgeemo")


class CameraError(Exception):
    """The camera cannot be opened or read now; the caller retries."""


class CameraEnded(CameraError):
    """A recorded video given as the camera came to its end: the daemon stops (it is not reopened)."""


class OpenCVCamera:
    """A V4L2 camera (index or /dev/videoN), or anything else cv2.VideoCapture opens (a file, an RTSP URL)."""

    def __init__(self, spec: str):
        self.spec = spec
        self.name = f"camera {spec}"
        self._cap = None
        # a recorded video: every frame in order (one in ``every``), and the end of the file ends the run
        self.finite = not spec.isdigit() and Path(spec).is_file()
        self.every = 1
        self.frames_read = 0
        self.index = -1               # a recorded video: the index of the last frame read
        self.fps = 25.0               # a recorded video: its frame rate (frame times are the video's own)

    def open(self) -> None:
        import cv2
        try:
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our own message says it better
        except AttributeError:
            pass
        if self.spec.isdigit():
            cap = cv2.VideoCapture(int(self.spec), cv2.CAP_V4L2)
            hint = ("is it plugged in? See ls /dev/video* and v4l2-ctl --list-devices; is the service user in "
                    "the 'video' group?")
        else:
            cap = cv2.VideoCapture(self.spec)
            hint = "check the path or URL"
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"{self.name} cannot be opened ({hint})")
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not one the driver queued
        if self.finite:
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.fps = fps if 0 < fps < 1000 else 25.0
        self._cap = cap

    @property
    def is_open(self) -> bool:
        return self._cap is not None

    def read(self) -> np.ndarray:
        if self._cap is None:
            raise CameraError(f"{self.name} is not open")
        if self.finite and self.frames_read:
            for _ in range(self.every - 1):           # the frames --every skips (0, N, 2N, ...): not decoded
                if not self._cap.grab():
                    raise CameraEnded(f"{self.name}: the end of the video, after {self.frames_read} frames")
                self.index += 1
        ok, frame = self._cap.read()
        if not ok or frame is None or frame.size == 0:
            if self.finite:
                raise CameraEnded(f"{self.name}: the end of the video, after {self.frames_read} frames")
            raise CameraError(f"{self.name} stopped delivering frames (unplugged, or the stream ended)")
        self.frames_read += 1
        self.index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class PiCamera:
    """The Raspberry Pi CSI camera through picamera2 (libcamera); frames as BGR arrays ("RGB888")."""

    SIZE = (1280, 960)

    def __init__(self):
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SetupError(f"--camera picamera2: the picamera2 package cannot be imported ({exc}). On Raspberry "
                             f"Pi OS: sudo apt install python3-picamera2, and create the venv with "
                             f"--system-site-packages (deploy/install.sh --picamera2 does both)") from None
        self._cls = Picamera2
        self._cam = None
        self.name = "camera picamera2"

    def open(self) -> None:
        try:
            cam = self._cls()
            cam.configure(cam.create_preview_configuration(main={"format": "RGB888", "size": self.SIZE}))
            cam.start()
        except Exception as exc:  # noqa: BLE001 - picamera2 raises IndexError/RuntimeError when no camera answers
            raise CameraError(f"{self.name} cannot be started ({type(exc).__name__}: {exc}; is the ribbon cable "
                              f"seated, and does `rpicam-hello --list-cameras` see it?)") from None
        self._cam = cam

    @property
    def is_open(self) -> bool:
        return self._cam is not None

    def read(self) -> np.ndarray:
        try:
            return self._cam.capture_array("main")
        except Exception as exc:  # noqa: BLE001
            raise CameraError(f"{self.name} stopped delivering frames ({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            except Exception:  # noqa: BLE001 - closing a camera that is gone
                pass
            self._cam = None


def open_source(spec: str):
    return PiCamera() if spec.lower() == "picamera2" else OpenCVCamera(spec)


class FrameStore:
    """JPEG frames in a folder, the oldest deleted so that they never take more than ``max_bytes``."""

    PREFIX = "frame-"

    def __init__(self, folder: Path, max_bytes: int, max_age: float | None = None):
        """``max_age``: seconds after which a saved frame is deleted (None: kept until the room is needed)."""
        self.folder, self.max_bytes, self.max_age = folder, max_bytes, max_age
        self._files: deque[tuple[Path, int]] = deque()
        self.total = 0
        for p in sorted(folder.glob(f"{self.PREFIX}*.jpg")):
            try:
                size = p.stat().st_size
            except OSError:
                continue
            self._files.append((p, size))
            self.total += size
        self._warned = False
        self._trim(0)

    def _trim(self, incoming: int) -> None:
        if self.max_age is not None:
            limit = time.time() - self.max_age
            while self._files:
                p, size = self._files[0]
                try:
                    if p.stat().st_mtime >= limit:
                        break
                    p.unlink()
                except FileNotFoundError:
                    pass
                self._files.popleft()
                self.total -= size
        while self._files and self.total + incoming > self.max_bytes:
            p, size = self._files.popleft()
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            self.total -= size

    def save(self, pixels: np.ndarray, when: _dt.datetime, seq: int) -> Path | None:
        import cv2
        ok, buf = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            return None
        data = buf.tobytes()
        if len(data) > self.max_bytes:
            if not self._warned:
                log.warning("a frame (%d bytes) is larger than --frames-max-mb allows; frames are not saved",
                            len(data))
                self._warned = True
            return None
        self._trim(len(data))
        path = self.folder / f"{self.PREFIX}{when:%Y%m%dT%H%M%S}.{when.microsecond // 1000:03d}Z-{seq:06d}.jpg"
        atomic.write_bytes(path, data, fsync=False)       # a frame is worth no disk flush
        self._files.append((path, len(data)))
        self.total += len(data)
        return path


class FrameSlot:
    """The newest frame, handed from the grabber thread to the analyser. ``put`` replaces a frame not yet
    taken (which is dropped and counted), unless ``lossless`` (a recorded video): then it waits until the
    frame is taken, so that nothing is dropped. ``finish`` says that no frame will follow."""

    def __init__(self, lossless: bool):
        self.lossless = lossless
        self._cond = threading.Condition()
        self._item = None
        self.captured = 0
        self.dropped = 0
        self.ended = False

    def put(self, item, stop: threading.Event) -> None:
        with self._cond:
            while self.lossless and self._item is not None and not stop.is_set():
                self._cond.wait(0.2)
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.captured += 1
            self._cond.notify_all()

    def take(self, timeout: float):
        """The newest frame not taken yet, or None after ``timeout`` seconds (or at the end)."""
        with self._cond:
            if self._item is None and not self.ended:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def finish(self) -> None:
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def discard(self) -> None:
        """At stop: a frame left untaken counts as dropped."""
        with self._cond:
            if self._item is not None:
                self._item = None
                self.dropped += 1


class CameraDaemon(Service):
    def __init__(self, s: WatchSettings):
        super().__init__(s, 1)
        self.source = open_source(s.camera)      # picamera2 missing: SetupError now, not later
        self.source.every = s.every
        # settings made by config.resolve have fps set; ones built by hand may give only the older interval
        self.fps = s.fps or (1.0 / s.interval if s.interval else DEFAULT_FPS)
        self.finite = getattr(self.source, "finite", False)
        self.out = prepare_folder(s.out, "results")
        self._lock([self.out], self.out)
        try:
            self.clf = make_classifiers(s, 1)[0]
            self.results = open_ledger(self.out, s.format, self.clf.labels)
            from .results import TrackLog
            from .track import Tracker
            self.tracker = Tracker(self.clf.labels)     # face tracks across frames, their timelines in tracks.jsonl
            self.tracks = TrackLog(self.out, s.format)
            self.t0 = time.monotonic()
            self.frames = None
            if s.save_frames != "none":
                prepare_folder(s.frames_dir, "frames")
                self.frames = FrameStore(s.frames_dir, int(s.frames_max_mb * 1024 * 1024),
                                         None if s.frames_max_age is None else s.frames_max_age * 3600)
        except BaseException:
            self._release_locks()
            raise
        self.state = "starting"
        self.slot = FrameSlot(lossless=self.finite)
        self.analysed = 0
        self._thread: threading.Thread | None = None
        self._grabber: threading.Thread | None = None

    def start(self) -> None:
        self._grabber = threading.Thread(target=self._grab, name="edgeemo-camera-grab", daemon=True)
        self._thread = threading.Thread(target=self._loop, name="edgeemo-camera", daemon=True)
        self._grabber.start()
        self._thread.start()
        pace = (f"every frame{'' if self.s.every == 1 else f' of {self.s.every}'} in order, up to {self.fps:g}/s"
                if self.finite else f"the newest frame, up to {self.fps:g} frames/s")
        log.info("%s: %s; results in %s%s", self.source.name, pace, ", ".join(map(str, self.results.paths)),
                 f"; frames ({self.s.save_frames}) in {self.s.frames_dir}" if self.frames else "")

    def _grab(self) -> None:
        """The grabber thread: keep the camera open (retrying with back-off) and hand over every frame."""
        backoff = Backoff()
        stop = self.stop_event
        try:
            while not stop.is_set():
                if not self.source.is_open:
                    try:
                        self.source.open()
                        log.info("%s opened", self.source.name)
                        self.state = "running"
                    except CameraError as exc:
                        delay = backoff.next()
                        self.state = f"camera unavailable, retrying in {delay:.0f} s"
                        log.warning("%s; retrying in %.0f s", exc, delay)
                        stop.wait(delay)
                        continue
                try:
                    pixels = self.source.read()
                except CameraEnded as exc:
                    log.info("%s; stopping", exc)
                    self.state = "ended"
                    return
                except CameraError as exc:
                    self.source.close()
                    delay = backoff.next()
                    self.state = f"camera lost, retrying in {delay:.0f} s"
                    log.warning("%s; retrying in %.0f s", exc, delay)
                    stop.wait(delay)
                    continue
                backoff.reset()
                when = _dt.datetime.now(_dt.timezone.utc)
                if self.finite:               # a recorded video: its own frame index and time
                    index = self.source.index
                    t = index / self.source.fps
                else:                         # a live camera: frames counted since the start, wall-clock time
                    index = self.slot.captured
                    t = time.monotonic() - self.t0
                self.slot.put((pixels, index, t, when), stop)
        finally:
            self.slot.finish()

    def _loop(self) -> None:
        """The analyser thread: the newest frame, at most --fps a second."""
        period = 1.0 / self.fps
        next_at = time.monotonic()
        stop = self.stop_event
        while not stop.is_set():
            if stop.wait(max(0.0, next_at - time.monotonic())):
                break
            item = self.slot.take(0.5)
            if item is None:
                if self.slot.ended:
                    stop.set()                # a recorded video came to its end
                    break
                continue
            self.health.busy(0)
            try:
                self.frame(*item)
                self.analysed += 1
            finally:
                self.health.idle(0)
            next_at = max(next_at + period, time.monotonic())

    def frame(self, pixels: np.ndarray, seq: int, t: float, when: _dt.datetime) -> None:
        """Analyse one frame (number ``seq``, ``t`` seconds into the run, taken at ``when``): its record (faces,
        tracks), its saved copy, its ended tracks' timelines."""
        from .video import track_frame
        try:
            rec = track_frame(self.clf, self.tracker, None, pixels, seq, t, None,
                              {"frame": seq, "frame_time": when.isoformat(timespec="milliseconds"),
                               "camera": self.s.camera})
        except Exception as exc:  # noqa: BLE001 - a bad frame must not stop the camera
            log.debug("frame %d failed", seq, exc_info=True)
            rec = self.clf.record(None, "error", error=f"frame {seq}: {type(exc).__name__}: {exc}",
                                  frame=seq, frame_time=when.isoformat(timespec="milliseconds"), camera=self.s.camera)
        for tr in self.tracker.ended(t):
            self._track_ended(tr)
        keep = self.frames is not None and (self.s.save_frames == "all" or rec["faces"])
        if keep:
            try:
                if self.s.blur_faces and rec["faces"]:
                    from .annotate import blur_faces
                    pixels = blur_faces(pixels, rec["faces"])
                saved = self.frames.save(pixels, when, seq)
                rec["file"] = str(saved) if saved else None
            except OSError as exc:
                log.warning("frame not saved to %s (%s)", self.s.frames_dir, exc.strerror or exc)
        try:
            self.results.append(rec)
        except OSError as exc:
            log.error("cannot append a frame's result to %s (%s); this frame is skipped (free some disk space "
                      "or fix the folder's permissions)", self.out, exc.strerror or exc)
            self.tally.add("lost")
            return
        self.counted(rec)
        log.debug("frame %d at %s: %s", seq, rec["frame_time"], summary(rec))

    def frame_counts(self) -> dict:
        """Frames captured, analysed and dropped (replaced by a newer one before they could be analysed),
        faces classified and the tracks started, since the start."""
        return {"captured": self.slot.captured, "analysed": self.analysed, "dropped": self.slot.dropped,
                "classified": self.tracker.classifications, "tracks": self.tracker.next_id - 1}

    def status_text(self) -> str:
        c = self.tally.snapshot()
        f = self.frame_counts()
        return (f"{self.source.name}: {self.state}; {f['analysed']} frames analysed ({c['ok']} with faces, "
                f"{c['no_face']} without), {f['dropped']} dropped of {f['captured']} captured; "
                f"{f['classified']} faces classified, {f['tracks']} face tracks")

    def _metrics_snapshot(self) -> dict:
        return {**super()._metrics_snapshot(), "camera": self.frame_counts()}

    def _track_ended(self, tr) -> None:
        """The timeline of a track that ended, to tracks.jsonl (naming the camera, for the MQTT track events)."""
        from .track import timeline
        try:
            self.tracks.write(timeline(tr, str(self.s.camera)) | {"camera": self.s.camera})
        except OSError as exc:
            log.warning("a track's timeline not written to %s (%s)", self.out, exc.strerror or exc)

    def shutdown(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self._grabber is not None:
            self._grabber.join(timeout=5.0)   # a camera read blocks for a frame at most; a stuck one is left
        self.slot.discard()
        for tr in self.tracker.close():
            self._track_ended(tr)
        self.tracks.close()
        if self._grabber is None or not self._grabber.is_alive():
            self.source.close()
        self.results.close()
        self._release_locks()
        log.info("stopped: %s", self.status_text())
