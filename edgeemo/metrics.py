"""Health without a listener: Prometheus text format written to a file every few seconds, for
node_exporter's textfile collector (``--metrics-file``), and ``edgeemo status`` reading it back for a person.

The format is written by prometheus-client (``write_to_textfile``: a temporary file, then a rename, so a
reader never sees half a file); it is in the ``[metrics]`` extra. The daemon opens no port.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from .errors import SetupError
from .labels import LABELS

log = logging.getLogger("edgeemo")

EXTRA_HELP = "install the metrics extra: pip install 'edgeemo[metrics]'"
INTERVAL = 5.0
STATUSES = ("ok", "no_face", "unreadable", "error")


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

    def __init__(self, path: Path, snapshot):
        self.pc, counter, gauge = _prometheus()
        self.path = Path(path)
        self.snapshot = snapshot
        self.started = time.time()
        outer = self

        class Collector:
            def collect(self):
                yield from outer._families(counter, gauge)

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
        rss = rss_bytes()
        if rss is not None:
            yield gauge("edgeemo_resident_memory_bytes", "Resident memory of the daemon process", value=rss)

    def write(self) -> None:
        try:
            self.pc.write_to_textfile(str(self.path), self.registry)
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write()
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(timeout=2)
        self.write()


def read(path: Path) -> dict[str, list[tuple[dict, float]]]:
    """The samples of a metrics file: name -> [(labels, value)]."""
    pc, _, _ = _prometheus()
    from prometheus_client.parser import text_string_to_metric_families
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SetupError(f"{path}: no metrics file (start the daemon with --metrics-file {path})") from None
    except OSError as exc:
        raise SetupError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    out: dict[str, list[tuple[dict, float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
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
    if one("edgeemo_mqtt_connected") is not None:
        lines.append(f"mqtt    {'connected' if one('edgeemo_mqtt_connected') else 'NOT connected'}; "
                     f"{int(one('edgeemo_mqtt_published_total', 0))} published; backlog "
                     f"{int(one('edgeemo_mqtt_backlog_bytes', 0)):,} bytes")
    rss = one("edgeemo_resident_memory_bytes")
    if rss is not None:
        lines.append(f"memory  {rss / 2**20:.0f} MB resident")
    return "\n".join(lines)
