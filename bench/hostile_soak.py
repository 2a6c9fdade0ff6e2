"""Hostile-inbox soak: what producers can put in an inbox must never stop `edgeemo watch`, lose a file or
make a record lie.

    python bench/hostile_soak.py [--hostile 1000] [--photos 1000] [--memory-max-mb 1024] [--seed 0] [--keep DIR]

One real daemon process (`edgeemo watch`, YuNet where its model file is found, else Haar), run inside a
memory cgroup of --memory-max-mb (the unit's MemoryMax) where this machine allows one (root), else with the
decode budget that limit would give. Into its inbox go, in four waves: real photos (FER2013 `val/` faces
and the `scenes/` photos) and hostile entries of every kind: random bytes, truncated, bit-flipped and
zero-byte JPEGs, PNG bombs, headers claiming 90 megapixels, a sparse 300 MB file, FIFOs, symbolic links
(to /etc/passwd, /dev/zero, a folder, nowhere, themselves, a photo), hard links, files closed half-written
and appended later, and names with newlines, carriage returns, bytes that are not UTF-8, 250 bytes,
formulas and leading dashes. On the way: a `kill -9` in the middle of the second and of the fourth wave
(each followed by a restart), and the inbox removed and created again between waves.

At the end every entry must have exactly one record (names compared as bytes), every regular file's
record must carry its sha256, the daemon must still be running, and its memory must have stayed under the
limit. Prints the figures; exit status 1 if any check fails.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_memory import Cgroup  # noqa: E402

SHARED = Path(os.environ.get("EDGEEMO_SHARED", ROOT.parent / "shared"))
FER_VAL = SHARED / "data" / "fer2013" / "val"
SCENES = SHARED / "data" / "scenes"


def real_photos(n: int) -> list[bytes]:
    faces = sorted(FER_VAL.rglob("*.jpg"))[: max(0, n - 20)]
    scenes = sorted(SCENES.glob("*.jpg"))
    out = [p.read_bytes() for p in faces]
    while len(out) < n:
        out.append(scenes[len(out) % len(scenes)].read_bytes())
    return out


class Producer:
    """Writes entries into the inbox and remembers what each name (bytes) should get a record for."""

    def __init__(self, inbox: Path, photos: list[bytes], rng: np.random.Generator):
        self.inbox, self.photos, self.rng = inbox, photos, rng
        self.expected: dict[bytes, str | None] = {}       # name -> sha256 of a regular file, None for others
        self.kinds: dict[str, int] = {}
        self.k = 0
        self.late: list[tuple[Path, bytes]] = []          # halves to append later

    def _name(self, stem: str, ext: str = ".jpg") -> bytes:
        self.k += 1
        odd = self.k % 9
        base = f"{stem}-{self.k:05d}".encode()
        if odd == 1:
            base += b"\nline"
        elif odd == 2:
            base += b"\rcr"
        elif odd == 3:
            base += b"-\xff\xfe-latin"
        elif odd == 4:
            base = b"=HYPERLINK(x)" + base
        elif odd == 5:
            base = b"-" + base
        elif odd == 6:
            base += b"x" * (250 - len(base) - len(ext))
        return base + ext.encode()

    def _path(self, name: bytes) -> bytes:
        return os.fsencode(self.inbox) + b"/" + name

    def put(self, kind: str, data: bytes, ext: str = ".jpg") -> None:
        name = self._name(kind, ext)
        tmp = self._path(b".tmp-" + hashlib.sha1(name).hexdigest().encode())
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.rename(tmp, self._path(name))
        self.expected[name] = hashlib.sha256(data).hexdigest()
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def photo(self) -> None:
        self.put("photo", self.photos[self.k % len(self.photos)])

    def hostile(self) -> None:
        photo = self.photos[int(self.rng.integers(len(self.photos)))]
        kind = int(self.rng.integers(14))
        if kind == 0:
            self.put("random", self.rng.integers(0, 256, int(self.rng.integers(1, 5000)), dtype=np.uint8).tobytes())
        elif kind == 1:
            self.put("truncated", photo[: len(photo) // 2])
        elif kind == 2:
            data = bytearray(photo)
            for _ in range(3):
                i = int(self.rng.integers(len(data) // 2, len(data) - 2))
                data[i] ^= 1 << int(self.rng.integers(8))
            self.put("bitflip", bytes(data))
        elif kind == 3:
            self.put("empty", b"")
        elif kind == 4:
            self.put("pngbomb", BOMB, ".png")
        elif kind == 5:
            head = bytearray(photo)
            i = head.find(b"\xff\xc0")
            if i > 0:
                head[i + 5:i + 9] = (9000).to_bytes(2, "big") + (10000).to_bytes(2, "big")
            self.put("hugeheader", bytes(head))
        elif kind == 6:
            name = self._name("sparse", ".png")
            with open(self._path(name), "wb") as fh:
                fh.truncate(300 << 20)
            self.expected[name] = None      # not read: over the file-size cap
            self.kinds["sparse300MB"] = self.kinds.get("sparse300MB", 0) + 1
        elif kind == 7:
            name = self._name("fifo")
            os.mkfifo(self._path(name))
            self.expected[name] = None
            self.kinds["fifo"] = self.kinds.get("fifo", 0) + 1
        elif kind in (8, 9):
            name = self._name("link")
            target = [b"/etc/passwd", b"/dev/zero", b"/tmp", b"/nonexistent/x.jpg", None, b"photo-00001.jpg"][
                int(self.rng.integers(6))]
            os.symlink(target if target is not None else name, self._path(name))
            self.expected[name] = None
            self.kinds["symlink"] = self.kinds.get("symlink", 0) + 1
        elif kind == 10:
            src = self._name("hardsrc")
            with open(self._path(src), "wb") as fh:
                fh.write(photo)
            dst = self._name("hardlink")
            os.link(self._path(src), self._path(dst))
            digest = hashlib.sha256(photo).hexdigest()
            self.expected[src] = digest
            self.expected[dst] = digest
            self.kinds["hardlink"] = self.kinds.get("hardlink", 0) + 2
        elif kind == 11:
            name = self._name("appended")
            with open(self._path(name), "wb") as fh:
                fh.write(photo[: len(photo) // 2])
            self.late.append((Path(os.fsdecode(self._path(name))), photo[len(photo) // 2:]))
            self.expected[name] = hashlib.sha256(photo).hexdigest()
            self.kinds["appended"] = self.kinds.get("appended", 0) + 1
        elif kind == 12:
            self.put("webp-garbage", b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(64), ".webp")
        else:
            self.put("text", b"SECRET not an image\n" * 20, ".png")

    def append_late(self) -> None:
        for path, rest in self.late:
            with open(path, "ab") as fh:
                fh.write(rest)
        self.late = []


def _bomb() -> bytes:
    flat = np.full((7000, 7000, 4), 120, np.uint8)
    return cv2.imencode(".png", flat, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()


BOMB = b""


class Daemon:
    def __init__(self, root: Path, inbox: Path, cgroup: Cgroup | None, env: dict):
        self.root, self.inbox, self.cgroup, self.env = root, inbox, cgroup, env
        self.out = root / "out"
        self.proc = None
        self.peak_rss = 0
        self.starts = 0
        self.log = open(root / "daemon.log", "ab")
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def start(self):
        cmd = [sys.executable, "-m", "edgeemo.cli", "watch", str(self.inbox), "--out", str(self.out),
               "--done", str(self.root / "done"), "--failed", str(self.root / "failed"), "--settle", "1.5",
               "--rescan", "10"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                     preexec_fn=self.cgroup.enter if self.cgroup else None)
        self.starts += 1

    def _sample(self):
        while not self._stop.is_set():
            p = self.proc
            if p is not None and p.poll() is None:
                try:
                    for line in open(f"/proc/{p.pid}/status"):
                        if line.startswith("VmRSS"):
                            self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
                except OSError:
                    pass
            time.sleep(0.1)

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def records(self) -> list[dict]:
        path = self.out / "results.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_bytes().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def record_name(rec: dict) -> bytes:
    return os.fsencode(rec["file"]).rsplit(b"/", 1)[-1]


def main() -> int:
    global BOMB
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hostile", type=int, default=1000)
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--memory-max-mb", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="Keep the soak's folders here (default: a temporary folder).")
    args = ap.parse_args()
    BOMB = _bomb()
    root = Path(tempfile.mkdtemp(prefix="edgeemo-soak-")) if args.keep is None else args.keep
    root.mkdir(parents=True, exist_ok=True)
    inbox = root / "inbox"
    inbox.mkdir()
    cg = Cgroup(args.memory_max_mb << 20)
    env = dict(os.environ)
    if cg.path is None:
        env["EDGEEMO_DECODE_BUDGET_MB"] = str(args.memory_max_mb // 4)
        where = f"no memory cgroup here (needs root): decode budget set to {args.memory_max_mb // 4} MB instead"
    else:
        where = f"inside a memory cgroup of {args.memory_max_mb} MB ({'v1' if cg.v1 else 'v2'})"
    print(f"soak in {root}; daemon {where}")
    rng = np.random.default_rng(args.seed)
    prod = Producer(inbox, real_photos(args.photos), rng)
    d = Daemon(root, inbox, cg if cg.path else None, env)
    t0 = time.time()
    d.start()
    time.sleep(3)

    def wave(photos: int, hostile: int, kill_at: float | None = None):
        items = ["p"] * photos + ["h"] * hostile
        rng.shuffle(items)
        for i, it in enumerate(items):
            prod.photo() if it == "p" else prod.hostile()
            if kill_at is not None and i == int(len(items) * kill_at):
                d.kill9()
                print(f"  kill -9 after {i} entries of this wave; {len(d.records())} records so far; restarting")
                d.start()
        time.sleep(0.5)
        prod.append_late()

    def drained(timeout=900):
        end = time.time() + timeout
        while time.time() < end:
            left = [e for e in os.listdir(inbox) if not e.startswith(".")]
            if not left and len(d.records()) >= len(prod.expected):
                return True
            if not d.alive():
                return False
            time.sleep(1)
        return False

    quarter_p, quarter_h = args.photos // 4, args.hostile // 4
    wave(quarter_p, quarter_h)
    wave(quarter_p, quarter_h, kill_at=0.5)
    ok_drain = drained()
    print(f"  waves 1-2 written ({len(prod.expected)} entries); drained: {ok_drain}")
    shutil.rmtree(inbox)                      # the inbox removed and created again
    inbox.mkdir()
    print("  inbox removed and created again")
    time.sleep(2)
    wave(quarter_p, quarter_h)
    wave(args.photos - 3 * quarter_p, args.hostile - 3 * quarter_h, kill_at=0.5)
    ok_drain = drained() and ok_drain
    elapsed = time.time() - t0
    alive = d.alive()

    recs = d.records()
    by_name: dict[bytes, list[dict]] = {}
    for r in recs:
        by_name.setdefault(record_name(r), []).append(r)
    missing = [n for n in prod.expected if n not in by_name]
    dup = {n: len(v) for n, v in by_name.items() if len(v) > 1}
    unexpected = [n for n in by_name if n not in prod.expected]
    wrong_sha = [n for n, sha in prod.expected.items() if sha and n in by_name and by_name[n][0]["sha256"] != sha
                 and by_name[n][0]["status"] != "unreadable"]
    statuses: dict[str, int] = {}
    for r in recs:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    limit = args.memory_max_mb << 20
    appended = [by_name[n][0] for n in prod.expected if n.startswith(b"appended") and n in by_name]
    whole = sum(r["status"] in ("ok", "no_face") for r in appended)
    print(f"\nentries written: {len(prod.expected)} ({args.photos} photos; hostile by kind: "
          + ", ".join(f"{k} {v}" for k, v in sorted(prod.kinds.items()) if k != "photo") + ")")
    print(f"records: {len(recs)} ({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))}); "
          f"daemon starts: {d.starts}; {elapsed:.0f} s in all")
    print(f"missing: {len(missing)}; duplicated: {len(dup)}; records for names never written: {len(unexpected)}; "
          f"sha256 differing from the bytes written: {len(wrong_sha)}")
    print(f"photos closed half-written and appended later: {whole} of {len(appended)} recorded whole")
    print(f"daemon still running: {alive}; peak RSS {d.peak_rss / 2**20:.0f} MB against MemoryMax "
          f"{args.memory_max_mb} MB ({d.peak_rss / limit:.0%})")
    failures = [what for what, bad in (("missing records", missing), ("duplicates", dup), ("unexpected", unexpected),
                                       ("wrong sha256", wrong_sha)) if bad]
    if not alive:
        failures.append("the daemon is not running")
    if d.peak_rss >= limit:
        failures.append("memory over the limit")
    if not ok_drain:
        failures.append("the inbox was not drained")
    for what in failures:
        print(f"FAILED: {what}")
    for n in missing[:5]:
        print(f"  missing: {n!r}")
    for n in list(dup)[:5]:
        print(f"  duplicated: {n!r} x{dup[n]}")
    if d.alive():
        d.proc.send_signal(signal.SIGTERM)
        d.proc.wait(60)
    d._stop.set()
    if cg.path:
        cg.close()
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
