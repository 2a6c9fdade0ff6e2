"""Fleets over MQTT, end to end against a real mosquitto broker started here (Debian's package; `.ci/run`
installs it): `watch --mqtt` publishing from its outbox, `collect`, Home Assistant discovery, the metrics
file and `edgeemo status`. Real daemon processes, real signals, a real broker stopped and started again."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from daemon_harness import Daemon, png_bytes, wait_until

pytest.importorskip("paho.mqtt.client", reason="needs the [mqtt] extra (paho-mqtt)")
from broker_harness import MOSQUITTO, PASSWD, PASSWORD, USER, Collect, Mosquitto, Subscriber  # noqa: E402,F401

if MOSQUITTO is None or PASSWD is None:
    pytest.skip("needs mosquitto (apt-get install mosquitto; .ci/run installs it)", allow_module_level=True)


def mqtt_daemon(tmp_path, device_model, broker, secret, *extra) -> Daemon:
    return Daemon(tmp_path, device_model, "--mqtt", broker.url(), "--mqtt-password-file", str(secret),
                  "--mqtt-device", "pi-kitchen", *extra)


def drop(d: Daemon, start: int, n: int) -> None:
    for i in range(start, start + n):
        tmp = d.inbox / f".tmp{i}"
        tmp.write_bytes(png_bytes(i))
        os.rename(tmp, d.inbox / f"img{i:04d}.png")


def published_ids(sub: Subscriber) -> list[str]:
    return [json.loads(p)["id"] for _, p, _ in sub.on("/result")]


def test_every_record_of_a_200_file_run_arrives_once(tmp_path, device_model, broker, secret):
    sub = Subscriber(broker, "fleet/+/result", "fleet/+/state", "fleet/+/availability")
    col = Collect(broker.url(), tmp_path / "central", secret, tmp_path / "collect.log").start()
    d = mqtt_daemon(tmp_path, device_model, broker, secret).start()
    try:
        drop(d, 0, 200)
        wait_until(lambda: d.n_records() == 200, "200 records", d)
        wait_until(lambda: len(sub.on("/result")) >= 200 and len(col.records()) >= 200, "200 messages", d)
        assert d.signal(signal.SIGTERM) == 0
    finally:
        assert col.stop() == 0
        sub.close()
    ids = published_ids(sub)
    assert len(ids) == len(set(ids)) == 200
    local = d.records()
    got = {json.loads(p)["file"]: json.loads(p) for _, p, _ in sub.on("/result")}
    for rec in local:                 # the same JSON as results.jsonl, plus id and device
        msg = got[rec["file"]]
        assert {k: v for k, v in msg.items() if k not in ("id", "device")} == rec and msg["device"] == "pi-kitchen"
    central = col.records()
    assert len(central) == 200 and {r["id"] for r in central} == set(ids)
    assert all(r["device"] == "pi-kitchen" for r in central)
    header = (col.out / "results.csv").read_text().splitlines()[0]
    assert header.startswith("device,time,file,sha256,status")
    state = json.loads(sub.on("/state")[-1][1])
    assert state["records"] == 200 and sum(state["counts"].values()) == state["faces_total"] == 200
    avail = [p for _, p, _ in sub.on("/availability")]
    assert avail[0] == b"online" and avail[-1] == b"offline"        # said on a clean stop


def test_broker_away_while_100_files_arrive_loses_nothing(tmp_path, device_model, broker, secret):
    col = Collect(broker.url(), tmp_path / "central", secret, tmp_path / "collect.log").start()
    d = mqtt_daemon(tmp_path, device_model, broker, secret).start()
    try:
        drop(d, 0, 20)
        wait_until(lambda: len(col.records()) == 20, "the first 20 collected", d)
        broker.stop()
        drop(d, 20, 100)
        wait_until(lambda: d.n_records() == 120, "120 records written while the broker is away", d)
        assert "lost the connection" in d.log_text()
        broker.start()
        wait_until(lambda: len(col.records()) >= 120, "all 120 collected after the broker came back", d, timeout=60)
        assert d.signal(signal.SIGTERM) == 0
    finally:
        col.stop()
    central = col.records()
    assert len(central) == 120 and len({r["id"] for r in central}) == 120
    assert {r["sha256"] for r in central} == {r["sha256"] for r in d.records()}


def test_kill_9_mid_publish_then_restart_loses_nothing(tmp_path, device_model, broker, secret):
    sub = Subscriber(broker, "fleet/+/result")
    col = Collect(broker.url(), tmp_path / "central", secret, tmp_path / "collect.log").start()
    d = mqtt_daemon(tmp_path, device_model, broker, secret).start()
    try:
        drop(d, 0, 150)
        wait_until(lambda: 0 < len(sub.on("/result")), "publishing to begin", d)
        d.kill9()
        d.start()
        wait_until(lambda: d.n_records() == 150, "150 records", d)
        wait_until(lambda: len(col.records()) == 150, "150 collected", d, timeout=60)
        assert d.signal(signal.SIGTERM) == 0
        time.sleep(0.5)
    finally:
        col.stop()
        sub.close()
    ids = published_ids(sub)
    assert set(ids) == {r["id"] for r in col.records()} and len(set(ids)) == 150
    # repeats are allowed (at least once) and the collector dropped them
    assert len(col.records()) == 150


def test_a_refusing_or_absent_broker_is_logged_and_publishing_resumes(tmp_path, device_model, broker, secret):
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    newcomer = broker.url().replace(f"{USER}@", "newcomer@")            # a user the broker does not know yet
    d = Daemon(tmp_path / "a", device_model, "--mqtt", newcomer, "--mqtt-password-file", str(wrong),
               "--mqtt-device", "pi-a").start()
    drop(d, 0, 5)
    wait_until(lambda: d.n_records() == 5, "records written though the broker refuses", d)
    wait_until(lambda: "the broker refused" in d.log_text() and "--mqtt-password-file" in d.log_text(),
               "a clear log line", d)
    # the broker learns this user (mosquitto reloads its password file on SIGHUP): publishing resumes
    sub = Subscriber(broker, "fleet/pi-a/result")
    subprocess.run([PASSWD, "-b", str(broker.pwfile), "newcomer", "not-the-password"], check=True,
                   capture_output=True)
    broker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(sub.on("/result")) == 5, "the 5 records published once accepted", d, timeout=60)
    assert d.signal(signal.SIGTERM) == 0
    sub.close()

    # nothing listening at all: records are written, and all arrive once a broker is there
    late = Mosquitto(tmp_path / "late")
    e = Daemon(tmp_path / "b", device_model, "--mqtt", late.url(), "--mqtt-password-file", str(secret),
               "--mqtt-device", "pi-b").start()
    try:
        drop(e, 0, 5)
        wait_until(lambda: e.n_records() == 5, "records written with no broker", e)
        wait_until(lambda: "cannot reach 127.0.0.1" in e.log_text(), "a clear log line", e)
        late.start()
        sub = Subscriber(late, "fleet/pi-b/result")
        wait_until(lambda: len(sub.on("/result")) == 5, "the 5 records published once the broker is up", e,
                   timeout=60)
        assert e.signal(signal.SIGTERM) == 0
        sub.close()
    finally:
        late.stop()


def test_home_assistant_discovery_payloads_and_their_removal(tmp_path, device_model, broker, secret):
    from edgeemo.labels import LABELS
    d = mqtt_daemon(tmp_path, device_model, broker, secret, "--mqtt-ha-discovery").start()
    drop(d, 0, 3)
    wait_until(lambda: d.n_records() == 3, "3 records", d)
    sub = Subscriber(broker, "homeassistant/#", "fleet/pi-kitchen/state")     # retained: delivered on subscribe
    wait_until(lambda: len(sub.on("/config")) >= 5 + len(LABELS), "the discovery topics", d)
    wait_until(lambda: sub.on("/state") and json.loads(sub.on("/state")[-1][1])["records"] == 3, "the state", d)
    configs = {t: json.loads(p) for t, p, r in sub.on("/config") if r}
    assert len(configs) == 5 + len(LABELS)
    state = json.loads(sub.on("/state")[-1][1])
    for topic, cfg in configs.items():
        assert topic.startswith("homeassistant/") and cfg["unique_id"].startswith("edgeemo_pi-kitchen")
        assert cfg["device"]["identifiers"] == ["edgeemo_pi-kitchen"]
        if "binary_sensor" in topic:
            assert cfg["state_topic"] == "fleet/pi-kitchen/availability"
        elif "/event/" in topic:                             # face-track events: start, change, end
            assert cfg["state_topic"] == "fleet/pi-kitchen/track"
            assert cfg["event_types"] == ["start", "change", "end"]
        else:
            assert cfg["state_topic"] == "fleet/pi-kitchen/state"
            assert cfg["availability_topic"] == "fleet/pi-kitchen/availability"
            key = cfg["value_template"].split("value_json.")[1].split()[0]
            node = state
            for part in key.split("."):                       # the template names a key the state has
                node = node[part]
    assert d.signal(signal.SIGTERM) == 0
    sub.close()
    res = subprocess.run([sys.executable, "-m", "edgeemo.cli", "mqtt-forget", broker.url(), "--device", "pi-kitchen",
                          "--mqtt-password-file", str(secret)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    after = Subscriber(broker, "homeassistant/#")
    time.sleep(1.0)
    assert after.on("/config") == []                 # no retained discovery topic left
    after.close()


def test_metrics_file_and_status(tmp_path, device_model, broker, secret):
    pytest.importorskip("prometheus_client", reason="needs the [metrics] extra")
    metrics = tmp_path / "metrics.prom"
    d = mqtt_daemon(tmp_path, device_model, broker, secret, "--metrics-file", str(metrics)).start()
    drop(d, 0, 12)
    (d.inbox / "bad.jpg").write_bytes(b"not an image")
    wait_until(lambda: d.n_records() == 13, "13 records", d)
    text = ""

    def written():
        nonlocal text
        text = metrics.read_text() if metrics.exists() else ""
        return 'edgeemo_images_total{status="ok"} 12.0' in text and "edgeemo_mqtt_backlog_bytes 0.0" in text
    wait_until(written, "the metrics file with 13 records", d, timeout=30)
    assert 'edgeemo_images_total{status="unreadable"} 1.0' in text
    assert "edgeemo_mqtt_connected 1.0" in text and "edgeemo_resident_memory_bytes" in text
    faces = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("edgeemo_faces_total{"))
    assert faces == 12
    res = subprocess.run([sys.executable, "-m", "edgeemo.cli", "status", str(metrics)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "ok 12" in res.stdout and "unreadable 1" in res.stdout, res.stdout + res.stderr
    assert "mqtt    connected" in res.stdout
    assert d.signal(signal.SIGTERM) == 0


def test_mqtt_settings_are_checked_at_start(tmp_path, device_model):
    from edgeemo.config import load_file
    cfg = tmp_path / "edgeemo.toml"
    cfg.write_text('inbox = "in"\n[mqtt]\nurl = "mqtt://pi@broker.local/home"\npassword-file = "pw"\n'
                   'ha-discovery = true\n')
    got = load_file(cfg)
    assert got["mqtt"] == "mqtt://pi@broker.local/home" and got["mqtt-ha-discovery"] is True
    assert got["mqtt-password-file"] == tmp_path / "pw"
    cfg.write_text('[mqtt]\nurl = "mqtt://pi:secret@broker.local"\n')
    with pytest.raises(Exception, match="no password in the address"):
        load_file(cfg)
    cfg.write_text('[mqtt]\nbroker = "x"\n')
    with pytest.raises(Exception, match=r"unknown key 'broker' in \[mqtt\]"):
        load_file(cfg)
    res = subprocess.run([sys.executable, "-m", "edgeemo.cli", "watch", str(tmp_path), "--model", str(device_model),
                          "--mqtt", "http://broker"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "expected mqtt://" in res.stderr


def test_the_camera_daemon_publishes_its_frames(tmp_path, device_model, broker, secret):
    """`watch --camera ... --mqtt`: each frame's record reaches the broker, as the folder daemon's do."""
    from test_watch_camera import Camera, make_video
    video = make_video(tmp_path / "cam.avi")
    sub = Subscriber(broker, "fleet/+/result")
    c = Camera(tmp_path, device_model, "--camera", str(video), "--fps", "20", "--detector", "none",
               "--mqtt", broker.url(), "--mqtt-password-file", str(secret), "--mqtt-device", "door-cam")
    try:
        # the video ends after 6 frames and the daemon stops by itself, after publishing them
        assert c.proc.wait(60) == 0
        wait_until(lambda: len(c.records()) >= 6 and len(sub.on("door-cam/result")) >= 6, "6 frames published",
                   timeout=60)
    finally:
        c.kill()
        sub.close()
    local = {r["frame_time"] for r in c.records()}
    msgs = [json.loads(p) for _, p, _ in sub.on("door-cam/result")]
    assert {m["frame_time"] for m in msgs} == local and all(m["camera"] == str(video) for m in msgs)


def test_the_collector_stopped_meanwhile_gets_everything_once(tmp_path, device_model, broker, secret):
    """`collect` keeps a persistent session: what was published while it was stopped arrives when it comes
    back, and a message it already wrote (acknowledged or not) is not written twice."""
    central = tmp_path / "central"
    col = Collect(broker.url(), central, secret, tmp_path / "collect.log").start()
    d = mqtt_daemon(tmp_path, device_model, broker, secret).start()
    try:
        drop(d, 0, 30)
        wait_until(lambda: len(col.records()) == 30, "30 collected", d)
        assert col.stop() == 0
        drop(d, 30, 50)
        wait_until(lambda: d.n_records() == 80, "80 records", d)
        col.start()
        wait_until(lambda: len(col.records()) >= 80, "the 50 published while the collector was stopped", d)
        assert d.signal(signal.SIGTERM) == 0
        time.sleep(0.5)
    finally:
        col.stop()
    recs = col.records()
    assert len(recs) == 80 and len({r["id"] for r in recs}) == 80
    assert "session resumed" in (tmp_path / "collect.log").read_text()


def test_mqtts_with_the_brokers_ca(tmp_path, device_model, secret):
    """mqtts:// with --mqtt-ca: the broker's certificate is checked against the given CA (and its address)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs openssl to make a test CA")
    pki = tmp_path / "pki"
    pki.mkdir()

    def ssl(*args):
        subprocess.run([openssl, *args], cwd=pki, check=True, capture_output=True)
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=edgeemo test CA")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.crt", "-days", "2", "-extfile", "san.ext")
    b = Mosquitto(tmp_path / "tls-broker", tls={"cafile": pki / "ca.crt", "certfile": pki / "server.crt",
                                                "keyfile": pki / "server.key"}).start()
    try:
        d = Daemon(tmp_path / "d", device_model, "--mqtt", b.url(), "--mqtt-ca", str(pki / "ca.crt"),
                   "--mqtt-password-file", str(secret), "--mqtt-device", "pi-tls",
                   "--metrics-file", str(tmp_path / "m.prom")).start()
        drop(d, 0, 5)
        wait_until(lambda: "edgeemo_mqtt_published_total 5.0" in ((tmp_path / "m.prom").read_text()
                                                                  if (tmp_path / "m.prom").exists() else ""),
                   "5 records acknowledged over TLS", d, timeout=30)
        assert d.signal(signal.SIGTERM) == 0
        # without the CA, the certificate is not trusted: nothing is published, and the log says why
        e = Daemon(tmp_path / "e", device_model, "--mqtt", b.url(), "--mqtt-password-file", str(secret),
                   "--mqtt-device", "pi-untrusting").start()
        drop(e, 0, 2)
        wait_until(lambda: e.n_records() == 2, "records written", e)
        wait_until(lambda: "certificate is not trusted" in e.log_text(), "a log line about the certificate", e,
                   timeout=30)
        assert e.signal(signal.SIGTERM) == 0
    finally:
        b.stop()


