"""edgeemo.results on its own: the result files and standard output write the same bytes, appends are whole,
repair cuts a torn line and completes CSV rows, tail_index finds recorded files, a CSV of other columns is
refused."""
from __future__ import annotations

import io
import json

import pytest

from edgeemo.labels import LABELS
from edgeemo.results import ResultFiles, ResultsError, StdoutWriter


def record(name: str, status: str = "ok", faces: int = 1) -> dict:
    probs = {k: round(1 / 7, 4) for k in LABELS}
    return {"file": f"in/{name}", "sha256": name * 2, "status": status, "error": None, "width": 4, "height": 4,
            "faces": [{"box": [0, 0, 4, 4], "score": 0.9, "label": "happy", "confidence": 0.5, "probs": probs}
                      for _ in range(faces)], "time": "2026-12-06T00:00:00.000+00:00"}


def test_files_and_standard_output_carry_the_same_bytes(tmp_path):
    recs = [record("a.jpg"), record("b.jpg", "no_face", 0), record("=c.jpg", faces=2)]
    files = ResultFiles(tmp_path, ("jsonl", "csv"), LABELS)
    outs = {fmt: io.BytesIO() for fmt in ("jsonl", "csv")}
    writers = {fmt: StdoutWriter(fmt, LABELS, stream=outs[fmt]) for fmt in outs}
    for r in recs:
        files.append(r)
        for w in writers.values():
            w.write(r)
    files.close()
    assert (tmp_path / "results.jsonl").read_bytes() == outs["jsonl"].getvalue()
    assert (tmp_path / "results.csv").read_bytes() == outs["csv"].getvalue()
    assert [json.loads(x)["file"] for x in outs["jsonl"].getvalue().splitlines()] == ["in/a.jpg", "in/b.jpg",
                                                                                      "in/=c.jpg"]
    with pytest.raises(ResultsError, match="unknown output format"):
        StdoutWriter("xml", LABELS, stream=io.BytesIO())


def test_repair_cuts_a_torn_line_and_completes_the_csv(tmp_path):
    files = ResultFiles(tmp_path, ("jsonl", "csv"), LABELS, repair=True)
    files.append(record("a.jpg"))
    files.append(record("b.jpg", faces=2))
    files.close()
    whole_csv = (tmp_path / "results.csv").read_bytes()
    with open(tmp_path / "results.jsonl", "ab") as fh:
        fh.write(b'{"file": "in/torn.jp')                       # a power cut mid-record
    lines = whole_csv.splitlines(keepends=True)
    (tmp_path / "results.csv").write_bytes(b"".join(lines[:-1]))   # b.jpg's second row lost
    again = ResultFiles(tmp_path, ("jsonl", "csv"), LABELS, repair=True)
    assert set(again.tail_index({"a.jpg", "b.jpg", "torn.jpg"})) == {("a.jpg", "a.jpga.jpg"), ("b.jpg", "b.jpgb.jpg")}
    again.close()
    assert (tmp_path / "results.jsonl").read_bytes().endswith(b"\n")
    assert b"torn" not in (tmp_path / "results.jsonl").read_bytes()
    assert (tmp_path / "results.csv").read_bytes() == whole_csv


def test_a_csv_with_other_columns_is_refused_not_appended_to(tmp_path):
    (tmp_path / "results.csv").write_text("time,file,something,else\n")
    with pytest.raises(ResultsError, match="other columns"):
        ResultFiles(tmp_path, ("csv",), LABELS)
    assert (tmp_path / "results.csv").read_text() == "time,file,something,else\n"
