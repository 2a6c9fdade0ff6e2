"""The result files and standard output: one encoder for both, the record schema of every status, CSV
cells made safe, a zero-filled tail cut, names that are not UTF-8 kept losslessly."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from typer.testing import CliRunner

from edgeemo.cli import app


TIME = re.compile(rb'"time":"[^"]*"|^[^,\n]*(?=,)', re.M)


@pytest.fixture()
def photos(tmp_path, data_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("Tom_Cruise_avp_2014_4.jpg", "2008_001322.jpg", "dogs.jpg"):
        shutil.copy(data_dir / "scenes" / name, folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "=formula.png").write_bytes((data_dir / "scenes" / "dogs.jpg").read_bytes())
    return folder


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("fmt, name", [("jsonl", "results.jsonl"), ("csv", "results.csv")])
def test_stdout_carries_the_bytes_of_the_result_files(photos, tmp_path, device_model, yunet_model, fmt, name):
    common = ["--model", device_model, "--detector", "yunet", "--detector-model", yunet_model, "--format", fmt,
              "--jobs", 1]                                     # name order: the two runs line up record by record
    to_stdout = run("classify", photos, *common)
    to_file = run("classify", photos, *common, "--out", tmp_path / "out")
    assert to_stdout.exit_code == 0 and to_file.exit_code == 0, to_stdout.output + to_file.output
    on_disk = (tmp_path / "out" / name).read_bytes()
    printed = to_stdout.stdout_bytes
    assert len(on_disk.splitlines()) == len(printed.splitlines()) >= 5
    # the records differ only in the time they were made
    assert TIME.sub(b"T", printed) == TIME.sub(b"T", on_disk)


def test_records_of_rejected_files_have_the_record_schema(tmp_path, device_model):
    from edgeemo.record import STATUSES
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    os.symlink(folder / "nowhere.jpg", folder / "dangling.jpg")
    res = run("classify", folder, "--model", device_model, "--detector", "none")
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert {r["status"] for r in recs} <= set(STATUSES) and len(recs) == 2
    keys = {"file", "sha256", "status", "error", "width", "height", "faces", "model", "time"}
    # classify adds the input's size and mtime_ns where it is a regular file (what --resume compares)
    assert all(set(r) - {"size", "mtime_ns"} == keys for r in recs)
    assert all(r["status"] == "unreadable" and r["error"] for r in recs)


def test_csv_cells_with_line_breaks_are_quoted_and_formulas_escaped():
    """Issue 10, defect 8: a carriage return in a file name must not split a row, and no cell may start a
    formula."""
    import csv
    import io

    from edgeemo.results import csv_bytes
    rec = {"time": "2026-01-01T00:00:00.000+00:00", "file": "a.jpg\r=cmd|' /C calc'!A0", "sha256": None,
           "status": "unreadable", "error": "line one\nline two\r+2", "width": None, "height": None, "faces": []}
    data = csv_bytes(rec, ["happy"])
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert len(rows) == 1 and rows[0][1] == rec["file"] and rows[0][4] == rec["error"]
    assert b'"a.jpg\r=cmd' in data and data.count(b"\n") == 2          # quoted; the row's own end, and "\n" in error
    escaped = csv_bytes({**rec, "file": "=cmd|x", "error": "@SUM(1)"}, ["happy"]).decode()
    assert ",'=cmd|x," in escaped and ",'@SUM(1)," in escaped


def test_a_zero_filled_tail_is_cut_from_both_result_files(tmp_path):
    """Issue 10, defect 8: a power cut can leave zeros after the last complete record."""
    from edgeemo.results import ResultFiles, csv_bytes, csv_header_bytes, jsonl_bytes
    rec = {"file": "x.jpg", "sha256": "ab", "status": "no_face", "error": None, "width": 4, "height": 4,
           "faces": [], "model": {"name": "m", "sha256": "cd"}, "time": "2026-01-01T00:00:00.000+00:00"}
    (tmp_path / "results.jsonl").write_bytes(jsonl_bytes(rec) + b"\0" * 300)
    (tmp_path / "results.csv").write_bytes(csv_header_bytes(["happy"]) + csv_bytes(rec, ["happy"]) + b"\0" * 300)
    files = ResultFiles(tmp_path, ("jsonl", "csv"), ["happy"], fsync=True, repair=True)
    files.close()
    assert (tmp_path / "results.jsonl").read_bytes() == jsonl_bytes(rec)
    assert (tmp_path / "results.csv").read_bytes() == csv_header_bytes(["happy"]) + csv_bytes(rec, ["happy"])


def test_a_name_that_is_not_utf8_gets_its_record_losslessly(tmp_path, data_dir, device_model):
    """Issue 10, defect 3 (in part): a non-UTF-8 file name crashed `classify --out`."""
    folder = tmp_path / "in"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9-\xff.jpg"
    with open(raw, "wb") as fh:
        fh.write((data_dir / "scenes" / "dogs.jpg").read_bytes())
    res = run("classify", folder, "--model", device_model, "--detector", "none", "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "out" / "results.jsonl").read_bytes().splitlines()
    assert len(lines) == 1 and b"\\udcff" in lines[0]
    rec = json.loads(lines[0])
    assert os.fsencode(rec["file"]) == raw and rec["status"] == "ok"
    assert b"\\udcff" in (tmp_path / "out" / "results.csv").read_bytes()