def test_track_events_from_records_start_change_and_a_restarted_camera():
    """TrackEvents on records as the camera writes them: one start per track, a change only when the steady
    emotion changes (not the per-frame label), an end from the track's timeline, and a camera whose frame
    numbers go back (a restart numbers its tracks from 1 again) starts its tracks anew."""
    from edgeemo.mqtt import TrackEvents

    def rec(frame, *faces):
        return {"camera": "0", "frame": frame, "frame_time": f"t{frame}", "time": "x", "faces": [
            {"track": t, "track_label": tl, "label": lab, "track_confidence": 0.7, "box": [0, 0, 9, 9]}
            for t, tl, lab in faces]}
    ev = TrackEvents()
    got = []
    for r in (rec(0, (1, "happy", "happy")), rec(1, (1, "happy", "sad"), (2, "neutral", "neutral")),
              rec(2, (1, "sad", "sad"), (2, "neutral", "fear")), rec(3, (1, "sad", "sad"))):
        got += [(e["event_type"], e["track"], e["label"], e.get("previous")) for e in ev.from_record(r)]
    assert got == [("start", 1, "happy", None), ("start", 2, "neutral", None), ("change", 1, "sad", "happy")]
    assert ev.people() == 2
    end = ev.ended({"file": "0", "camera": "0", "track": 2, "dominant": "neutral", "seconds": {"neutral": 1.0}})
    assert end["event_type"] == "end" and end["source"] == "camera 0" and end["label"] == "neutral"
    assert ev.people() == 1
    assert [e["event_type"] for e in ev.from_record(rec(0, (1, "angry", "angry")))] == ["start"]   # restarted


