"""edgeemo.mqtt.Outbox on its own: the cursor into results.jsonl that moves only past acknowledged records."""
from __future__ import annotations

import json

from edgeemo.mqtt import Outbox


def test_pending_gives_complete_lines_after_the_cursor_and_advance_saves_it(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_bytes(b'{"n": 1}\n\n{"n": 2}\n{"n": 3')            # a blank line, and a record being written
    box = Outbox(results, tmp_path / "state")
    lines, end = box.pending(10)
    assert lines == [(0, b'{"n": 1}'), (10, b'{"n": 2}')] and end == 19
    assert box.backlog() == results.stat().st_size
    box.advance(end)
    assert json.loads((tmp_path / "state" / "cursor.json").read_text())["offset"] == 19
    assert box.pending(10) == ([], 19)                   # the torn record waits for its newline
    with open(results, "ab") as fh:
        fh.write(b'}\n{"n": 4}\n')
    again = Outbox(results, tmp_path / "state")          # a restart reads the saved cursor
    assert again.pending(1) == ([(19, b'{"n": 3}')], 28)
    assert again.pending(10)[0] == [(19, b'{"n": 3}'), (28, b'{"n": 4}')]


def test_a_replaced_or_cut_file_is_published_from_its_start(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_bytes(b'{"n": 1}\n{"n": 2}\n')
    box = Outbox(results, tmp_path / "state")
    box.advance(box.pending(10)[1])
    results.unlink()
    results.write_bytes(b'{"n": 9}\n')                   # a new file (new inode, shorter)
    assert box.pending(10) == ([(0, b'{"n": 9}')], 9)


def test_an_unreadable_cursor_starts_again_from_the_first_record(tmp_path, caplog):
    results = tmp_path / "results.jsonl"
    results.write_bytes(b'{"n": 1}\n')
    (tmp_path / "state").mkdir()
    for junk in (b"not json", b'{"offset": "x"}', b"[1]", b"[" * 100_000, b'{"offset": -5}', b'{"offset": 1e999}',
                 b'{"offset": 3, "inode": "x"}', b"\xff\xfe"):
        (tmp_path / "state" / "cursor.json").write_bytes(junk)
        box = Outbox(results, tmp_path / "state")
        assert box.offset == 0 and box.pending(10)[0] == [(0, b'{"n": 1}')], junk[:10]
    assert "unreadable MQTT cursor" in caplog.text
