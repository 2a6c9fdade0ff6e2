"""edgeemo.jsonl (the one tolerant reader of JSON lines) and edgeemo.atomic (the one atomic writer)."""
from __future__ import annotations

import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeemo import atomic, jsonl


def test_parse_takes_objects_and_refuses_everything_else():
    assert jsonl.parse(b'{"file": "a.jpg", "status": "ok"}\n') == {"file": "a.jpg", "status": "ok"}
    assert jsonl.parse('{"a": 1}') == {"a": 1}
    for bad in (b'{"file": "a.jp', b"\xff\xfe{}", b"42", b"[1, 2]", b'"text"', b"null", b"",
                b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        assert jsonl.parse(bad) is None, bad[:20]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parse_never_raises_on_any_bytes(line):
    rec = jsonl.parse(line)
    assert rec is None or isinstance(rec, dict)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=8), st.none()), max_size=5))
def test_parse_gives_back_what_json_wrote(rec):
    assert jsonl.parse(json.dumps(rec).encode()) == rec


def test_read_numbers_lines_and_skips_blanks(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_bytes(b'{"n": 1}\n\n{"n": 2\n[3]\n{"n": 4}\n')
    assert list(jsonl.read(p)) == [(1, {"n": 1}), (3, None), (4, None), (5, {"n": 4})]


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "state.json"
    p.write_text("old")
    atomic.write_json(p, {"offset": 12, "name": "caf\udcff.jpg"})
    # a name that is not UTF-8 (a surrogate escape) is written as a JSON escape, and reads back the same
    assert b"caf\\udcff.jpg" in p.read_bytes()
    assert json.loads(p.read_bytes()) == {"offset": 12, "name": "caf\udcff.jpg"}
    atomic.write_bytes(p, b"new", fsync=False)
    assert p.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_atomic_write_that_fails_keeps_the_old_content(tmp_path):
    p = tmp_path / "state.json"
    p.write_text("old")
    try:
        atomic.write_json(p, {"x": object()})           # not JSON: fails before anything is written
    except TypeError:
        pass
    else:
        raise AssertionError("an object that is not JSON was written")
    (tmp_path / "dir").mkdir()
    try:
        atomic.write_bytes(tmp_path / "dir", b"x")      # the rename fails: the temporary is removed
    except OSError:
        pass
    assert p.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["dir", "state.json"]
