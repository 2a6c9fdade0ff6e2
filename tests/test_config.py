"""edgeemo.config on its own: defaults, the file, the command line, and resolve's cross-checks."""
from __future__ import annotations

from pathlib import Path


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeemo.config import KEYS, WatchSettings, load_file, resolve
from edgeemo.errors import SetupError


def test_defaults_and_folders_inside_the_inbox(tmp_path):
    s = resolve({"inbox": tmp_path / "in"})
    assert isinstance(s, WatchSettings) and s.workers == 1 and s.settle == 2.0 and s.passes is None
    assert (s.done, s.failed, s.out) == (tmp_path / "in" / "done", tmp_path / "in" / "failed",
                                         tmp_path / "in" / "results")


def test_the_command_line_wins_over_the_file_and_relative_paths_follow_the_file(tmp_path):
    cfg = tmp_path / "etc" / "edgeemo.toml"
    cfg.parent.mkdir()
    cfg.write_text('inbox = "in"\nworkers = 3\npasses = 2\n[mqtt]\nurl = "mqtt://broker/edgeemo"\n')
    s = resolve({"workers": 2}, cfg)
    assert s.inbox == tmp_path / "etc" / "in" and s.workers == 2 and s.passes == 2
    assert s.mqtt == "mqtt://broker/edgeemo"


def test_camera_pace_fps_every_and_the_older_interval(tmp_path):
    """Issue 32: fps and every from the file and the command line; the older interval = 1/fps still works,
    and giving both is refused rather than guessed."""
    cfg = tmp_path / "cam.toml"
    cfg.write_text('camera = 0\nout = "o"\nfps = 2.5\nevery = 3\n')
    s = resolve({}, cfg)
    assert (s.fps, s.every) == (2.5, 3)
    assert resolve({"fps": 10}, cfg).fps == 10
    assert resolve({"camera": "0", "out": tmp_path}).fps == 5.0
    old = tmp_path / "old.toml"
    old.write_text('camera = 0\nout = "o"\ninterval = 2.0\n')
    assert resolve({}, old).fps == 0.5
    with pytest.raises(SetupError, match="keep fps only"):
        resolve({"fps": 3}, old)
    with pytest.raises(SetupError, match="--every 0: not valid"):
        resolve({"camera": "0", "out": tmp_path, "every": 0})


@pytest.mark.parametrize("given, message", [
    ({}, "no inbox folder"),
    ({"inbox": "/tmp/in", "camera": "0"}, "not both"),
    ({"camera": "0"}, "--camera needs --out"),
    ({"inbox": "/tmp/in", "done": "/tmp/in"}, "is the inbox itself"),
    ({"inbox": "/tmp/in", "done": "/tmp/x", "failed": "/tmp/x"}, "the same folder"),
    ({"inbox": "/tmp/in", "workers": 0}, "--workers 0: not valid"),
    ({"inbox": "/tmp/in", "passes": 9}, "--passes 9: not valid"),
    ({"inbox": "/tmp/in", "colour": "red"}, "unknown setting"),
])
def test_resolve_refuses_what_cannot_run(given, message):
    with pytest.raises(SetupError, match=message):
        resolve(given)


toml_values = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=True), st.booleans(),
                        st.text(max_size=20), st.lists(st.integers(), max_size=3))


def _toml_literal(v) -> str:
    import json
    import math
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    return json.dumps(v)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(KEYS), value=toml_values)
def test_any_value_for_any_key_is_taken_or_refused_with_a_setup_error(tmp_path_factory, key, value):
    cfg = tmp_path_factory.mktemp("cfg") / "edgeemo.toml"
    cfg.write_text(f"{key} = {_toml_literal(value)}\n", encoding="utf-8", errors="surrogatepass")
    try:
        load_file(cfg)
    except SetupError as exc:
        assert str(cfg) in str(exc)


def test_every_setting_is_declared_once_and_documented():
    """The watch command's options, the config file's keys, the checks and docs/settings.md all come from
    WatchSettings' fields."""
    from dataclasses import fields

    from typer.testing import CliRunner

    from edgeemo import config
    from edgeemo.cli import app
    root = Path(__file__).resolve().parents[1]
    names = [config.key_of(f.name) for f in fields(WatchSettings)]
    assert list(config.KEYS) == names and set(config.CHECKS) == set(names)
    doc = (root / "docs" / "settings.md").read_text()
    assert config.reference_markdown() in doc, ("docs/settings.md is out of date: run python -c \"import "
                                                "edgeemo.config as c; print(c.reference_markdown())\" and paste it")
    for key in names:
        assert f"| `{key}` (`--{key}`" in doc
    help_text = CliRunner().invoke(app, ["watch", "--help"], terminal_width=300).output
    for key in names:
        if key != "inbox":
            assert f"--{key}" in help_text, key
