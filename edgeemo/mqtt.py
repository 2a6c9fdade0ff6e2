"""Results to an MQTT broker: a publisher that follows ``results.jsonl`` from a saved cursor (the outbox),
Home Assistant discovery, and the broker address. Needs the ``[mqtt]`` extra (paho-mqtt 2.x).

The record file stays the source of truth. The publisher reads complete lines after its cursor, publishes
each as one QoS 1 message to ``<prefix>/<device>/result`` and moves the cursor on (``<out>/.edgeemo-mqtt/
cursor.json``, written atomically) only when the broker has acknowledged every message up to it. A
broker that is away, a ``kill -9`` or a power cut therefore delays messages and never drops them; at worst a
message is sent twice, and each carries a stable ``id`` (the record's byte offset in ``results.jsonl`` and a
hash of its line) with which a consumer such as ``edgeemo collect`` drops the repeat. The backlog is the
record file itself, not memory.

Topics under ``<prefix>/<device>/``: ``result`` (every record, with ``id`` and ``device`` added), ``state``
(retained: last label, faces in the last record, counts per label since start, people in view),
``availability`` (retained ``online``; the broker publishes ``offline`` as the last will when the daemon
vanishes), and ``track``: face-track events of cameras and videos (``TrackEvents``), ``event_type``
``start`` (a person came into view), ``change`` (their steady emotion changed) and ``end`` (with the
track's timeline from ``tracks.jsonl``, which the publisher follows with a cursor of its own, like
``results.jsonl``). Start and change are read from the records, so they are as durable as the records.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import SetupError
from .labels import LABELS
from .track import source_of
from . import atomic, jsonl, record

log = logging.getLogger("edgeemo")

EXTRA_HELP = "install the MQTT extra: pip install 'edgeemo[mqtt]'"
PASSWORD_ENV = "EDGEEMO_MQTT_PASSWORD"
DEFAULT_PREFIX = "edgeemo"
BATCH = 200                    # messages in flight before waiting for their acknowledgements
ACK_TIMEOUT = 10.0
DISCOVERY_PREFIX = "homeassistant"


def paho():
    try:
        import paho.mqtt.client as client
    except ImportError:
        raise SetupError(f"MQTT needs the paho-mqtt package, which is not installed; {EXTRA_HELP}") from None
    return client


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    prefix: str
    user: str | None = None
    password: str | None = None
    tls: bool = False
    ca: Path | None = None

    @classmethod
    def parse(cls, url: str, password: str | None = None, ca: str | os.PathLike | None = None) -> "Broker":
        """``mqtt://[user@]host[:port][/prefix]`` or ``mqtts://...``; a password in the URL is refused (it would
        show in ``ps``): give ``--mqtt-password-file`` or $EDGEEMO_MQTT_PASSWORD."""
        parts = urlsplit(str(url))
        if parts.scheme not in ("mqtt", "mqtts"):
            raise SetupError(f"--mqtt {url!r}: expected mqtt://[user@]host[:port][/prefix] or mqtts://...")
        if parts.password is not None:
            raise SetupError(f"--mqtt: put no password in the address (anyone can read it in `ps`); use "
                             f"--mqtt-password-file FILE or the environment variable {PASSWORD_ENV}")
        if not parts.hostname:
            raise SetupError(f"--mqtt {url!r}: no broker host name")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError:
            raise SetupError(f"--mqtt {url!r}: the port is not a number from 1 to 65535") from None
        prefix = parts.path.strip("/") or DEFAULT_PREFIX
        if any(c in prefix for c in "+#"):
            raise SetupError(f"--mqtt {url!r}: the topic prefix may not hold + or #")
        tls = parts.scheme == "mqtts"
        if ca is not None and not Path(ca).is_file():
            raise SetupError(f"--mqtt-ca {ca}: no such file (give the CA certificate of the broker, PEM)")
        return cls(parts.hostname, port, prefix, unquote(parts.username) if parts.username else None, password,
                   tls, Path(ca) if ca else None)

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}/{self.prefix}"


def read_password(path: str | os.PathLike | None) -> str | None:
    """The broker password: the first line of ``path``, else $EDGEEMO_MQTT_PASSWORD, else None."""
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").splitlines()[0].strip() if Path(path).stat().st_size else ""
        except OSError as exc:
            raise SetupError(f"--mqtt-password-file {path}: cannot read it ({exc.strerror or exc})") from None
    return os.environ.get(PASSWORD_ENV) or None


MAX_DEVICE_NAME = 64


def check_device_name(name) -> str:
    """A device name that an MQTT topic level can carry and a file, a CSV cell or a page can show: 1 to
    MAX_DEVICE_NAME characters, none of / + # and no control character (NUL included). ValueError otherwise."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_DEVICE_NAME:
        raise ValueError(f"a device name of 1 to {MAX_DEVICE_NAME} characters")
    if any(c in name for c in "/+#") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError("a device name without / + # or control characters")
    return name