def test_the_camera_publishes_track_events_and_people_in_view(tmp_path, device_model, broker, secret, data_dir):
    """Issue 32: `watch --camera --mqtt`: <prefix>/<device>/track gets a start for every track in the
    records, a change for every change of its steady emotion, and an end for every line of tracks.jsonl, with
    its dominant emotion; the retained state says how many people are in view (none once all ended)."""
    import cv2
    from synth_video import make
    from test_watch_camera import Camera
    video = make(tmp_path / "group.avi", cv2.imread(str(data_dir / "scenes" / "2008_002079.jpg")), frames=30,
                 pan=6).path
    sub = Subscriber(broker, "fleet/+/track", "fleet/+/state")
    c = Camera(tmp_path, device_model, "--camera", str(video), "--fps", "100", "--detector", "yunet",
               "--mqtt", broker.url(), "--mqtt-password-file", str(secret), "--mqtt-device", "hall-cam")
    try:
        assert c.proc.wait(60) == 0, c.log()
        ends = [json.loads(x) for x in (c.out / "tracks.jsonl").read_text().splitlines()]
        wait_until(lambda: len([m for _, m, _ in sub.on("hall-cam/track") if b'"end"' in m]) >= len(ends),
                   "the end events", timeout=30)
    finally:
        c.kill()
        sub.close()
    events = [json.loads(p) for _, p, _ in sub.on("hall-cam/track")]
    recs = c.records()
    tracks = {f["track"] for r in recs for f in r["faces"]}
    assert len(tracks) >= 4 and len(ends) == len(tracks)
    starts = [e["track"] for e in events if e["event_type"] == "start"]
    assert sorted(starts) == sorted(tracks), [(e["id"], e["event_type"], e["track"], e.get("frame")) for e in events]
    for t in tracks:
        steady = [f["track_label"] for r in recs for f in r["faces"] if f["track"] == t]
        changes = sum(a != b for a, b in zip(steady, steady[1:]))
        assert len([e for e in events if e["event_type"] == "change" and e["track"] == t]) == changes
    got_ends = {e["track"]: e for e in events if e["event_type"] == "end"}
    assert {t: e["label"] for t, e in got_ends.items()} == {t["track"]: t["dominant"] for t in ends}
    assert all(e["source"] == f"camera {video}" and e["device"] == "hall-cam" for e in events)
    assert json.loads(sub.on("hall-cam/state")[-1][1])["people"] == 0


