"""`edgeemo collect`: the fleet's central copy. Subscribes to every device under a prefix and appends what
arrives to ``DIR/results.jsonl`` and ``DIR/results.csv`` (a ``device`` column first), dropping repeats by
(device, message id).

Nothing is lost while the collector is stopped: it keeps a persistent session on the broker (a fixed client
id made from DIR, ``clean_session`` off, QoS 1), so the broker holds the messages meanwhile; and a message
is acknowledged only after its record is written, so a crash makes the broker send it again, and the ids
already in ``results.jsonl`` (read at start) make that repeat harmless.

No message can stop it. Each is bounded (``MAX_MESSAGE_BYTES``), parsed without following nesting into a
crash, and checked against the one record shape (``edgeemo.record.check``). The device is the one in the
topic: a record that names another device is refused, so a broker ACL by topic decides who may speak for
whom. A message that cannot be stored is acknowledged and set aside in ``DIR/rejected.jsonl`` with the
reason, so a persistent session cannot replay a poison message into every restart. The network loop runs
in a thread of ours that survives any exception in a callback; a write that fails (a full disk) stops the
collector with exit status 1, the message unacknowledged, for systemd to restart it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

from . import jsonl
from .labels import LABELS
from .mqtt import Broker, check_device_name, diagnose, make_client, reason_text
from .record import RecordError, now_iso
from .record import check as check_record
from .results import _AppendFile, _csv_encode, csv_columns, csv_rows, escape_cell

log = logging.getLogger("edgeemo")

MAX_MESSAGE_BYTES = 1 << 20         # a record with 1,000 faces is about 200 KB
MAX_ID = 128
KEPT_PAYLOAD = 4096                 # bytes of a rejected message kept in rejected.jsonl


class Collector:
    def __init__(self, broker: Broker, out: Path, labels=LABELS, metrics_file: Path | None = None):
        self.broker, self.out, self.labels = broker, Path(out), list(labels)
        self.metrics = None
        if metrics_file is not None:
            from .metrics import MetricsFile, check_ours
            check_ours(Path(metrics_file))
            self.metrics = MetricsFile(Path(metrics_file), None, families=self._families)
        self.connected = False
        self.out.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.out / "results.jsonl"
        self.csv_path = self.out / "results.csv"
        self.seen = self._load_seen()
        self.jsonl = _AppendFile(self.jsonl_path, fsync=True)
        new_csv = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        self.csv = _AppendFile(self.csv_path, fsync=True)
        if new_csv:
            self.csv.append(_csv_encode([["device", *csv_columns(self.labels)]]))
        self.rejected_path = self.out / "rejected.jsonl"
        self.written = self.repeats = self.malformed = 0
        self.exit_code = 0
        self._lock = threading.Lock()
        self.stop_event = threading.Event()
        cid = "edgeemo-collect-" + hashlib.sha1(str(self.out.resolve()).encode()).hexdigest()[:12]
        self.client = make_client(broker, cid, clean=False, manual_ack=True)
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
        self.connected = True
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
        self.connected = False
        if not self.stop_event.is_set():
            log.warning("MQTT: lost the connection to %s (%s); reconnecting", self.broker, rc)

    def _on_message(self, _client, _u, msg) -> None:
        """Store, refuse or stop; never raise into paho's loop. The message is acknowledged once it is stored
        or set aside, and not when the collector stops on a failed write (the broker sends it again)."""
        try:
            self.receive(msg.topic, msg.payload)
        except OSError as exc:
            log.error("%s: cannot write (%s); stopping with exit status 1 so that the service is restarted, the "
                      "message unacknowledged", self.out, exc.strerror or exc)
            self.exit_code = 1
            self.stop_event.set()
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not make the collector deaf
            log.exception("%s: unexpected error on a message; it is set aside", msg.topic)
            try:
                self._reject(msg.topic, msg.payload, f"unexpected error: {type(exc).__name__}: {exc}")
            except OSError:
                pass
        try:
            self.client.ack(msg.mid, msg.qos)
        except Exception:  # noqa: BLE001
            log.exception("MQTT: could not acknowledge a message")

    def receive(self, topic: str, payload: bytes) -> str:
        """One message: "written", "repeat" or "rejected" (set aside in rejected.jsonl with the reason)."""
        parts = topic.split("/")
        device = parts[-2] if len(parts) >= 2 else ""
        try:
            device = check_device_name(device)
            if len(payload) > MAX_MESSAGE_BYTES:
                raise RecordError(f"{len(payload):,} bytes, over the {MAX_MESSAGE_BYTES:,} a record may take")
            rec = jsonl.parse(payload)
            if rec is None:
                raise RecordError("not a JSON object (or nested too deep)")
            check_record(rec)
            if rec.get("device") not in (None, device):
                raise RecordError(f"it names device {str(rec['device'])[:64]!r}, but came on {device!r}'s topic")
            if not isinstance(rec.get("id"), str) or not 0 < len(rec["id"]) <= MAX_ID:
                raise RecordError(f"'id' must be a string of 1 to {MAX_ID} characters")
            line = json.dumps({"device": device, **{k: v for k, v in rec.items() if k != "device"}},
                              ensure_ascii=True, allow_nan=False) + "\n"
            rows = _csv_encode([[escape_cell(device), *row] for row in csv_rows(rec, self.labels)])
        except (RecordError, ValueError, TypeError, KeyError, RecursionError) as exc:
            self._reject(topic, payload, str(exc) or type(exc).__name__)
            return "rejected"
        key = (device, rec["id"])
        with self._lock:
            if key in self.seen:
                self.repeats += 1
                return "repeat"
            self.jsonl.append(line.encode())            # both encoded before either is written: they agree
            self.csv.append(rows)
            self.seen.add(key)
            self.written += 1
        return "written"

    def _reject(self, topic: str, payload: bytes, reason: str) -> None:
        with self._lock:
            self.malformed += 1
            if self.malformed <= 20 or self.malformed % 1000 == 0:
                log.warning("%s: a message that is not a storable edgeemo record (%d bytes): %s; set aside in %s "
                            "(%d so far)", topic[:200], len(payload), reason, self.rejected_path, self.malformed)
            entry = {"time": now_iso(), "topic": topic[:1024], "reason": reason[:1024], "bytes": len(payload),
                     "payload": payload[:KEPT_PAYLOAD].decode("utf-8", "backslashreplace")}
            fd = os.open(self.rejected_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644)
            try:
                os.write(fd, (json.dumps(entry, ensure_ascii=True) + "\n").encode())
            finally:
                os.close(fd)

    def run(self) -> int:
        previous = {s: signal.signal(s, lambda *_: self.stop()) for s in (signal.SIGTERM, signal.SIGINT)}
        network = threading.Thread(target=self._network, name="mqtt-network", daemon=True)
        try:
            if self.metrics is not None:
                self.metrics.start()
            network.start()
            self.stop_event.wait()
        finally:
            self.client.disconnect()
            network.join(10)
            if self.metrics is not None:
                self.metrics.stop()
            self.jsonl.close()
            self.csv.close()
            for s, h in previous.items():
                signal.signal(s, h)
        log.info("collected %d records (%d repeats dropped, %d messages set aside in %s)",
                 self.written, self.repeats, self.malformed, self.rejected_path)
        return self.exit_code

    def _families(self, counter, gauge):
        """The collector's figures for --metrics-file: what `edgeemo status` reads back."""
        yield counter("edgeemo_collect_written", "Records stored since start", value=self.written)
        yield counter("edgeemo_collect_repeats", "Repeated messages dropped since start", value=self.repeats)
        yield counter("edgeemo_collect_rejected", "Messages set aside in rejected.jsonl since start",
                      value=self.malformed)
        yield gauge("edgeemo_mqtt_connected", "1 when connected to the MQTT broker", value=int(self.connected))
        yield gauge("edgeemo_up_seconds", "Seconds since the collector started",
                    value=time.time() - self.metrics.started)

    def _network(self) -> None:
        """paho's network loop, restarted after anything that escapes it (the watchdog of the network thread)."""
        connected = False
        while not self.stop_event.is_set():
            try:
                if not connected:
                    self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
                    connected = True
                self.client.loop_forever(retry_first_connection=True)
                if self.stop_event.is_set():
                    return
            except (OSError, ValueError) as exc:
                log.error("MQTT %s: %s; retrying", self.broker, exc)
            except Exception:  # noqa: BLE001 - the network loop must outlive any bug in a callback
                log.exception("MQTT: the network loop failed; restarting it")
            self.stop_event.wait(1.0)

    def stop(self) -> None:
        self.stop_event.set()


__all__ = ["Collector"]