def device_name(given: str | None = None) -> str:
    name = given or socket.gethostname().split(".")[0] or "edgeemo"
    try:
        return check_device_name(name)
    except ValueError as exc:
        raise SetupError(f"--mqtt-device {name[:80]!r}: not valid; expected {exc}") from None


def make_client(broker: Broker, client_id: str, *, clean: bool = True, will: tuple[str, str] | None = None,
                manual_ack: bool = False):
    """A paho client for ``broker`` (not connected yet); MQTT 3.1.1, so that any broker will do. With
    ``manual_ack`` a received QoS 1 message is acknowledged only by ``client.ack``."""
    mqtt = paho()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                    protocol=mqtt.MQTTv311, manual_ack=manual_ack)
    if broker.user is not None:
        c.username_pw_set(broker.user, broker.password)
    if broker.tls:
        c.tls_set(ca_certs=str(broker.ca) if broker.ca else None)
    if will is not None:
        c.will_set(will[0], will[1], qos=1, retain=True)
    c.reconnect_delay_set(1, 30)
    c.max_inflight_messages_set(BATCH)
    return c


REFUSED = {
    "Bad user name or password": "the broker refused the user name or password (check --mqtt-password-file)",
    # mosquitto answers a wrong password with "not authorised" too
    "Not authorized": "the broker refused this client: not authorised (check the user name, the password in "
                      "--mqtt-password-file or $EDGEEMO_MQTT_PASSWORD, and the broker's ACL)",
}


def reason_text(rc) -> str:
    text = str(rc)
    return REFUSED.get(text, f"the broker refused the connection ({text})")


def diagnose(broker: Broker) -> str:
    """Why a connection to ``broker`` fails, in words (paho reports only that it failed)."""
    import ssl
    try:
        sock = socket.create_connection((broker.host, broker.port), timeout=5)
    except OSError as exc:
        return f"cannot reach {broker.host}:{broker.port} ({exc.strerror or exc})"
    with sock:
        if broker.tls:
            try:
                ctx = ssl.create_default_context(cafile=str(broker.ca) if broker.ca else None)
                with ctx.wrap_socket(sock, server_hostname=broker.host):
                    pass
            except ssl.SSLCertVerificationError as exc:
                return (f"its TLS certificate is not trusted ({exc.verify_message}); give the broker's CA "
                        f"certificate with --mqtt-ca")
            except (ssl.SSLError, OSError) as exc:
                return f"the TLS handshake failed ({exc})"
        elif broker.port == 8883:
            return "port 8883 is usually TLS: use mqtts://"
    return "the connection failed (see the broker's log)"


def message_id(offset: int, line: bytes) -> str:
    return f"{offset}-{hashlib.sha1(line).hexdigest()[:12]}"


