"""systemd's service notification protocol (sd_notify), with the standard library only.

Under a ``Type=notify`` unit systemd sets ``$NOTIFY_SOCKET`` (a path, or ``@name`` for a socket in the abstract
namespace) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``). Each message is one datagram
of newline-separated ``KEY=VALUE`` fields: ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``.
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op, and a send never blocks or raises: the daemon
must keep working when the supervisor cannot be told.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Mapping

log = logging.getLogger("edgeemo")


def socket_address(value: str | None) -> str | bytes | None:
    """The address to send to: a filesystem path, or bytes starting with NUL for the abstract namespace."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # e.g. "vsock:..." (systemd 253+ for VMs): not supported here


def watchdog_interval(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when no watchdog applies to us."""
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


class Notifier:
    """Sends notifications to the service manager; ``enabled`` is False outside systemd."""

    def __init__(self, address: str | None = None, watchdog: float | None = None):
        self.raw_address = address
        self.address = socket_address(address)
        if address and self.address is None:
            log.warning("NOTIFY_SOCKET=%r is not a Unix socket address; systemd will not be notified", address)
        self.watchdog_interval = watchdog if self.address is not None else None
        self._sock: socket.socket | None = None
        self._last_ping = 0.0
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Notifier":
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"), watchdog_interval(env))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send one datagram made of the given ``KEY=VALUE`` fields; True if it was sent."""
        if self.address is None or not fields:
            return False
        msg = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # never wait: a receiver that stops reading must not stall the daemon's main loop
            self._sock.sendto(msg, socket.MSG_DONTWAIT, self.address)
            return True
        except BlockingIOError:
            log.debug("the notify socket %s is full; dropped %r", self.raw_address, msg[:40])
            return False
        except OSError as exc:
            if not self._warned:  # once: a missing supervisor must not flood the log
                log.warning("cannot notify systemd through %s (%s); continuing without it",
                            self.raw_address, exc.strerror or exc)
                self._warned = True
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog_due(self, now: float | None = None) -> bool:
        if self.watchdog_interval is None:
            return False
        now = time.monotonic() if now is None else now
        return now - self._last_ping >= self.watchdog_interval

    def ping(self, now: float | None = None) -> bool:
        """WATCHDOG=1; the caller decides that the service is healthy before calling it."""
        self._last_ping = time.monotonic() if now is None else now
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
