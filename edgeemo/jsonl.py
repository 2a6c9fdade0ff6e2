"""Reading JSON lines tolerantly: the one parser of results.jsonl lines, MQTT payloads and the like.

A line is a record only if it is a JSON object. Anything else (a torn line, invalid UTF-8, a number or a
list, JSON nested deeper than Python's parser can follow) is ``None``: the caller counts it, names the
line, and goes on. Nothing here raises on bad input.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator


def parse(line: bytes | str) -> dict | None:
    """The JSON object on one line, or None when the line is not one."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError, TypeError):     # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return rec if isinstance(rec, dict) else None


def records(lines: Iterable[bytes | str]) -> Iterator[tuple[int, dict | None]]:
    """(line number from 1, record or None) for each line that is not blank."""
    for n, line in enumerate(lines, 1):
        if line.strip():
            yield n, parse(line)


def read(path: str | Path) -> Iterator[tuple[int, dict | None]]:
    """``records`` of a file, read line by line (OSError is the caller's: a file it cannot open)."""
    with open(path, "rb") as fh:
        yield from records(fh)
