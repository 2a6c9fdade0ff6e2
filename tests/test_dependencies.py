"""The device dependencies each platform resolves to, from pyproject.toml's environment markers: 64-bit
machines take PyPI's ai-edge-litert, OpenCV and numpy; 32-bit ARM (armv7l, or armv8l: a 32-bit program on a
64-bit kernel) takes tflite-runtime 2.14 with numpy 1.x and the system's OpenCV (docs/raspberry-pi.md)."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def resolve(machine: str, python: str = "3.11") -> dict[str, str]:
    """{distribution: version specifier} that pip installs on that machine."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = {"platform_machine": machine, "python_version": python, "python_full_version": python + ".2",
           "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    out: dict[str, str] = {}
    for line in deps:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            assert req.name not in out, f"{req.name} is asked for twice on {machine}"
            out[req.name] = str(req.specifier)
    return out


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_64_bit_machines_take_the_pypi_wheels(machine):
    deps = resolve(machine)
    assert set(deps) == {"numpy", "opencv-python-headless", "watchdog", "typer", "ai-edge-litert"}
    assert "<2" not in deps["numpy"] and deps["opencv-python-headless"] == "<5,>=4.10"


@pytest.mark.parametrize("machine", ["armv7l", "armv8l"])
def test_32_bit_arm_takes_tflite_runtime_numpy_1_and_the_systems_opencv(machine):
    deps = resolve(machine)
    assert set(deps) == {"numpy", "watchdog", "typer", "tflite-runtime"}
    assert deps["numpy"] == "<2,>=1.24"                    # tflite-runtime 2.14 is built against numpy 1.x
    assert deps["tflite-runtime"] == ">=2.14"
    # Debian bookworm's python3-numpy (1.24.2) satisfies it, so pip keeps the system's copy
    assert Requirement("numpy" + deps["numpy"]).specifier.contains("1.24.2")

