"""sd_notify: messages on real AF_UNIX datagram sockets made by the test (a path and the abstract namespace)."""
from __future__ import annotations

import logging
import os
import signal
import socket
import time

import pytest

from edgeemo.notify import Notifier, socket_address, watchdog_interval
from edgeemo.service import Health, Service
from daemon_harness import DEADLINE, png_bytes, wait_until, write


@pytest.fixture
def path_socket(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    s.bind(str(path))
    s.settimeout(DEADLINE)
    yield s, str(path)
    s.close()


@pytest.fixture
def abstract_socket():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"edgeemo-test-{os.getpid()}-{time.monotonic_ns()}"
    s.bind("\0" + name)
    s.settimeout(DEADLINE)
    yield s, "@" + name
    s.close()


def test_addresses_and_watchdog_settings():
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@sd-notify") == b"\0sd-notify"
    assert socket_address("") is None and socket_address(None) is None
    assert socket_address("vsock:2:1234") is None
    pid = os.getpid()
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(pid)}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(pid + 1)}) is None   # not ours
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({}) is None


def test_messages_reach_a_path_socket(path_socket):
    sock, path = path_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    assert n.enabled and n.watchdog_interval == 1.0
    assert n.ready("starting up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=starting up"
    assert n.status("3 processed\nsecond line")                  # one field per line: newlines are flattened
    assert sock.recv(4096) == b"STATUS=3 processed second line"
    assert n.watchdog_due(now=100.0)
    assert n.ping(now=100.0) and sock.recv(4096) == b"WATCHDOG=1"
    assert not n.watchdog_due(now=100.5) and n.watchdog_due(now=101.0)
    assert n.stopping("bye") and sock.recv(4096) == b"STOPPING=1\nSTATUS=bye"
    n.close()


def test_messages_reach_an_abstract_socket(abstract_socket):
    sock, name = abstract_socket
    n = Notifier(name)
    assert n.send("READY=1") and sock.recv(4096) == b"READY=1"
    n.close()


def test_outside_systemd_nothing_happens_and_a_dead_socket_is_not_fatal(tmp_path, caplog):
    off = Notifier.from_env({})
    assert not off.enabled and not off.ready() and not off.watchdog_due()
    gone = Notifier(str(tmp_path / "nobody-listens.sock"))
    with caplog.at_level(logging.WARNING, logger="edgeemo"):
        assert gone.send("READY=1") is False
        assert gone.send("STATUS=x") is False
    assert len([r for r in caplog.records if "cannot notify systemd" in r.getMessage()]) == 1   # said once


def test_a_receiver_that_stops_reading_never_blocks_the_sender(path_socket):
    import threading
    sock, path = path_socket                            # bound, but nobody reads: its queue fills up
    n = Notifier(path)
    results = []
    t = threading.Thread(target=lambda: results.extend(n.send(f"STATUS={i}") for i in range(5000)), daemon=True)
    t.start()
    t.join(DEADLINE)
    assert not t.is_alive(), "sending blocked on a full socket"
    assert results[0] is True and results[-1] is False   # the first ones went through, then they were dropped
    assert sock.recv(4096) == b"STATUS=0"
    n.close()


class _Idle(Service):
    """The smallest service: nothing to do; shows when the shared main loop feeds the watchdog."""

    def start(self):
        pass

    def status_text(self):
        return "idle"

    def shutdown(self):
        pass


def test_watchdog_pings_stop_while_a_worker_is_stuck(path_socket, monkeypatch):
    sock, path = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")                  # ping every 0.5 s; stuck after 1 s
    from edgeemo.config import WatchSettings
    svc = _Idle(WatchSettings(), 1)
    svc._status = svc.status_text()                                 # as after READY=1: only pings follow
    sock.settimeout(0.05)
    now = time.monotonic()
    svc._notify(now)
    assert sock.recv(4096) == b"WATCHDOG=1"
    svc.health.busy(0)
    svc._notify(now + 0.6)                                          # busy, not yet stuck: still fed
    assert sock.recv(4096) == b"WATCHDOG=1"
    svc.health._since[0] = now - 5                                  # the same item for 5 s
    svc._notify(now + 1.2)
    with pytest.raises(socket.timeout):
        sock.recv(4096)
    svc.health.idle(0)
    svc._notify(now + 1.8)
    assert sock.recv(4096) == b"WATCHDOG=1"
    h = Health(2)
    h.busy(1)
    assert h.stuck(time.monotonic() + 10, 1.0) == [1] and h.stuck(time.monotonic(), 1.0) == []


def test_daemon_notifies_ready_status_watchdog_and_stopping(abstract_socket, daemon_factory):
    sock, name = abstract_socket
    d = daemon_factory(env={"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "400000"})
    d.start(wait=False)
    got: list[bytes] = []

    def receive_until(pred, what):
        def step():
            sock.settimeout(0.2)
            try:
                got.append(sock.recv(4096))
            except socket.timeout:
                pass
            return any(pred(m) for m in got)
        wait_until(step, what, d)

    receive_until(lambda m: m.startswith(b"READY=1"), "READY=1")
    for i in range(3):
        write(d.inbox / f"n{i}.png", png_bytes(300 + i))
    receive_until(lambda m: m.startswith(b"STATUS=3 processed: 3 done"), "STATUS with 3 processed")
    pings = sum(m == b"WATCHDOG=1" for m in got)
    receive_until(lambda m: sum(x == b"WATCHDOG=1" for x in got) >= pings + 3, "three more pings")
    d.proc.send_signal(signal.SIGTERM)
    receive_until(lambda m: m.startswith(b"STOPPING=1"), "STOPPING=1")
    assert d.wait() == 0
    ready = next(m for m in got if m.startswith(b"READY=1"))
    assert b"STATUS=0 processed" in ready
    assert got.index(ready) < next(i for i, m in enumerate(got) if m.startswith(b"STOPPING=1"))
