"""A native crash while the model's interpreter is built leaves a trace on standard error that names the step,
although TFLite's chatter is silenced there (issue 29: a Segmentation fault that printed nothing). The crash is
real: the interpreter class of a child process is replaced by one that segfaults in its constructor."""
from __future__ import annotations

import subprocess
import sys

CHILD = """
import faulthandler, sys
import edgeemo.runtime as r

class Crashes:
    def __init__(self, **kw):
        faulthandler._sigsegv()

r.interpreter_class = lambda: ("crashing.interpreter", Crashes)
sys.argv = ["edgeemo", "classify", sys.argv[1], "--detector", "none", "--jobs", "1"]
from edgeemo.cli import main
main()
"""


def test_native_crash_building_the_interpreter_names_the_step(data_dir):
    face = data_dir / "fer2013" / "val" / "happy" / "PublicTest_10130075.jpg"
    run = subprocess.run([sys.executable, "-c", CHILD, str(face)], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "Fatal Python error: Segmentation fault" in run.stderr, run.stderr
    assert "in _build_interpreter" in run.stderr and "runtime.py" in run.stderr, run.stderr


def test_stderr_is_restored_after_building(tmp_path):
    """After the quiet section, fd 2 is the real standard error again and faulthandler is as it was."""
    code = ("import faulthandler, os, edgeemo.runtime as r\n"
            "faulthandler.enable()\n"
            "with r._quiet_stderr():\n    os.write(2, b'hidden\\n')\n"
            "os.write(2, b'shown\\n'); print(faulthandler.is_enabled())\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "shown" in run.stderr and "hidden" not in run.stderr
    assert run.stdout.strip() == "True"
