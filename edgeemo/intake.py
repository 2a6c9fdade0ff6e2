"""The intake queue of the folder daemon: names of files waiting for a worker, bounded, with settling."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict


class Intake:
    """Names waiting for a worker: ``ready`` (complete: closed after writing, or renamed in) and ``pending``
    (found by a scan or a poll: ready once size and mtime have not changed for ``settle`` seconds).
    At most ``capacity`` names are held; beyond that a name is dropped and ``overflowed`` is set, and the
    owner rescans the folder when there is room again.

    With ``trust_mtime`` (a local filesystem, whose mtimes come from this machine's clock) a pending file
    whose last modification is already ``settle`` seconds old is ready at once: the same test, without
    watching for ``settle`` seconds. Polled folders (network shares, other clocks) always watch."""

    def __init__(self, capacity: int, settle: float, trust_mtime: bool = False):
        self.capacity, self.settle, self.trust_mtime = capacity, settle, trust_mtime
        self._cv = threading.Condition()
        self._ready: OrderedDict[str, None] = OrderedDict()
        self._pending: dict[str, list] = {}
        self._busy: dict[str, bool] = {}
        self._closed = False
        self.overflowed = False

    def __contains__(self, name: str) -> bool:
        with self._cv:
            return name in self._ready or name in self._pending or name in self._busy

    def __len__(self) -> int:
        with self._cv:
            return len(self._ready) + len(self._pending)

    def add(self, name: str, ready: bool) -> bool:
        """Offer a name; False when it was dropped because the queue is full."""
        with self._cv:
            if self._closed:
                return True
            if name in self._busy:
                self._busy[name] = True        # seen again while in hand: look once more afterwards
                return True
            if name in self._ready or (not ready and name in self._pending):
                return True
            if name in self._pending:
                del self._pending[name]
            elif len(self._ready) + len(self._pending) >= self.capacity:
                self.overflowed = True
                return False
            if ready:
                self._ready[name] = None
                self._cv.notify()
            else:
                self._pending[name] = [None, 0.0]
            return True

    def take(self, timeout: float) -> str | None:
        with self._cv:
            self._cv.wait_for(lambda: self._ready or self._closed, timeout)
            if self._closed or not self._ready:
                return None
            name, _ = self._ready.popitem(last=False)
            self._busy[name] = False
            return name

    def release(self, name: str) -> bool:
        """The worker is done with ``name``; True if an event for that name came meanwhile."""
        with self._cv:
            return self._busy.pop(name, False)

    def check_pending(self, stat_fn, now: float) -> None:
        with self._cv:
            items = list(self._pending.items())
        promote, drop = [], []
        wall = time.time()
        for name, entry in items:
            try:
                st = stat_fn(name)
            except OSError:
                drop.append((name, entry))
                continue
            sig = (st.st_size, st.st_mtime_ns)
            if entry[0] is None and self.trust_mtime and wall - st.st_mtime >= self.settle:
                promote.append((name, entry))
            elif entry[0] != sig:
                entry[0], entry[1] = sig, now
            elif now - entry[1] >= self.settle:
                promote.append((name, entry))
        if promote or drop:
            with self._cv:
                for name, entry in drop:
                    if self._pending.get(name) is entry:
                        del self._pending[name]
                for name, entry in promote:
                    if self._pending.get(name) is entry:
                        del self._pending[name]
                        self._ready[name] = None
                self._cv.notify_all()

    def counts(self) -> tuple[int, int, int]:
        with self._cv:
            return len(self._ready), len(self._pending), len(self._busy)

    def needs_rescan(self) -> bool:
        with self._cv:
            return self.overflowed and len(self._ready) + len(self._pending) <= self.capacity // 2

    def clear_overflow(self) -> None:
        with self._cv:
            self.overflowed = False

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
