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


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "edgeemo" / "models" / "MODEL_CARD.md"]


def test_every_relative_link_resolves_and_every_page_is_reachable():
    import re
    linked = set()
    for page in _pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)}: the link {target} leads nowhere"
            linked.add(path)
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert page.resolve() in linked, f"{page.relative_to(ROOT)} is linked from no page"
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def _shown_commands():
    """(page, command, options) for every `edgeemo COMMAND ... --option` line the pages show as code."""
    import re
    for page in _pages():
        in_fence = False
        for line in page.read_text().splitlines():
            if line.strip().startswith("```"):
                in_fence = not in_fence
                continue
            if not (in_fence or line.startswith("    ")):
                continue
            for part in re.split(r"&&|\|", line):
                m = re.match(r"\s*(?:\S*/)?edgeemo ([a-z][a-z-]+)\b(.*)", part)
                if m:
                    opts = {o.split("=")[0] for o in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*(?:=\S+)?", m.group(2))}
                    yield page, m.group(1), opts


def test_the_commands_the_pages_show_exist_with_those_options():
    """Every `edgeemo COMMAND --option` in the README and docs/ is a command and an option that `--help` lists."""
    from typer.testing import CliRunner

    from edgeemo.cli import app
    runner, helps, seen = CliRunner(), {}, 0
    for page, command, opts in _shown_commands():
        if command not in helps:
            res = runner.invoke(app, [command, "--help"], terminal_width=200)
            assert res.exit_code == 0, f"{page.name}: `edgeemo {command}` is not a command ({res.output[-300:]})"
            helps[command] = res.output
        for opt in opts - {"--help"}:
            assert opt in helps[command], f"{page.name}: `edgeemo {command}` has no option {opt}"
        seen += 1
    assert seen >= 30 and {"classify", "watch", "collect", "report", "train", "convert", "evaluate"} <= set(helps)
