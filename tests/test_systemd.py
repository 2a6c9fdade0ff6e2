"""The systemd units: `systemd-analyze verify` (where the tool exists), the exposure score, and their
agreement with the daemon (notify protocol, exit status of setup errors) and with deploy/ (paths)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeemo import config

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
VENV_BIN = "/opt/edgeemo/venv/bin"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed here")


def unit(name: str) -> dict[str, list[str]]:
    """Section.Key -> values (keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = None
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        out.setdefault(f"{section}.{k.strip()}", []).append(v.strip())
    return out


def staged(tmp_path: Path, name: str, as_name: str | None = None) -> Path:
    """The unit with ExecStart pointing at this checkout's edgeemo (verify checks that it is executable)."""
    real_bin = Path(sys.executable).parent
    assert (real_bin / "edgeemo").exists()
    p = tmp_path / (as_name or name)
    p.write_text((UNITS / name).read_text().replace(VENV_BIN, str(real_bin)))
    return p


@needs_analyze
@pytest.mark.parametrize("name, as_name", [("edgeemo.service", None), ("edgeemo-camera.service", None),
                                           ("edgeemo@.service", "edgeemo@pets.service")])
def test_units_pass_systemd_analyze_verify(tmp_path, name, as_name):
    p = staged(tmp_path, name, as_name)
    r = subprocess.run([ANALYZE, "verify", "--man=no", str(p)], capture_output=True, text=True)
    complaints = [ln for ln in (r.stdout + r.stderr).splitlines() if p.name in ln or "Unknown" in ln]
    assert r.returncode == 0 and not complaints, r.stdout + r.stderr


@needs_analyze
@pytest.mark.parametrize("name, as_name, limit", [("edgeemo.service", None, 2.0),
                                                  ("edgeemo@.service", "edgeemo@pets.service", 2.0),
                                                  ("edgeemo-camera.service", None, 2.0)])
def test_exposure_is_low(tmp_path, name, as_name, limit):
    p = staged(tmp_path, name, as_name)
    r = subprocess.run([ANALYZE, "security", "--offline=yes", str(p)], capture_output=True, text=True)
    if r.returncode != 0 and "offline" in r.stderr:
        pytest.skip("this systemd-analyze cannot score unit files offline")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= limit, r.stdout


def test_service_speaks_the_daemons_protocol():
    for name in ("edgeemo.service", "edgeemo-camera.service", "edgeemo@.service"):
        u = unit(name)
        assert u["Service.Type"] == ["notify"] and u["Service.NotifyAccess"] == ["main"]
        assert u["Service.Restart"] == ["on-failure"] and u["Unit.StartLimitBurst"]
        wd = u["Service.WatchdogSec"][0]
        assert wd.endswith("s") and int(wd[:-1]) >= 30        # well above one file's work
        # setup errors exit 2 (checked against the CLI below): systemd must not restart on them
        assert u["Service.RestartPreventExitStatus"] == ["2"]
        exec_start = u["Service.ExecStart"][0].split()
        assert exec_start[0] == f"{VENV_BIN}/edgeemo" and exec_start[1:3] == ["watch", "--config"]
        assert u["Service.User"] == ["edgeemo"] and u["Service.ProtectSystem"] == ["strict"]
        for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "MemoryDenyWriteExecute"):
            assert u[f"Service.{key}"] == ["yes"], key
        assert "AF_UNIX" in u["Service.RestrictAddressFamilies"][0]
    from typer.testing import CliRunner
    from edgeemo.cli import app
    r = CliRunner().invoke(app, ["watch", "--config", "/nonexistent/edgeemo.toml"])
    assert r.exit_code == 2


def _covered(path: Path, writable: list[str]) -> bool:
    return any(path == Path(w) or Path(w) in path.parents for w in writable)


@pytest.mark.parametrize("name, toml", [("edgeemo.service", "edgeemo.toml"),
                                        ("edgeemo-camera.service", "edgeemo-camera.toml")])
def test_shipped_config_folders_are_writable_under_the_sandbox(name, toml):
    u = unit(name)
    assert u["Service.ExecStart"][0].endswith(f"/etc/edgeemo/{toml}")
    writable = [w.lstrip("-") for v in u["Service.ReadWritePaths"] for w in v.split()]
    writable += [f"/var/lib/{v}" for v in u["Service.StateDirectory"]]
    s = config.resolve({}, ROOT / "deploy" / toml)
    folders = [s.inbox, s.done, s.failed, s.out] if s.camera is None else [s.out, s.frames_dir]
    for f in folders:
        assert _covered(f, writable), f"{f} is read-only under {name}"


def test_camera_variant_reaches_the_camera_and_the_inbox_one_does_not():
    cam, main = unit("edgeemo-camera.service"), unit("edgeemo.service")
    assert cam["Service.SupplementaryGroups"] == ["video"] and cam["Service.PrivateDevices"] == ["no"]
    assert "char-video4linux rw" in cam["Service.DeviceAllow"]
    assert main["Service.PrivateDevices"] == ["yes"] and "Service.DeviceAllow" not in main
    assert main["Service.PrivateNetwork"] == ["yes"] and main["Service.IPAddressDeny"] == ["any"]


def test_template_keeps_instances_apart():
    t = unit("edgeemo@.service")
    assert t["Service.ExecStart"][0].endswith("--config /etc/edgeemo/%i.toml")
    assert t["Service.StateDirectory"] == ["edgeemo/%i"] and t["Service.ReadWritePaths"] == ["/var/lib/edgeemo/%i"]
    assert t["Install.WantedBy"] == ["multi-user.target"]


@needs_analyze
@pytest.mark.parametrize("name, as_name, config_name", [("edgeemo.service", None, "edgeemo.toml"),
                                                        ("edgeemo-camera.service", None, "edgeemo-camera.toml")])
def test_exposure_with_the_mqtt_network_dropin_stays_low(tmp_path, name, as_name, config_name, capsys):
    """Issue 11: a config naming a broker gets the drop-in the installer writes (network to the broker only);
    the exposure score with it stays <= 2.0. Both figures are printed."""
    from edgeemo import deployment
    conf = tmp_path / config_name
    conf.write_text((ROOT / "deploy" / config_name).read_text() + '\n[mqtt]\nurl = "mqtt://pi@192.0.2.10/home"\n')
    text = deployment.dropin(config.load_file(conf), str(conf))
    assert "IPAddressAllow=localhost 192.0.2.10" in text and "PrivateNetwork=no" in text

    def score(unit_text: str) -> float:
        p = tmp_path / (as_name or name)
        p.write_text(unit_text)
        r = subprocess.run([ANALYZE, "security", "--offline=yes", str(p)], capture_output=True, text=True)
        if r.returncode != 0 and "offline" in r.stderr:
            pytest.skip("this systemd-analyze cannot score unit files offline")
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
        assert m, r.stdout + r.stderr
        return float(m.group(1))

    plain = staged(tmp_path, name, as_name).read_text()
    body = "\n".join(ln for ln in text.splitlines() if not ln.startswith(("#", "[")))
    with_mqtt = plain.replace("[Install]", body + "\n\n[Install]")
    without, with_ = score(plain), score(with_mqtt)
    with capsys.disabled():
        print(f"\n{name}: exposure {without} without MQTT, {with_} with the broker drop-in")
    assert with_ <= 2.0 and with_ >= without