def test_lines_that_are_not_records_are_skipped_not_a_poison_for_the_publisher(tmp_path, device_model, broker,
                                                                                 secret):
    """A line of results.jsonl that is JSON but no valid record (faces a number, a track that is not an
    integer, a steady label that is an object) is named in the log and not published; the records after it
    are, and the publisher does not stall on it."""
    sub = Subscriber(broker, "fleet/+/result", "fleet/+/track")
    d = mqtt_daemon(tmp_path, device_model, broker, secret).start()
    try:
        drop(d, 0, 2)
        wait_until(lambda: len(sub.on("pi-kitchen/result")) >= 2, "the first 2 records", d)
        forged = [{"file": "x", "status": "ok", "faces": 5},
                  {"file": "y", "status": "ok", "frame": 1, "faces": [{"box": [0, 0, 9, 9], "label": "happy",
                                                                      "confidence": 0.5, "track": "1"}]},
                  {"file": "z", "status": "ok", "frame": 2, "faces": [{"box": [0, 0, 9, 9], "label": "happy",
                                                                      "confidence": 0.5, "track": 1,
                                                                      "track_label": {"a": 1}}]}]
        with open(d.results / "results.jsonl", "a") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in forged))
        drop(d, 2, 2)
        wait_until(lambda: len(sub.on("pi-kitchen/result")) >= 4, "the 2 records after the forged lines", d)
        assert d.signal(signal.SIGTERM) == 0
    finally:
        sub.close()
    files = [json.loads(p)["file"] for _, p, _ in sub.on("pi-kitchen/result")]
    assert len(files) == 4 and not {"x", "y", "z"} & set(files) and sub.on("pi-kitchen/track") == []
    assert d.log_text().count("is not a result record") == 3


