"""Health without a listener: Prometheus text format written to a file every few seconds, for
node_exporter's textfile collector (``--metrics-file``), and ``edgeemo status`` reading it back for a person.

The format is made by prometheus-client (the ``[metrics]`` extra) and written by ``edgeemo.atomic`` (a
temporary file, flushed, then a rename, so a reader never sees half a file). The daemon opens no port. A file
at that path that edgeemo did not write (another program's, a link) is never replaced: the start fails
instead. ``edgeemo status`` says "unknown", with exit status 1, for a file that is empty (a power cut can
leave one), damaged or not edgeemo's, never "healthy".
"""
from __future__ import annotations

import logging
import math
import os
import stat
import threading
import time
from pathlib import Path

from . import atomic
from .errors import EdgeemoError, SetupError
from .labels import LABELS

log = logging.getLogger("edgeemo")

EXTRA_HELP = "install the metrics extra: pip install 'edgeemo[metrics]'"
INTERVAL = 5.0
STATUSES = ("ok", "no_face", "unreadable", "error")
OURS = b"# HELP edgeemo_"       # how every metrics file edgeemo writes begins


class StatusUnknown(EdgeemoError):
    """The metrics file cannot tell how the daemon is: empty, damaged, or not edgeemo's (exit status 1)."""

    exit_code = 1


def check_ours(path: Path) -> None:
    """SetupError unless ``path`` is absent, empty, or a metrics file edgeemo wrote: another program's file (or
    a link, a folder, a device) is never replaced."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SetupError(f"--metrics-file {path}: cannot look at it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise SetupError(f"--metrics-file {path} is {kind}; edgeemo writes only its own file there: choose "
                         f"another path")
    if st.st_size:
        with open(path, "rb") as fh:
            head = fh.read(len(OURS))
        if head != OURS:
            raise SetupError(f"--metrics-file {path} exists and is not a metrics file edgeemo wrote; it is never "
                             f"replaced: choose another path, or remove it if it is yours to lose")


def _prometheus():
    try:
        import prometheus_client
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    except ImportError:
        raise SetupError(f"--metrics-file needs the prometheus-client package, which is not installed; "
                         f"{EXTRA_HELP}") from None
    return prometheus_client, CounterMetricFamily, GaugeMetricFamily


def rss_bytes() -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class MetricsFile:
    """Writes the daemon's figures to ``path`` every INTERVAL seconds, in its own thread. ``snapshot`` is a
    function returning a dict: tally (Counter of statuses and ``face:<label>``), queue, last_record (a
    time.time() or None), mqtt (None, or a dict with backlog_bytes and connected)."""

    def __init__(self, path: Path, snapshot, families=None):
        """``families(counter, gauge)``: the metric families to write (default: the watch daemon's, from
        ``snapshot``)."""
        self.pc, counter, gauge = _prometheus()
        self.path = Path(path)
        self.snapshot = snapshot
        self.started = time.time()
        make = families or self._families

        class Collector:
            def collect(self):
                yield from make(counter, gauge)

        self.registry = self.pc.CollectorRegistry()
        self.registry.register(Collector())
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgeemo-metrics", daemon=True)
        self._warned = False

    def _families(self, counter, gauge):
        snap = self.snapshot()
        tally = snap["tally"]
        images = counter("edgeemo_images", "Images (or camera frames) recorded since start, by record status",
                         labels=["status"])
        for st in STATUSES:
            images.add_metric([st], tally.get(st, 0))
        yield images
        faces = counter("edgeemo_faces", "Faces classified since start, by label", labels=["label"])
        for lab in LABELS:
            faces.add_metric([lab], tally.get(f"face:{lab}", 0))
        yield faces
        yield gauge("edgeemo_queue_depth", "Files waiting to be classified", value=snap.get("queue", 0))
        last = snap.get("last_record")
        yield gauge("edgeemo_seconds_since_last_record",
                    "Seconds since the last record was written (since start when none yet)",
                    value=time.time() - (last or self.started))
        yield gauge("edgeemo_up_seconds", "Seconds since the daemon started", value=time.time() - self.started)
        mqtt = snap.get("mqtt")
        if mqtt is not None:
            yield gauge("edgeemo_mqtt_connected", "1 when connected to the MQTT broker", value=int(mqtt["connected"]))
            yield gauge("edgeemo_mqtt_backlog_bytes", "Bytes of results.jsonl not yet acknowledged by the broker",
                        value=mqtt["backlog_bytes"])
            yield counter("edgeemo_mqtt_published", "Records published and acknowledged since start",
                          value=mqtt["published"])
        cam = snap.get("camera")
        if cam is not None:
            frames = counter("edgeemo_camera_frames", "Camera frames since start: captured, analysed, and dropped "
                             "(replaced by a newer frame before they could be analysed)", labels=["outcome"])
            for outcome in ("captured", "analysed", "dropped"):
                frames.add_metric([outcome], cam[outcome])
            yield frames
            yield counter("edgeemo_camera_faces_classified", "Faces classified (a steady track reuses its last "
                          "answer in between)", value=cam["classified"])
            yield counter("edgeemo_camera_tracks", "Face tracks started since start", value=cam["tracks"])
        rss = rss_bytes()
        if rss is not None:
            yield gauge("edgeemo_resident_memory_bytes", "Resident memory of the daemon process", value=rss)

    def write(self) -> None:
        try:
            atomic.write_bytes(self.path, self.pc.generate_latest(self.registry))
            self._warned = False
        except OSError as exc:
            if not self._warned:
                log.error("%s: cannot write the metrics file (%s); retrying every %.0f s", self.path,
                          exc.strerror or exc, INTERVAL)
                self._warned = True

    def _run(self) -> None:
        while not self.stop_event.wait(INTERVAL):
            self.write()

    def start(self) -> None:
        check_ours(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write()
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread.ident is not None:         # started (a start refused before that writes nothing)
            self._thread.join(timeout=2)
            self.write()


def read(path: Path) -> dict[str, list[tuple[dict, float]]]:
    """The samples of a metrics file edgeemo wrote: name -> [(labels, value)]. StatusUnknown when the file is
    empty, damaged or not edgeemo's."""
    _prometheus()
    from prometheus_client.parser import text_string_to_metric_families
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SetupError(f"{path}: no metrics file (start the daemon with --metrics-file {path})") from None
    except OSError as exc:
        raise SetupError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    unknown = f"{path}: status unknown:"
    if not data.strip():
        raise StatusUnknown(f"{unknown} the file is empty (a power cut can leave it so; the daemon rewrites it "
                            f"every {INTERVAL:.0f} s: is it running?)")
    out: dict[str, list[tuple[dict, float]]] = {}
    try:
        if b"\0" in data:
            raise ValueError("it holds NUL bytes")
        for fam in text_string_to_metric_families(data.decode("utf-8")):
            for s in fam.samples:
                if not math.isfinite(s.value):
                    raise ValueError(f"{s.name} is {s.value}")
                out.setdefault(s.name, []).append((s.labels, s.value))
    except Exception as exc:  # noqa: BLE001 - the parser raises ValueError, TypeError, IndexError...
        raise StatusUnknown(f"{unknown} the file is damaged ({str(exc)[:200] or type(exc).__name__})") from None
    if "edgeemo_up_seconds" not in out:
        raise StatusUnknown(f"{unknown} not a metrics file of edgeemo watch (no edgeemo_up_seconds)")
    return out