class Outbox:
    """The cursor into ``results.jsonl``: the byte offset up to which the broker has acknowledged every
    record, saved with the file's inode (a new results file starts from its first record)."""

    def __init__(self, results: Path, state_dir: Path, name: str = "cursor.json"):
        self.results = results
        self.path = state_dir / name
        state_dir.mkdir(parents=True, exist_ok=True)
        self.offset, self.inode = 0, None
        try:
            data = jsonl.parse(self.path.read_bytes())
            self.offset, self.inode = int(data["offset"]), data.get("inode")
            if self.offset < 0 or not isinstance(self.inode, (int, type(None))):
                raise ValueError("not a cursor")
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, OverflowError):
            self.offset, self.inode = 0, None
            log.warning("%s: unreadable MQTT cursor; publishing %s from its first record again (a consumer "
                        "drops the repeats by id)", self.path, results)

    def _check_file(self) -> int:
        try:
            st = os.stat(self.results)
        except FileNotFoundError:
            return 0
        if self.inode is not None and st.st_ino != self.inode or st.st_size < self.offset:
            log.warning("%s is a new file (replaced or cut); publishing it from its first record", self.results)
            self.offset = 0
        self.inode = st.st_ino
        return st.st_size

    def backlog(self) -> int:
        """Bytes of records not yet acknowledged by the broker (read-only: called from other threads)."""
        return max(0, self.size() - self.offset)

    def size(self) -> int:
        """The followed file's size in bytes (0 while it does not exist)."""
        try:
            return os.stat(self.results).st_size
        except OSError:
            return 0

    def pending(self, limit: int, upto: int | None = None) -> tuple[list[tuple[int, bytes]], int]:
        """Up to ``limit`` complete lines after the cursor (and before byte ``upto``), as (offset, line without
        newline), and the offset just after the last of them."""
        size = self._check_file()
        if upto is not None:
            size = min(size, upto)
        if size <= self.offset:
            return [], self.offset
        out = []
        with open(self.results, "rb") as fh:
            fh.seek(self.offset)
            pos = self.offset
            for raw in fh:
                if not raw.endswith(b"\n") or pos + len(raw) > size:
                    break                  # a record being written (or after ``upto``): next time
                if raw.strip():
                    out.append((pos, raw.rstrip(b"\n")))
                pos += len(raw)
                if len(out) >= limit:
                    break
        return out, pos

    def advance(self, to: int) -> None:
        self.offset = to
        atomic.write_json(self.path, {"offset": to, "inode": self.inode})


class TrackEvents:
    """Face-track events from the records, in order: ``start`` the first time a (source, track) is seen,
    ``change`` when its steady emotion (``track_label``) differs from the last one seen; ``ended`` turns a
    line of ``tracks.jsonl`` into an ``end`` event. A source is the record's camera or file; a camera
    daemon that restarts numbers its tracks from 1 again, which shows as its frame numbers going back."""

    def __init__(self):
        self.live: dict[tuple[str, int], str | None] = {}       # (source, track) -> steady emotion
        self._last_frame: dict[str, int] = {}

    def copy(self) -> "TrackEvents":
        """A copy to work on, kept only once its events are acknowledged."""
        other = TrackEvents()
        other.live, other._last_frame = dict(self.live), dict(self._last_frame)
        return other

    def from_record(self, rec: dict) -> list[dict]:
        faces = [f for f in rec.get("faces") or [] if isinstance(f, dict) and isinstance(f.get("track"), int)]
        src = source_of(rec)
        frame = rec.get("frame")
        if isinstance(frame, int):
            if frame < self._last_frame.get(src, -1):           # a restarted camera, or the video again
                self.live = {k: v for k, v in self.live.items() if k[0] != src}
            self._last_frame[src] = frame
        out = []
        for f in faces:
            key = (src, f["track"])
            label = f.get("track_label")
            base = {"track": f["track"], "source": src, "label": label,
                    "confidence": f.get("track_confidence"), "box": f.get("box"), "frame": frame,
                    "frame_time": rec.get("frame_time"), "time": rec.get("time")}
            if key not in self.live:
                out.append({"event_type": "start", **base})
            elif label != self.live[key]:
                out.append({"event_type": "change", "previous": self.live[key], **base})
            self.live[key] = label
        return out

    def ended(self, line: dict) -> dict:
        src = source_of(line)
        self.live.pop((src, line.get("track")), None)
        return {"event_type": "end", "source": src, "label": line.get("dominant"),
                **{k: v for k, v in line.items() if k not in ("file", "camera")}}

    def people(self) -> int:
        return len(self.live)


