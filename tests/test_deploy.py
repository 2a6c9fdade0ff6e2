"""deploy/install.sh in a temporary root (DESTDIR) and as a dry run: layout, idempotence, uninstall."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "install.sh"


def install(*args: str, destdir: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    if destdir is not None:
        env["DESTDIR"] = str(destdir)
    r = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", oct(st.st_mode & 0o7777))
        else:
            out[rel] = ("file", oct(st.st_mode & 0o7777), hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def test_script_is_valid_bash():
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-S", "warning", str(SCRIPT)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout


def test_dry_run_changes_nothing_and_installs_the_device_package_only(tmp_path):
    root = tmp_path / "root"
    r = install("--dry-run", "--python", sys.executable, destdir=root)
    assert not root.exists()
    out = r.stdout
    pip = [ln for ln in out.splitlines() if " -m pip install " in ln]
    assert len(pip) == 1 and pip[0].rstrip().endswith(str(ROOT))          # this checkout, no [train] extra
    assert "tensorflow" not in pip[0].lower() and "[train]" not in pip[0]
    assert f"-m venv {root}/opt/edgeemo/venv" in out and "--system-site-packages" not in out
    assert "would be installed: " + str(root / "etc/systemd/system/edgeemo.service") in out
    assert "skipped under DESTDIR: systemctl enable edgeemo.service" in out
    assert "skipped under DESTDIR: useradd" in out or "user edgeemo exists" in out
    cam = install("--dry-run", "--picamera2", "--python", sys.executable, destdir=root).stdout
    assert "--system-site-packages" in cam and "python3-picamera2" in cam
    assert "systemctl enable edgeemo-camera.service" in cam


def test_install_twice_then_uninstall_and_purge(tmp_path):
    root = tmp_path / "root"
    first = install("--no-package", "--python", sys.executable, destdir=root).stdout
    for u in ("edgeemo.service", "edgeemo-camera.service", "edgeemo@.service"):
        assert (root / "etc/systemd/system" / u).read_bytes() == (ROOT / "systemd" / u).read_bytes()
    assert (root / "etc/edgeemo/edgeemo.toml").read_bytes() == (ROOT / "deploy/edgeemo.toml").read_bytes()
    assert (root / "etc/edgeemo/edgeemo.toml").stat().st_mode & 0o777 == 0o640
    assert (root / "var/lib/edgeemo/inbox").stat().st_mode & 0o7777 == 0o2770
    assert (root / "opt/edgeemo/venv/bin/python").exists()
    cfg = (root / "opt/edgeemo/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg
    assert "installed: " in first

    before = snapshot(root)
    again = install("--no-package", "--python", sys.executable, destdir=root).stdout
    assert snapshot(root) == before                          # idempotent: the second run changes nothing
    assert "installed: " not in again and again.count("unchanged: ") == 5
    assert "venv exists" in again

    conf = root / "etc/edgeemo/edgeemo.toml"
    conf.write_text(conf.read_text() + "workers = 2\n")     # the admin's edit survives an update
    third = install("--no-package", "--python", sys.executable, destdir=root).stdout
    assert conf.read_text().endswith("workers = 2\n")
    assert (root / "etc/edgeemo/edgeemo.toml.dist").read_bytes() == (ROOT / "deploy/edgeemo.toml").read_bytes()
    assert "kept your" in third

    (root / "var/lib/edgeemo/results").mkdir()
    (root / "var/lib/edgeemo/results/results.jsonl").write_text("{}\n")
    gone = install("--uninstall", destdir=root).stdout
    assert not (root / "opt/edgeemo").exists()
    assert not list((root / "etc/systemd/system").glob("edgeemo*"))
    assert conf.exists() and (root / "var/lib/edgeemo/results/results.jsonl").exists()   # settings and data kept
    assert "--purge removes them" in gone
    install("--uninstall", destdir=root)                    # again: nothing left to do, still fine
    install("--uninstall", "--purge", destdir=root)
    assert not (root / "etc/edgeemo").exists() and not (root / "var/lib/edgeemo").exists()


def test_refuses_without_root_unless_staging(tmp_path):
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run the script as another user")
    r = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(SCRIPT)],
                       capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, cwd="/")
    assert r.returncode == 1 and "run as root" in r.stderr
    bad = install("--purge", check=False, destdir=tmp_path)
    assert bad.returncode == 1 and "--purge goes with --uninstall" in bad.stderr
    unknown = install("--frobnicate", check=False, destdir=tmp_path)
    assert unknown.returncode == 1 and "unknown option --frobnicate" in unknown.stderr


def test_a_config_naming_a_broker_gets_its_extra_and_the_network_dropin(tmp_path):
    """Issue 11: the installer installs paho-mqtt when the config names a broker, and writes the drop-in that
    lets the unit reach that broker only; without a broker the drop-in is removed again."""
    root = tmp_path / "root"
    venv = root / "opt/edgeemo/venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # the venv sees this checkout's edgeemo and its packages (paho-mqtt among them): nothing is downloaded
    import site
    import sysconfig
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    here = [p for p in site.getsitepackages() if Path(p).exists()]
    (purelib / "edgeemo-test.pth").write_text("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in here) + "\n")
    conf = root / "etc/edgeemo/edgeemo.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text((ROOT / "deploy/edgeemo.toml").read_text() + '\n[mqtt]\nurl = "mqtt://pi@192.0.2.7:1884/home"\n')
    out = install("--dry-run", "--no-package", "--python", sys.executable, destdir=root).stdout
    assert re.search(r"pip install --disable-pip-version-check \S*paho-mqtt", out), out
    drop = root / "etc/systemd/system/edgeemo.service.d/network.conf"
    assert not drop.exists()                                  # a dry run changes nothing
    install("--no-package", "--python", sys.executable, destdir=root)
    text = drop.read_text()
    assert "IPAddressAllow=localhost 192.0.2.7" in text and "PrivateNetwork=no" in text
    conf.write_text((ROOT / "deploy/edgeemo.toml").read_text())    # the broker taken out of the config
    again = install("--no-package", "--python", sys.executable, destdir=root).stdout
    assert not drop.exists() and "removed" in again