def describe(samples: dict[str, list[tuple[dict, float]]], age: float) -> str:
    """A person's summary of a metrics file."""
    def one(name, default=None):
        v = samples.get(name)
        return v[0][1] if v else default

    images = {lab["status"]: int(v) for lab, v in samples.get("edgeemo_images_total", [])}
    faces = {lab["label"]: int(v) for lab, v in samples.get("edgeemo_faces_total", []) if v}
    lines = [f"up {one('edgeemo_up_seconds', 0) / 3600:.1f} h; figures written {age:.0f} s ago"
             + ("  (STALE: is the daemon running?)" if age > 6 * INTERVAL else ""),
             "images  " + ", ".join(f"{k} {images.get(k, 0)}" for k in STATUSES),
             "faces   " + (", ".join(f"{k} {v}" for k, v in sorted(faces.items(), key=lambda kv: -kv[1])) or "none"),
             f"queue   {int(one('edgeemo_queue_depth', 0))} waiting; last record "
             f"{one('edgeemo_seconds_since_last_record', 0):.0f} s ago"]
    if samples.get("edgeemo_collect_written_total"):
        lines = [lines[0], f"collect {int(one('edgeemo_collect_written_total', 0))} records stored, "
                           f"{int(one('edgeemo_collect_repeats_total', 0))} repeats dropped, "
                           f"{int(one('edgeemo_collect_rejected_total', 0))} messages set aside (rejected.jsonl)"]
    frames = {lab["outcome"]: int(v) for lab, v in samples.get("edgeemo_camera_frames_total", [])}
    if frames:
        lines.append(f"camera  {frames.get('analysed', 0)} frames analysed, {frames.get('dropped', 0)} dropped of "
                     f"{frames.get('captured', 0)} captured; "
                     f"{int(one('edgeemo_camera_faces_classified_total', 0))} faces classified, "
                     f"{int(one('edgeemo_camera_tracks_total', 0))} face tracks")
    if one("edgeemo_mqtt_connected") is not None:
        lines.append(f"mqtt    {'connected' if one('edgeemo_mqtt_connected') else 'NOT connected'}; "
                     f"{int(one('edgeemo_mqtt_published_total', 0))} published; backlog "
                     f"{int(one('edgeemo_mqtt_backlog_bytes', 0)):,} bytes")
    rss = one("edgeemo_resident_memory_bytes")
    if rss is not None:
        lines.append(f"memory  {rss / 2**20:.0f} MB resident")
    return "\n".join(lines)