def discovery_configs(prefix: str, device: str, labels=LABELS) -> dict[str, dict]:
    """Home Assistant MQTT discovery payloads (retained, under ``homeassistant/``), keyed by topic."""
    base = f"{prefix}/{device}"
    dev = {"identifiers": [f"edgeemo_{device}"], "name": f"edgeemo {device}", "manufacturer": "edgeemo",
           "model": "facial emotion classifier"}
    common = {"state_topic": f"{base}/state", "availability_topic": f"{base}/availability",
              "payload_available": "online", "payload_not_available": "offline", "device": dev}
    uid = f"edgeemo_{device}"
    out = {
        f"{DISCOVERY_PREFIX}/sensor/{uid}/last_emotion/config": {
            **common, "name": "Last emotion", "unique_id": f"{uid}_last_emotion", "icon": "mdi:emoticon-outline",
            "value_template": "{{ value_json.last_label if value_json.last_label else 'none' }}"},
        f"{DISCOVERY_PREFIX}/sensor/{uid}/faces/config": {
            **common, "name": "Faces seen", "unique_id": f"{uid}_faces", "state_class": "total_increasing",
            "unit_of_measurement": "faces", "value_template": "{{ value_json.faces_total }}"},
        f"{DISCOVERY_PREFIX}/sensor/{uid}/people/config": {
            **common, "name": "People in view", "unique_id": f"{uid}_people", "icon": "mdi:account-group",
            "unit_of_measurement": "people", "value_template": "{{ value_json.people | default(0) }}"},
        f"{DISCOVERY_PREFIX}/event/{uid}/track/config": {
            "name": "Face track", "unique_id": f"{uid}_track", "state_topic": f"{base}/track",
            "event_types": ["start", "change", "end"], "availability_topic": f"{base}/availability",
            "payload_available": "online", "payload_not_available": "offline", "device": dev,
            "icon": "mdi:account-arrow-right"},
        f"{DISCOVERY_PREFIX}/binary_sensor/{uid}/status/config": {
            "name": "Status", "unique_id": f"{uid}_status", "device_class": "connectivity",
            "state_topic": f"{base}/availability", "payload_on": "online", "payload_off": "offline", "device": dev},
    }
    for lab in labels:
        out[f"{DISCOVERY_PREFIX}/sensor/{uid}/{lab}/config"] = {
            **common, "name": f"{lab.capitalize()} faces", "unique_id": f"{uid}_{lab}",
            "state_class": "total_increasing", "unit_of_measurement": "faces",
            "value_template": f"{{{{ value_json.counts.{lab} | default(0) }}}}"}
    return out


