"""`edgeemo collect` against hostile messages: poison payloads, wrong types, forged devices, huge or deep JSON.
The message path on its own (Collector.receive, fuzzed with Hypothesis), then a real mosquitto broker with a
poison message among good ones, before and after a restart of the collector."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon_harness import wait_until

pytest.importorskip("paho.mqtt.client", reason="needs the [mqtt] extra (paho-mqtt)")
from broker_harness import MOSQUITTO, Collect, Subscriber  # noqa: E402

from edgeemo.collect import Collector  # noqa: E402
from edgeemo.labels import LABELS  # noqa: E402
from edgeemo.mqtt import Broker  # noqa: E402

TOPIC = "fleet/kitchen/result"


def good(i: int = 0, **over) -> dict:
    probs = {k: round(1 / 7, 4) for k in LABELS}
    rec = {"file": f"/in/{i}.jpg", "sha256": "ab" * 32, "status": "ok", "error": None, "width": 64, "height": 48,
           "faces": [{"box": [1, 2, 30, 30], "score": 0.9, "label": "happy", "confidence": 0.5, "probs": probs}],
           "model": {"name": "m", "sha256": None}, "time": "2026-12-06T00:00:00.000+00:00", "id": f"id-{i}"}
    rec.update(over)
    return rec


def payload(rec) -> bytes:
    return json.dumps(rec).encode()


@pytest.fixture
def collector(tmp_path):
    c = Collector(Broker.parse("mqtt://127.0.0.1:1/fleet"), tmp_path / "central")
    yield c
    c.jsonl.close()
    c.csv.close()


def rejected(c: Collector) -> list[dict]:
    p = c.rejected_path
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


POISON = [
    (b"[" * 10_000 + b"]" * 10_000, "nested too deep"),
    (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "nested too deep"),
    (b"\xff\xfe not utf-8", "not a JSON object"),
    (b"42", "not a JSON object"),
    (payload(good(faces="three")), "'faces' must be a list"),
    (payload(good(faces=[{"box": "1,2,3,4", "label": "happy", "confidence": 0.5}])), "box must be a list"),
    (payload(good(faces=[{"box": [1, 2, 3, 4], "label": "happy", "confidence": 0.5, "probs": [0.1]}])),
     "probs must be an object"),
    (payload(good(faces=[{"box": [1, 2, 3, 4], "label": "happy", "confidence": float("nan")}])), "confidence"),
    (b'{"status": "ok", "id": "x", "width": 1e309}', "'width' must be an integer"),
    (payload(good(file=12)), "'file' must be"),
    (payload(good(device="bathroom")), "names device 'bathroom'"),
    (payload(good(id=None)), "'id' must be a string"),
    (payload(good(id="x" * 500)), "'id' must be a string"),
    (b" " * (2 << 20), "bytes, over the"),
]


@pytest.mark.parametrize("data, why", POISON, ids=[w for _, w in POISON])
def test_a_poison_message_is_set_aside_with_its_reason_and_both_files_agree(collector, data, why):
    assert collector.receive(TOPIC, data) == "rejected"
    rej = rejected(collector)
    assert len(rej) == 1 and why in rej[0]["reason"] and rej[0]["topic"] == TOPIC and rej[0]["bytes"] == len(data)
    assert len(rej[0]["payload"]) <= 4 * 4096
    assert collector.receive(TOPIC, payload(good(1))) == "written"      # and the next good one is stored
    lines = collector.jsonl_path.read_text().splitlines()
    rows = collector.csv_path.read_text().splitlines()
    assert len(lines) == 1 and len(rows) == 2 and json.loads(lines[0])["device"] == "kitchen"


def test_the_device_is_the_topics_and_repeats_are_dropped(collector):
    assert collector.receive(TOPIC, payload(good(1, device="kitchen"))) == "written"
    assert collector.receive(TOPIC, payload(good(1))) == "repeat"
    assert collector.receive("fleet/hall/result", payload(good(1))) == "written"      # another device's id-1
    for topic in ("fleet/bad\x00name/result", "fleet/" + "x" * 100 + "/result", "result"):
        assert collector.receive(topic, payload(good(2))) == "rejected"
    devices = [json.loads(x)["device"] for x in collector.jsonl_path.read_text().splitlines()]
    assert devices == ["kitchen", "hall"]
    text = collector.jsonl_path.read_text()
    assert "NaN" not in text and "Infinity" not in text


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids,
                                                                                      max_size=4), max_leaves=20)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(list(good())), json_values, max_size=6).map(
                     lambda over: payload({**good(), **over}))))
def test_any_message_is_stored_or_set_aside_never_raised(collector, data):
    assert collector.receive(TOPIC, data) in ("written", "repeat", "rejected")
    for line in collector.jsonl_path.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c} written"))


@pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto (.ci/run installs it)")
def test_a_poison_message_does_not_make_a_real_collector_deaf_before_or_after_a_restart(tmp_path, broker, secret):
    central = tmp_path / "central"
    col = Collect(broker.url(), central, secret, tmp_path / "collect.log").start()
    pub = Subscriber(broker, "nobody/#")                # a plain client, used to publish
    try:
        def send(topic, data):
            pub.c.publish(topic, data, qos=1).wait_for_publish(10)
        send(TOPIC, b"[" * 10_000 + b"]" * 10_000)
        send(TOPIC, payload(good(0, faces="x")))
        for i in range(1, 6):
            send(TOPIC, payload(good(i)))
        wait_until(lambda: len(col.records()) == 5, "the 5 good records after the poison ones")
        assert col.stop() == 0
        # while it is stopped: another poison message and good ones, queued in its persistent session
        send(TOPIC, payload(good(9, device="hall")))
        for i in range(6, 9):
            send(TOPIC, payload(good(i)))
        col.start()
        wait_until(lambda: len(col.records()) == 8, "the 3 good records queued while it was stopped")
        assert col.proc.poll() is None
    finally:
        pub.close()
        code = col.stop()
    assert code == 0
    assert [r["id"] for r in col.records()] == [f"id-{i}" for i in range(1, 9)]
    reasons = [json.loads(x)["reason"] for x in (central / "rejected.jsonl").read_text().splitlines()]
    assert len(reasons) == 3 and "names device 'hall'" in reasons[2]
    assert "set aside in" in (tmp_path / "collect.log").read_text()


@pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto (.ci/run installs it)")
def test_the_shipped_mosquitto_acl_keeps_each_device_to_its_own_name(tmp_path, secret, device_model):
    """deploy/mosquitto-acl.conf on a real broker: a real `edgeemo watch --mqtt` publishes everything it
    publishes under its own name; what a device publishes on another's topic never reaches the collector, and a
    record on its own topic that names another device is set aside."""
    import paho.mqtt.client as mqtt
    from broker_harness import PASSWORD, Mosquitto
    from daemon_harness import Daemon, png_bytes, write
    root = Path(__file__).resolve().parents[1]
    broker = Mosquitto(tmp_path / "broker", tls={"acl_file": root / "deploy" / "mosquitto-acl.conf"},
                       users=("collector", "kitchen", "hall")).start()
    central = tmp_path / "central"
    col = d = None
    try:
        col = Collect(broker.url(user="collector"), central, secret, tmp_path / "collect.log").start()
        d = Daemon(tmp_path, device_model, "--mqtt", broker.url(user="kitchen"), "--mqtt-password-file",
                   str(secret), "--mqtt-device", "kitchen", "--mqtt-ha-discovery").start()
        for i in range(3):
            write(d.inbox / f"p{i}.png", png_bytes(i))
        wait_until(lambda: len(col.records()) == 3, "kitchen's 3 records at the collector", d)
        forger = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        forger.username_pw_set("kitchen", PASSWORD)
        forger.connect("127.0.0.1", broker.port)
        forger.loop_start()
        forger.publish("fleet/hall/result", payload(good(50)), qos=1).wait_for_publish(10)     # the broker drops it
        forger.publish("fleet/kitchen/result", payload(good(51, device="hall")), qos=1).wait_for_publish(10)
        forger.publish("fleet/kitchen/result", payload(good(52)), qos=1).wait_for_publish(10)
        wait_until(lambda: len(col.records()) == 4, "the forger's one honest record", d)
        forger.disconnect()
        forger.loop_stop()
    finally:
        if d is not None:
            d.signal(signal.SIGTERM)
        if col is not None:
            col.stop()
        broker.stop()
    recs = col.records()
    assert [r["device"] for r in recs] == ["kitchen"] * 4 and recs[-1]["id"] == "id-52"
    assert "hall" not in json.dumps(recs)
    reasons = [json.loads(x)["reason"] for x in (central / "rejected.jsonl").read_text().splitlines()]
    assert len(reasons) == 1 and "names device 'hall'" in reasons[0]
    assert "not authorised" not in d.log_text().lower()


def test_messages_set_aside_are_counted_in_the_metrics_file(tmp_path):
    pytest.importorskip("prometheus_client")
    from typer.testing import CliRunner

    from edgeemo.cli import app
    metrics = tmp_path / "collect.prom"
    c = Collector(Broker.parse("mqtt://127.0.0.1:1/fleet"), tmp_path / "central", metrics_file=metrics)
    c.metrics.started -= 30
    for data in (payload(good(1)), payload(good(1)), b"[" * 5000, payload(good(2, device="x"))):
        c.receive(TOPIC, data)
    c.metrics.write()
    c.jsonl.close()
    c.csv.close()
    text = metrics.read_text()
    assert "edgeemo_collect_written_total 1.0" in text and "edgeemo_collect_rejected_total 2.0" in text
    out = CliRunner().invoke(app, ["status", str(metrics)]).output
    assert "collect 1 records stored, 1 repeats dropped, 2 messages set aside" in out
