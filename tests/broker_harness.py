"""A real mosquitto broker on a loopback port, a plain subscriber and `edgeemo collect` in a child process,
for the MQTT tests (test_mqtt.py, test_collect.py)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from daemon_harness import wait_until

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
PASSWD = shutil.which("mosquitto_passwd") or ("/usr/bin/mosquitto_passwd" if os.path.exists("/usr/bin/mosquitto_passwd") else None)

USER, PASSWORD = "fleet", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """A mosquitto on a free loopback port with a password file and persistence (sessions survive a restart)."""

    def __init__(self, root: Path, tls: dict | None = None, users: tuple[str, ...] = ()):
        """``tls``: more mosquitto.conf lines (key value); ``users``: more users, with the same password."""
        self.root = root
        self.tls = tls
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.pwfile = root / "passwd"
        subprocess.run([PASSWD, "-b", "-c", str(self.pwfile), USER, PASSWORD], check=True, capture_output=True)
        for user in users:
            subprocess.run([PASSWD, "-b", str(self.pwfile), user, PASSWORD], check=True, capture_output=True)
        os.chmod(self.pwfile, 0o600)
        self.conf = root / "mosquitto.conf"
        # as root, mosquitto would switch to its own user, who cannot read this test's folder
        me = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(f"{me}listener {self.port} 127.0.0.1\nallow_anonymous false\npassword_file {self.pwfile}\n"
                             f"persistence true\npersistence_location {root}/\nautosave_interval 1\n"
                             f"max_queued_messages 100000\nlog_dest file {root}/broker.log\n"
                             + "".join(f"{k} {v}\n" for k, v in (tls or {}).items()))
        self.proc = None

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"mosquitto did not start; see {self.root}/broker.log")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def url(self, prefix: str = "fleet", user: str = USER) -> str:
        return f"{'mqtts' if self.tls and 'cafile' in self.tls else 'mqtt'}://{user}@127.0.0.1:{self.port}/{prefix}"


class Subscriber:
    """A plain paho subscriber: every message of the given topics, in arrival order."""

    def __init__(self, broker: Mosquitto, *topics: str):
        import paho.mqtt.client as mqtt
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.c.username_pw_set(USER, PASSWORD)
        subscribed = threading.Event()
        self.c.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.c.on_subscribe = lambda *_: subscribed.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", broker.port)
        self.c.loop_start()
        assert subscribed.wait(10), "the test subscriber could not subscribe"

    def _on_message(self, _c, _u, msg):
        with self._lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def on(self, suffix: str) -> list:
        with self._lock:
            return [(t, p, r) for t, p, r in self.messages if t.endswith(suffix)]

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


class Collect:
    """`edgeemo collect` in a child process."""

    def __init__(self, url: str, out: Path, secret: Path, log: Path):
        self.args = [sys.executable, "-m", "edgeemo.cli", "collect", url, "--out", str(out),
                     "--mqtt-password-file", str(secret)]
        self.out, self.log = out, log
        self.proc = None

    def start(self) -> "Collect":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        wait_until(lambda: "collecting" in self.log.read_text(), "the collector to subscribe", timeout=20)
        return self

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def records(self) -> list[dict]:
        p = self.out / "results.jsonl"
        return [json.loads(line) for line in p.read_bytes().splitlines()] if p.exists() else []