class Publisher:
    """Follows ``results`` and publishes every record (see the module's text). Runs in its own thread."""

    def __init__(self, broker: Broker, device: str, results: Path, state_dir: Path, ha_discovery: bool = False,
                 labels=LABELS):
        self.broker, self.device, self.labels = broker, device, list(labels)
        self.base = f"{broker.prefix}/{device}"
        self.outbox = Outbox(results, state_dir)
        self.track_outbox = Outbox(results.parent / "tracks.jsonl", state_dir, "tracks-cursor.json")
        self.events = TrackEvents()
        self.ha_discovery = ha_discovery
        self.client = make_client(broker, f"edgeemo-{device}-{os.getpid()}", will=(f"{self.base}/availability", "offline"))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.connected = threading.Event()
        self.stop_event = threading.Event()
        self.published = 0
        self.counts: Counter = Counter()
        self.faces_total = 0
        self.last: dict = {}
        self._refused = None
        self._thread = threading.Thread(target=self._run, name="edgeemo-mqtt", daemon=True)

    # paho callbacks (its network thread)
    def _on_connect(self, client, _userdata, _flags, rc, _props=None):
        if rc.is_failure:
            text = reason_text(rc)
            if text != self._refused:
                log.error("MQTT %s: %s; records are still written to %s and will be published when it accepts",
                          self.broker, text, self.outbox.results)
                self._refused = text
            return
        self._refused = None
        log.info("MQTT: connected to %s as device %r; publishing to %s/result", self.broker, self.device, self.base)
        client.publish(f"{self.base}/availability", "online", qos=1, retain=True)
        if self.ha_discovery:
            for topic, payload in discovery_configs(self.broker.prefix, self.device, self.labels).items():
                client.publish(topic, json.dumps(payload), qos=1, retain=True)
        self.connected.set()

    def _on_connect_fail(self, _client, _userdata):
        text = diagnose(self.broker)
        if text != self._refused:
            log.error("MQTT %s: %s; records are still written to %s and will be published once it connects "
                      "(retrying every 1 to 30 s)", self.broker, text, self.outbox.results)
            self._refused = text

    def _on_disconnect(self, _client, _userdata, _flags, rc, _props=None):
        if self.connected.is_set() and not self.stop_event.is_set():
            log.warning("MQTT: lost the connection to %s (%s); records are kept in %s and sent on reconnection",
                        self.broker, rc, self.outbox.results)
        self.connected.clear()

    def start(self) -> None:
        try:
            self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        except (OSError, ValueError) as exc:
            log.error("MQTT %s: %s; retrying", self.broker, exc)
        self.client.loop_start()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish what can be published within ``timeout``, say ``offline``, disconnect."""
        deadline = time.monotonic() + timeout
        # a short run (a recorded video as the camera) may end before the broker has even answered: wait for
        # the connection too, within the same timeout; what is left stays in the outbox for the next start
        while (self.outbox.backlog() or self.track_outbox.backlog()) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop_event.set()
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()) + ACK_TIMEOUT)
        if self.connected.is_set():
            info = self.client.publish(f"{self.base}/availability", "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def is_connected(self) -> bool:
        return self.connected.is_set()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            if not self.connected.wait(0.5):
                continue
            try:
                sent = self._publish_batch()
            except OSError as exc:
                log.error("MQTT: cannot read %s (%s); retrying", self.outbox.results, exc)
                sent = 0
            except Exception:  # noqa: BLE001 - the publisher thread outlives any bug; the outbox keeps the records
                log.exception("MQTT: publishing failed; retrying in 1 s (the records stay in %s)",
                              self.outbox.results)
                self.stop_event.wait(1.0)
                sent = 0
            if not sent:
                self.stop_event.wait(0.2)

    def _publish_batch(self) -> int:
        # A track's timeline is written after the last record that shows it: the timelines that exist before
        # the records are read may follow them once the records are caught up (a later one would come
        # before the records of its last frames, and its track would seem to start again).
        tracks_upto = self.track_outbox.size()
        lines, end = self.outbox.pending(BATCH)
        sent = 0
        if lines:
            sent = self._publish_records(lines, end)
            if not sent:
                return 0
        elif end > self.outbox.offset:
            self.outbox.advance(end)           # blank lines only
        if len(lines) < BATCH:                 # the records are caught up: the ends of tracks follow them
            sent += self._publish_track_ends(tracks_upto)
        return sent

    def _wait_acks(self, infos) -> bool:
        deadline = time.monotonic() + ACK_TIMEOUT
        for info in infos:
            left = deadline - time.monotonic()
            try:
                info.wait_for_publish(max(0.01, left))
            except (RuntimeError, ValueError):
                return False           # not connected: the same messages are published again later
            if not info.is_published():
                return False
        return True

    def _track_event(self, event: dict, msg_id: str):
        return self.client.publish(f"{self.base}/track", json.dumps({**event, "id": msg_id, "device": self.device},
                                                                   ensure_ascii=True), qos=1)

    def _publish_records(self, lines, end) -> int:
        infos, recs = [], []
        events = self.events.copy()
        for offset, line in lines:
            rec = jsonl.parse(line)
            try:
                record.check(rec)
            except record.RecordError as exc:
                log.warning("%s: the line at byte %d is not a result record (%s); not published",
                            self.outbox.results, offset, "not JSON, or torn" if rec is None else exc)
                continue
            rec = {**rec, "id": message_id(offset, line), "device": self.device}
            infos.append(self.client.publish(f"{self.base}/result", json.dumps(rec, ensure_ascii=True), qos=1))
            for ev in events.from_record(rec):
                infos.append(self._track_event(ev, f"{rec['id']}-{ev['track']}-{ev['event_type']}"))
            recs.append(rec)
        if not self._wait_acks(infos):
            return 0
        self.outbox.advance(end)
        self.events = events                   # the tracks' state moves on with the cursor
        self.published += len(recs)
        for rec in recs:
            faces = rec.get("faces") or []
            self.faces_total += len(faces)
            self.counts.update(f["label"] for f in faces)
            self.last = rec
        self._publish_state()
        return len(recs)

    def _publish_track_ends(self, upto: int) -> int:
        lines, end = self.track_outbox.pending(BATCH, upto)
        if not lines:
            if end > self.track_outbox.offset:
                self.track_outbox.advance(end)
            return 0
        infos = []
        events = self.events.copy()
        for offset, line in lines:
            tl = jsonl.parse(line)
            if not isinstance(tl, dict) or not isinstance(tl.get("track"), int):
                log.warning("%s: the line at byte %d is not a track's timeline; not published",
                            self.track_outbox.results, offset)
                continue
            infos.append(self._track_event(events.ended(tl), "t" + message_id(offset, line)))
        if not self._wait_acks(infos):
            return 0
        self.track_outbox.advance(end)
        self.events = events
        self._publish_state()
        return len(infos)

    def state(self) -> dict:
        last_faces = self.last.get("faces") or []
        return {"last_label": last_faces[0]["label"] if last_faces else None, "faces": len(last_faces),
                "last_status": self.last.get("status"), "last_time": self.last.get("time"),
                "faces_total": self.faces_total, "records": self.published, "people": self.events.people(),
                "counts": {lab: self.counts.get(lab, 0) for lab in self.labels}}

    def _publish_state(self) -> None:
        self.client.publish(f"{self.base}/state", json.dumps(self.state()), qos=1, retain=True)


def remove_discovery(broker: Broker, device: str, labels=LABELS, timeout: float = 10.0) -> int:
    """Clear the retained Home Assistant discovery topics of ``device`` (empty retained payloads): the
    entities disappear from Home Assistant. Returns how many topics were cleared."""
    c = make_client(broker, f"edgeemo-remove-{device}-{os.getpid()}")
    done = threading.Event()
    failure: list[str] = []

    def on_connect(client, _u, _f, rc, _p=None):
        if rc.is_failure:
            failure.append(reason_text(rc))
        done.set()

    c.on_connect = on_connect
    try:
        c.connect(broker.host, broker.port, keepalive=30)
    except OSError as exc:
        raise SetupError(f"MQTT {broker}: cannot connect ({exc.strerror or exc})") from None
    c.loop_start()
    try:
        if not done.wait(timeout) or failure:
            raise SetupError(f"MQTT {broker}: {failure[0] if failure else 'no answer from the broker'}")
        infos = [c.publish(t, b"", qos=1, retain=True) for t in discovery_configs(broker.prefix, device, labels)]
        for info in infos:
            info.wait_for_publish(timeout)
        return len(infos)
    finally:
        c.disconnect()
        c.loop_stop()