def test_track_events_fuzzed_one_start_per_track_and_never_an_exception():
    """Hypothesis over valid records of one camera, frame numbers rising: every (camera, track) gets exactly
    one start, a change exactly when its steady label differs from the one before, and nothing raises."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from edgeemo import record
    from edgeemo.labels import LABELS
    from edgeemo.mqtt import TrackEvents
    face = st.fixed_dictionaries({"box": st.just([0, 0, 9, 9]), "label": st.sampled_from(LABELS),
                                  "confidence": st.floats(0, 1), "track": st.integers(0, 5),
                                  "track_label": st.one_of(st.none(), st.sampled_from(LABELS)),
                                  "track_confidence": st.floats(0, 1)})

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.lists(face, max_size=4), max_size=15))
    def check(frames):
        ev, last, starts, changes = TrackEvents(), {}, set(), 0
        got = []
        for n, faces in enumerate(frames):
            rec = record.check({"status": "ok", "camera": "0", "frame": n, "faces": faces})
            got += ev.from_record(rec)
            for f in faces:
                if f["track"] not in last:
                    starts.add(f["track"])
                elif last[f["track"]] != f["track_label"]:
                    changes += 1
                last[f["track"]] = f["track_label"]
        assert sorted(e["track"] for e in got if e["event_type"] == "start") == sorted(starts)
        assert sum(e["event_type"] == "change" for e in got) == changes
        assert ev.people() == len(starts)
    check()
