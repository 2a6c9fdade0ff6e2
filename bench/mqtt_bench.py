"""MQTT publishing: throughput of the outbox publisher and the latency it adds per record, against a local
mosquitto started here (Debian's package).

    python bench/mqtt_bench.py [--records 5000] [--live 300]

1. Backlog: ``--records`` records already in results.jsonl (as after a broker outage); the publisher is
   started and the time until a subscriber has every one gives records/s.
2. Live: records appended one at a time, 20 ms apart (50/s, faster than the daemon classifies photos); for
   each, the time from its append (flushed) to its arrival at a subscriber: median and 95th percentile.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeemo.mqtt import Broker, Publisher  # noqa: E402

RECORD = {"time": "2026-11-28T12:00:00.000Z", "file": "/var/lib/edgeemo/inbox/photo.jpg", "sha256": "0" * 64,
          "status": "ok", "error": None, "width": 640, "height": 480,
          "faces": [{"box": [200, 120, 96, 96], "score": 0.93, "label": "happy", "confidence": 0.81,
                     "probs": {"angry": 0.02, "disgust": 0.0, "fear": 0.03, "happy": 0.81, "sad": 0.04,
                               "surprise": 0.05, "neutral": 0.05}}],
          "model": {"name": "edgeemo-fer2013-res40", "sha256": "1" * 64}}


def line(i: int) -> bytes:
    return (json.dumps({**RECORD, "file": f"/var/lib/edgeemo/inbox/photo{i:06d}.jpg"}) + "\n").encode()


def start_broker(root: Path) -> tuple[subprocess.Popen, int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = root / "mosquitto.conf"
    conf.write_text(("user root\n" if os.geteuid() == 0 else "") + f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    "max_queued_messages 1000000\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


class Listener:
    def __init__(self, port: int):
        import paho.mqtt.client as mqtt
        self.arrived: dict[str, float] = {}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        ok = threading.Event()
        self.c.on_connect = lambda c, *_: c.subscribe("bench/+/result", qos=1)
        self.c.on_subscribe = lambda *_: ok.set()
        self.c.on_message = lambda _c, _u, m: self.arrived.setdefault(json.loads(m.payload)["file"], time.perf_counter())
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        ok.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--live", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc, port = start_broker(root)
        try:
            broker = Broker.parse(f"mqtt://127.0.0.1:{port}/bench")
            listener = Listener(port)
            results = root / "backlog" / "results.jsonl"
            results.parent.mkdir()
            results.write_bytes(b"".join(line(i) for i in range(args.records)))
            pub = Publisher(broker, "pi", results, root / "backlog" / ".edgeemo-mqtt")
            t0 = time.perf_counter()
            pub.start()
            while len(listener.arrived) < args.records and time.perf_counter() - t0 < 300:
                time.sleep(0.01)
            dt = time.perf_counter() - t0
            pub.stop()
            print(f"backlog: {len(listener.arrived)} of {args.records} records delivered in {dt:.2f} s: "
                  f"{len(listener.arrived) / dt:.0f} records/s (QoS 1, batches of up to 200 in flight, cursor "
                  f"saved after each batch)")

            listener.arrived.clear()
            live = root / "live" / "results.jsonl"
            live.parent.mkdir()
            live.touch()
            pub = Publisher(broker, "pi", live, root / "live" / ".edgeemo-mqtt")
            pub.start()
            pub.connected.wait(10)
            appended = {}
            with open(live, "ab") as fh:
                for i in range(args.live):
                    data = line(i)
                    fh.write(data)
                    fh.flush()
                    appended[json.loads(data)["file"]] = time.perf_counter()
                    time.sleep(0.02)
            end = time.perf_counter() + 30
            while len(listener.arrived) < args.live and time.perf_counter() < end:
                time.sleep(0.01)
            pub.stop()
            lat = sorted((listener.arrived[f] - t) * 1000 for f, t in appended.items() if f in listener.arrived)
            print(f"live: {len(lat)} of {args.live} records, 50/s: added latency per record from its append to "
                  f"its arrival: median {statistics.median(lat):.0f} ms, 95th percentile "
                  f"{lat[int(0.95 * (len(lat) - 1))]:.0f} ms (the publisher looks for new records every 0.2 s)")
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
