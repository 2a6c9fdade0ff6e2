"""`edgeemo collect`: the fleet's central copy. Subscribes to every device under a prefix and appends what
arrives to ``DIR/results.jsonl`` and ``DIR/results.csv`` (a ``device`` column first), dropping repeats by
(device, message id).

Nothing is lost while the collector is stopped: it keeps a persistent session on the broker (a fixed client
id made from DIR, ``clean_session`` off, QoS 1), so the broker holds the messages meanwhile; and a message
is acknowledged only after its record is written, so a crash makes the broker send it again, and the ids
already in ``results.jsonl`` (read at start) make that repeat harmless.
"""
from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
from pathlib import Path

from . import jsonl
from .errors import SetupError
from .labels import LABELS
from .mqtt import Broker, diagnose, make_client, reason_text
from .results import _AppendFile, _csv_encode, csv_columns, csv_rows, escape_cell

log = logging.getLogger("edgeemo")


class Collector:
    def __init__(self, broker: Broker, out: Path, labels=LABELS):
        self.broker, self.out, self.labels = broker, Path(out), list(labels)
        self.out.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.out / "results.jsonl"
        self.csv_path = self.out / "results.csv"
        self.seen = self._load_seen()
        self.jsonl = _AppendFile(self.jsonl_path, fsync=True)
        new_csv = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        self.csv = _AppendFile(self.csv_path, fsync=True)
        if new_csv:
            self.csv.append(_csv_encode([["device", *csv_columns(self.labels)]]))
        self.written = self.repeats = self.malformed = 0
        self._lock = threading.Lock()
        self.stop_event = threading.Event()
        cid = "edgeemo-collect-" + hashlib.sha1(str(self.out.resolve()).encode()).hexdigest()[:12]
        self.client = make_client(broker, cid, clean=False)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_connect_fail = self._on_connect_fail
        self._refused = None

    def _load_seen(self) -> set[tuple[str, str]]:
        seen = set()
        if not self.jsonl_path.exists():
            return seen
        with open(self.jsonl_path, "rb") as fh:
            data = fh.read()
        if data and not data.endswith(b"\n"):           # a torn last line (power cut): cut it
            cut = data.rfind(b"\n") + 1
            with open(self.jsonl_path, "r+b") as fh:
                fh.truncate(cut)
            log.warning("%s: removed an incomplete last line (%d bytes); the broker sends that message again",
                        self.jsonl_path, len(data) - cut)
            data = data[:cut]
        for line in data.splitlines():
            rec = jsonl.parse(line)
            try:
                seen.add((rec["device"], rec["id"]))
            except (KeyError, TypeError):           # not a record (None), or one without those two
                continue
        return seen

    def _on_connect(self, client, _u, flags, rc, _p=None):
        if rc.is_failure:
            text = reason_text(rc)
            if text != self._refused:
                log.error("MQTT %s: %s; retrying", self.broker, text)
                self._refused = text
            return
        self._refused = None
        topic = f"{self.broker.prefix}/+/result"
        client.subscribe(topic, qos=1)
        log.info("collecting %s from %s into %s (%s)", topic, self.broker, self.out,
                 "session resumed" if flags.session_present else "new session")

    def _on_connect_fail(self, _c, _u):
        text = diagnose(self.broker)
        if text != self._refused:
            log.error("MQTT %s: %s; retrying every 1 to 30 s", self.broker, text)
            self._refused = text

    def _on_disconnect(self, _c, _u, _f, rc, _p=None):
        if not self.stop_event.is_set():
            log.warning("MQTT: lost the connection to %s (%s); reconnecting", self.broker, rc)

    def _on_message(self, _client, _u, msg) -> None:
        device = msg.topic.split("/")[-2]
        try:
            rec = json.loads(msg.payload)
            key = (str(rec.get("device") or device), str(rec["id"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            self.malformed += 1
            log.warning("%s: a message that is not an edgeemo record (%d bytes); skipped", msg.topic, len(msg.payload))
            return
        with self._lock:
            if key in self.seen:
                self.repeats += 1
                return
            rec = {"device": key[0], **{k: v for k, v in rec.items() if k != "device"}}
            self.jsonl.append((json.dumps(rec, ensure_ascii=True) + "\n").encode())
            self.csv.append(_csv_encode([[escape_cell(key[0]), *row] for row in csv_rows(rec, self.labels)]))
            self.seen.add(key)
            self.written += 1

    def run(self) -> int:
        previous = {s: signal.signal(s, lambda *_: self.stop()) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            try:
                self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
            except (OSError, ValueError) as exc:
                raise SetupError(f"MQTT {self.broker}: {exc}") from None
            self.client.loop_start()
            self.stop_event.wait()
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            self.jsonl.close()
            self.csv.close()
            for s, h in previous.items():
                signal.signal(s, h)
        log.info("collected %d records (%d repeats dropped, %d malformed messages skipped)",
                 self.written, self.repeats, self.malformed)
        return 0

    def stop(self) -> None:
        self.stop_event.set()


__all__ = ["Collector"]
