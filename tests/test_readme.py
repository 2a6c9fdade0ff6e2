"""The README's two commands stay true: CI runs exactly the README's test command."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.lstrip().startswith("#")]
    test_cmd = [ln for ln in ci if "pytest" in ln]
    assert len(test_cmd) == 1
    assert test_cmd[0] in readme
    quick = [ln.strip() for ln in readme.splitlines() if "edgeemo classify" in ln and "pip install ." in ln]
    assert quick, "README lost its set-up-and-classify command"
