"""The skeleton shared by the folder and camera daemons: signals, the main loop, systemd notifications
(READY=1, STATUS=, WATCHDOG=1 while no worker is stuck, STOPPING=1), counters and the classifiers."""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter

from .config import WatchSettings
from .errors import SetupError
from .folders import OWNER_FILE, FolderLock, write_owner
from .notify import Notifier

log = logging.getLogger("edgeemo")

STATE_DIR = ".edgeemo-state"    # in the results folder: markers of the files in hand (crash-loop guard)
MQTT_DIR = ".edgeemo-mqtt"      # in the results folder: the MQTT publisher's cursor

TICK = 0.2
MAX_BACKOFF = 60.0


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


def make_classifiers(s: WatchSettings, n: int) -> list:
    """n independent classifiers (an interpreter is not shared between threads)."""
    from .errors import EdgeemoError
    from .pipeline import Classifier
    opts = s.classifier_options()
    try:
        out = [Classifier(opts) for _ in range(n)]
    except EdgeemoError as exc:       # an unusable model or detector: a set-up problem (exit status 2)
        raise SetupError(str(exc)) from None
    c = out[0]
    log.info("model %s (%s, %s, up to %d pass%s per face), detector %s, %d worker%s", c.model.name,
             c.model.path.name, "int8" if c.model.quantized else "float", c.model.max_passes(),
             "es" if c.model.max_passes() > 1 else "", c.detector.name, n, "s" if n > 1 else "")
    return out


class Backoff:
    """Seconds to wait before the next retry: 1 s, doubling up to MAX_BACKOFF; ``reset`` after a success."""

    def __init__(self, first: float = 1.0, most: float = MAX_BACKOFF):
        self.first, self.most = first, most
        self.delay = first

    def next(self) -> float:
        """The wait before this retry (and double the next one)."""
        d = self.delay
        self.delay = min(self.delay * 2, self.most)
        return d

    def reset(self) -> None:
        self.delay = self.first


class Service:
    """Signals, the main loop, and systemd notifications; subclasses do the work in their own threads and
    hold their folder locks in ``self.locks``. ``settings`` name the sidecars that run beside the work: the
    MQTT publisher (``mqtt``) and the metrics file (``metrics_file``)."""

    def __init__(self, settings: WatchSettings, n_workers: int):
        self.s = settings
        self.locks: list = []
        self.stop_event = threading.Event()
        self.notifier = Notifier.from_env()
        self.health = Health(n_workers)
        self.tally = Tally()
        self.exit_code = 0
        self.last_record: float | None = None
        self.publisher = None
        self.metrics = None
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

    def _on_hangup(self, _signum, _frame) -> None:
        log.info("SIGHUP ignored: settings are read at start; restart the service to apply new ones")

    def wake(self) -> None:
        """Unblock the workers after stop_event was set."""

    def _lock(self, folders, out) -> None:
        """One daemon per folder: lock each (folders.FolderLock) and note this PID in ``out``; all or none."""
        owner = out / OWNER_FILE
        try:
            for p in dict.fromkeys(folders):
                self.locks.append(FolderLock(p, owner))
            write_owner(owner)
        except BaseException:
            self._release_locks()
            raise

    def _release_locks(self) -> None:
        for lk in self.locks:
            lk.release()

    def counted(self, rec: dict) -> None:
        """Count a record that was written: its status, and its faces by label (``face:<label>``)."""
        self.tally.add(rec["status"])
        for f in rec.get("faces") or []:
            self.tally.add(f"face:{f['label']}")
        self.last_record = time.time()

    def queue_depth(self) -> int:
        return 0

    # MQTT publishing and the metrics file run beside the daemon, in their own threads
    def _broker(self):
        """(Broker, device name) of the settings; SetupError when the [mqtt] extra or a setting is wrong."""
        from .mqtt import Broker, device_name, paho, read_password
        paho()
        s = self.s
        return Broker.parse(s.mqtt, read_password(s.mqtt_password_file), s.mqtt_ca), device_name(s.mqtt_device)

    def check_sidecars(self) -> None:
        """Fail at start, before any work, when an extra the settings need is missing."""
        s = self.s
        if s.mqtt:
            self._broker()
        if s.metrics_file:
            from .metrics import _prometheus, check_ours
            _prometheus()
            check_ours(s.metrics_file)

    def _start_sidecars(self) -> None:
        s = self.s
        if s.mqtt:
            from .mqtt import Publisher
            broker, device = self._broker()
            self.publisher = Publisher(broker, device, s.out / "results.jsonl", s.out / MQTT_DIR,
                                       s.mqtt_ha_discovery)
            self.publisher.start()
        if s.metrics_file:
            from .metrics import MetricsFile
            self.metrics = MetricsFile(s.metrics_file, self._metrics_snapshot)
            self.metrics.start()

    def _metrics_snapshot(self) -> dict:
        pub = self.publisher
        return {"tally": self.tally.snapshot(), "queue": self.queue_depth(), "last_record": self.last_record,
                "mqtt": None if pub is None else {"connected": pub.is_connected, "published": pub.published,
                                                  "backlog_bytes": pub.outbox.backlog()}}

    def _stop_sidecars(self) -> None:
        if self.publisher is not None:
            self.publisher.stop()
        if self.metrics is not None:
            self.metrics.stop()

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
        # SIGHUP (a closed terminal, `systemctl reload`) does not stop the daemon: settings are read at start
        # only, so it is logged and ignored; restart the service to apply new settings.
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)
        try:
            self.check_sidecars()
            self.start()
            self._start_sidecars()
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
            self._stop_sidecars()
            self.notifier.close()
            for s, h in previous.items():
                signal.signal(s, h)
        return self.exit_code
