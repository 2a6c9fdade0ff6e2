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


def test_the_32_bit_command_is_the_one_the_emulated_pi_os_check_runs():
    """deploy/test-pi-os.sh armhf runs the docs page's --system-site-packages line; the README shows the same."""
    readme = (ROOT / "README.md").read_text()
    page = (ROOT / "docs" / "raspberry-pi.md").read_text()
    script = (ROOT / "deploy" / "test-pi-os.sh").read_text()
    assert "grep -m1 -e '--system-site-packages .venv' \"$repo/docs/raspberry-pi.md\"" in script
    line = next(ln.strip() for ln in page.splitlines() if "--system-site-packages .venv" in ln)
    assert "python3-opencv opencv-data" in line and "pip install ." in line and "edgeemo classify" in line
    assert line in [ln.strip() for ln in readme.splitlines()]
    arm64 = "grep -m1 '^    python3 -m venv .venv && .venv/bin/pip install \\. ' \"$repo/README.md\""
    assert arm64 in script
