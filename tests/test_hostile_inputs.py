"""Issue 31's hostile inputs, each written as a test: forged lines given to --resume, result files that are
links, config values that passed validation and then failed (NUL, infinity, system folders), damaged metrics
files given to `edgeemo status`, device names MQTT cannot carry, `install.sh --destdir //`, a config file
with a byte order mark. (The collector's poison messages: test_collect.py; the report's odd values:
test_report.py.) Then Hypothesis over the record validator and the --resume reader."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgeemo import record
from edgeemo.cli import app

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def photos(tmp_path, data_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("2008_001322.jpg", "dogs.jpg"):
        shutil.copy(data_dir / "scenes" / name, folder / name)
    return folder


# --- 3. --resume and forged lines ---------------------------------------------------------------------------

def test_resume_names_forged_lines_and_goes_on(photos, tmp_path, device_model):
    out = tmp_path / "out"
    assert run("classify", photos, "--model", device_model, "--detector", "none", "--out", out).exit_code == 0
    good = (out / "results.jsonl").read_text()
    forged = [json.dumps({**json.loads(good.splitlines()[0]), "file": 12}),
              json.dumps({**json.loads(good.splitlines()[0]), "file": {"a": 1}}),
              "[" * 100_000 + "]" * 100_000]
    (out / "results.jsonl").write_text(good + "\n".join(forged) + "\n")
    res = run("classify", photos, "--model", device_model, "--detector", "none", "--out", out, "--resume")
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    for n in (3, 4, 5):
        assert f"results.jsonl, line {n}: not a result record" in res.output
    assert "2 skipped (already recorded)" in res.output


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=80), st.dictionaries(
    st.sampled_from(["file", "sha256", "size", "mtime_ns", "status", "faces"]),
    st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5), st.lists(st.integers(), max_size=2)),
    max_size=6).map(lambda d: json.dumps(d).encode())), max_size=8))
def test_the_resume_reader_takes_any_file(tmp_path_factory, lines):
    from edgeemo.batch import Done
    p = tmp_path_factory.mktemp("r") / "results.jsonl"
    p.write_bytes(b"\n".join(lines))
    for mode in ("stat", "hash"):
        Done.load(p, mode)


# --- 4. results through a link ----------------------------------------------------------------------------------

def test_result_files_are_never_written_through_a_link(photos, tmp_path, device_model):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\nno newline at the end")
    (out / "results.jsonl").symlink_to(victim)
    res = run("classify", photos, "--model", device_model, "--detector", "none", "--out", out, "--resume")
    assert res.exit_code == 1 and "is a symbolic link" in res.output and "Traceback" not in res.output
    res = run("classify", photos, "--model", device_model, "--detector", "none", "--out", out)
    assert res.exit_code == 1 and "is a symbolic link" in res.output
    assert victim.read_bytes() == b"precious\nno newline at the end"         # neither cut nor appended to
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    res = run("watch", inbox, "--out", out, "--model", device_model, "--detector", "none")
    assert res.exit_code == 2 and "is a symbolic link" in res.output
    assert victim.read_bytes() == b"precious\nno newline at the end"


# --- 6. config values -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    ('metrics-file = "/tmp/m\\u0000x.prom"\n', "without NUL characters"),
    ("settle = inf\n", "a finite number above 0"),
    ("interval = nan\n", "a finite number above 0"),
    ("frames-max-mb = 1e999\n", "a finite number"),
    ('mqtt-device = "a\\u0000b"\n', "without / + # or control characters"),
    (f'mqtt-device = "{"x" * 70_000}"\n', "1 to 64 characters"),
])
def test_config_values_that_used_to_fail_later_stop_the_start(tmp_path, content, message):
    cfg = tmp_path / "edgeemo.toml"
    cfg.write_text(content)
    (tmp_path / "in").mkdir()
    res = run("watch", tmp_path / "in", "--config", cfg)
    assert res.exit_code == 2 and message in res.output, res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("key, value", [("inbox", "/etc/ssl"), ("out", "/etc/edgeemo-test-out"),
                                        ("metrics-file", "/etc/passwd"), ("done", "/usr/lib/x"),
                                        ("frames-dir", "/boot/frames")])
def test_system_folders_are_refused_unless_allowed(tmp_path, key, value):
    cfg = tmp_path / "edgeemo.toml"
    inbox = f'inbox = "{tmp_path / "in"}"\n' if key != "inbox" else ""
    camera = 'camera = "0"\nout = "' + str(tmp_path / "cam") + '"\n' if key == "frames-dir" else ""
    cfg.write_text((camera or inbox) + f'{key} = "{value}"\n')
    (tmp_path / "in").mkdir()
    before = {p: (os.stat(p).st_mtime_ns, sorted(os.listdir(p)) if os.path.isdir(p) else None)
              for p in ("/etc/ssl", "/etc/passwd") if os.path.exists(p)}
    res = run("watch", "--config", cfg)
    assert res.exit_code == 2 and "lies in the system folder" in res.output and "--allow-system-path" in res.output
    after = {p: (os.stat(p).st_mtime_ns, sorted(os.listdir(p)) if os.path.isdir(p) else None) for p in before}
    assert after == before and not os.path.exists("/etc/edgeemo-test-out")
    res = run("classify", tmp_path / "in", "--out", "/etc/edgeemo-test-out")
    assert res.exit_code == 2 and "lies in the system folder /etc" in res.output


def test_a_byte_order_mark_does_not_stop_a_config_file(tmp_path):
    from edgeemo.config import load_file
    cfg = tmp_path / "edgeemo.toml"
    cfg.write_bytes(b"\xef\xbb\xbfworkers = 2\n")
    assert load_file(cfg) == {"workers": 2}


def test_a_metrics_file_that_is_not_ours_is_never_replaced(tmp_path, device_model):
    pytest.importorskip("prometheus_client")
    theirs = tmp_path / "theirs.prom"
    theirs.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "in").mkdir()
    res = run("watch", tmp_path / "in", "--metrics-file", theirs, "--model", device_model, "--detector", "none")
    assert res.exit_code == 2 and "is not a metrics file edgeemo wrote" in res.output
    assert theirs.read_text() == "root:x:0:0:root:/root:/bin/bash\n"


# --- 7. edgeemo status ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"\n\n", "the file is empty"),
    (b"edgeemo_up_seconds 1\x00\x00\n", "NUL bytes"),
    (b"\xff\xfe\xfa garbage", "damaged"),
    (b"# HELP edgeemo_up_seconds x\n# TYPE edgeemo_up_seconds gauge\nedgeemo_up_seconds NaN\n", "is nan"),
    (b"# TYPE something gauge\nsomething 1\n", "not a metrics file of edgeemo watch"),
])
def test_status_says_unknown_for_an_empty_or_damaged_metrics_file(tmp_path, content, message):
    pytest.importorskip("prometheus_client")
    p = tmp_path / "metrics.prom"
    p.write_bytes(content)
    res = run("status", p)
    assert res.exit_code == 1 and "status unknown" in res.output and message in res.output, res.output
    assert "Traceback" not in res.output and "queue 0 waiting" not in res.output


# --- 8 and 9. device names, install.sh --destdir // ------------------------------------------------------------

@pytest.mark.parametrize("name", ["a\x00b", "x" * 70_000, "tab\there", "a/b", "#"])
def test_device_names_mqtt_cannot_carry_are_refused(tmp_path, name):
    from edgeemo.errors import SetupError
    from edgeemo.mqtt import device_name
    with pytest.raises(SetupError, match="--mqtt-device"):
        device_name(name)


@pytest.mark.parametrize("destdir", ["//", "/./", "/tmp/.."])
def test_install_refuses_a_destdir_that_is_the_real_root(destdir):
    res = subprocess.run(["bash", str(ROOT / "deploy" / "install.sh"), "--destdir", destdir, "--no-package"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "is the real system's root" in res.stderr


# --- the record validator ---------------------------------------------------------------------------------------

def test_every_record_the_project_writes_passes_the_validator(photos, tmp_path, device_model):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    assert run("classify", photos, "--model", device_model, "--out", out).exit_code == 0
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {r["status"] for r in recs} >= {"ok", "unreadable"}
    for r in recs:
        assert record.check(r) is r


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids,
                                                                                      max_size=4), max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.dictionaries(
    st.sampled_from(["file", "status", "faces", "width", "model", "time", "size", "error", "device"]),
    json_values, max_size=8)))
def test_the_validator_refuses_anything_else_with_a_record_error(value):
    try:
        out = record.check(value)
    except record.RecordError as exc:
        assert str(exc)
    else:
        assert out is value and value["status"] in record.STATUSES
        json.dumps(value, allow_nan=False) if all(
            isinstance(f, dict) for f in value.get("faces", [])) else None
