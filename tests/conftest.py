"""Shared fixtures. Real data lives in ../shared/data beside the checkout (CI has it there too)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEEMO_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
YUNET = SHARED / "models" / "face_detection_yunet_2026may.onnx"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests read real data from ../shared beside the checkout "
                    f"(set EDGEEMO_SHARED to point elsewhere)")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return need(DATA)


@pytest.fixture(scope="session")
def yunet_model() -> Path:
    return need(YUNET)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny full-int8 model (untrained 'tiny' recipe) with edgeemo metadata: for plumbing tests."""
    pytest.importorskip("tensorflow", reason="needs the [train] extra")
    from edgeemo import modelfile
    from edgeemo_convert import archs
    from edgeemo_convert.quantize import to_tflite
    import keras

    keras.utils.set_random_seed(0)
    km = archs.build("tiny")
    calib = np.random.default_rng(0).integers(0, 256, (16, 48, 48, 1), dtype=np.uint8)
    flat = modelfile.embed_metadata(to_tflite(km, calib), {"name": "tiny-test", "version": "0"})
    path = tmp_path_factory.mktemp("model") / "tiny.int8.tflite"
    path.write_bytes(flat)
    return path


@pytest.fixture(scope="session")
def device_model(request) -> Path:
    """The model the device tests run: the shipped default if this build has one, else the tiny model."""
    from edgeemo.runtime import default_model_path
    return default_model_path() or request.getfixturevalue("tiny_model")


@pytest.fixture
def daemon_factory(tmp_path, device_model):
    """Makes real `edgeemo watch` daemons (tests/daemon_harness.py) and stops them after the test."""
    from daemon_harness import Daemon
    made = []

    def make(*args, **kw):
        d = Daemon(kw.pop("root", tmp_path), device_model, *args, **kw)
        made.append(d)
        return d
    yield make
    for d in made:
        d.__exit__()


@pytest.fixture()
def broker(tmp_path):
    """A real mosquitto on a loopback port (tests/broker_harness.py), stopped after the test."""
    from broker_harness import Mosquitto
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture()
def secret(tmp_path):
    """The broker's password in a file, as --mqtt-password-file takes it."""
    from broker_harness import PASSWORD
    p = tmp_path / "mqtt-password"
    p.write_text(PASSWORD + "\n")
    return p
