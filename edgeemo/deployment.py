"""What a config file asks of the installation, for deploy/install.sh:

    python -m edgeemo.deployment requirements CONFIG   the pip requirements of the extras it needs
    python -m edgeemo.deployment dropin CONFIG         the systemd drop-in that lets the unit reach its broker

The units have no network (PrivateNetwork=yes, IPAddressDeny=any). A config that names an MQTT broker needs
IPv4/IPv6 sockets to that broker only: the drop-in turns PrivateNetwork off, allows AF_INET/AF_INET6 and
allows the broker's addresses (resolved now), localhost and, for a broker given by name, the name servers of
/etc/resolv.conf; IPAddressDeny=any stays. A broker whose address changes needs the installer run again.
"""
from __future__ import annotations

import ipaddress
import socket
import sys
from importlib import metadata
from pathlib import Path

from .config import load_file
from .errors import EdgeemoError
from .mqtt import Broker

DROPIN_NAME = "network.conf"


def needed_extras(settings: dict) -> list[str]:
    extras = []
    if settings.get("mqtt"):
        extras.append("mqtt")
    if settings.get("metrics-file"):
        extras.append("metrics")
    return extras


def requirements(settings: dict) -> list[str]:
    """The requirement strings of the needed extras, from this package's own metadata (one source: pyproject)."""
    wanted = set(needed_extras(settings))
    out = []
    for req in metadata.requires("edgeemo") or []:
        spec, _, marker = req.partition(";")
        extra = marker.split("extra ==")[-1].strip().strip("'\"") if "extra ==" in marker else None
        if extra in wanted:
            out.append(spec.strip())
    return out


def _nameservers(path: Path = Path("/etc/resolv.conf")) -> list[str]:
    out = []
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                out.append(parts[1])
    except OSError:
        pass
    return out


def broker_addresses(broker: Broker) -> tuple[list[str], bool]:
    """(addresses of the broker, whether it was given by name)."""
    try:
        return [str(ipaddress.ip_address(broker.host))], False
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(broker.host, broker.port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise EdgeemoError(f"the MQTT broker {broker.host!r} cannot be resolved here ({exc}); give its address, or "
                           f"run the installer again once the name resolves") from None
    return sorted({i[4][0] for i in infos}), True


def dropin(settings: dict, config_path: str) -> str:
    """The drop-in text, or "" when the config names no broker."""
    if not settings.get("mqtt"):
        return ""
    broker = Broker.parse(settings["mqtt"])
    addrs, by_name = broker_addresses(broker)
    allow = ["localhost", *addrs] + ([ns for ns in _nameservers() if ns not in addrs] if by_name else [])
    return (f"# Written by deploy/install.sh because {config_path} names the MQTT broker {broker}.\n"
            f"# The service may reach only these addresses; run the installer again if the broker's address changes.\n"
            f"[Service]\nPrivateNetwork=no\nRestrictAddressFamilies=AF_INET AF_INET6\n"
            f"IPAddressAllow={' '.join(dict.fromkeys(allow))}\n")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("requirements", "dropin"):
        print(__doc__.split("\n\n")[0], file=sys.stderr)
        return 2
    try:
        settings = load_file(argv[1])
        if argv[0] == "requirements":
            print("\n".join(requirements(settings)))
        else:
            sys.stdout.write(dropin(settings, argv[1]))
    except EdgeemoError as exc:
        print(f"edgeemo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
