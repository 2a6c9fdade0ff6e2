"""Read an image: by content, not by extension; EXIF orientation honoured; gray, colour, alpha, 16-bit.

``read_image(path)`` returns an :class:`Image` with uint8 pixels (gray 2-D or BGR 3-D) and the file's
sha256, or raises :class:`ImageError` whose ``status`` is ``unreadable`` (missing, no permission, empty,
not an image, corrupt, truncated) or ``error`` (too large) and whose message names the problem.

Memory is bounded before anything is decoded, from the header: a JPEG over REDUCE_ABOVE pixels is decoded
at 1/2, 1/4 or 1/8 scale by libjpeg itself (the detector looks at far fewer pixels anyway; ``Image.scale``
says which, and boxes are given back in the file's own pixels), and a picture whose decoding would need more
than ``decode_budget()`` bytes (a quarter of the memory limit of the service's cgroup, i.e. the unit's
``MemoryMax``; or ``EDGEEMO_DECODE_BUDGET_MB``) is refused with an ``error`` record, never half-decoded.
"""
from __future__ import annotations

import functools
import hashlib
import os
import stat
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_PIXELS = 50_000_000
# The largest file read: a 50-megapixel photo fits even as an uncompressed 8-bit RGB PNG (150 MB); a larger file
# (or a device such as /dev/zero) is refused before it fills memory.
MAX_FILE_BYTES = 256 << 20
# OpenCV's own guard, in case a header lies about the size (read by OpenCV at its first decode).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS * 2))

import cv2  # noqa: E402

FORMATS = ("jpeg", "png", "bmp", "tiff", "webp")
# JPEGs with more pixels than this are decoded at reduced scale (16 MP: every 4K frame and most phone
# photos at full size; a 48-megapixel photo at 1/2).
REDUCE_ABOVE = 16_000_000
DEFAULT_DECODE_BUDGET = 1 << 30
_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


class ImageError(Exception):
    def __init__(self, message: str, status: str = "unreadable"):
        super().__init__(message)
        self.status = status


@dataclass
class Image:
    pixels: np.ndarray          # uint8, (H, W) gray or (H, W, 3) BGR, EXIF orientation applied
    sha256: str
    format: str
    scale: float = 1.0          # pixels per pixel of the file: 0.5 for a JPEG decoded at half size
    full_size: tuple[int, int] | None = None    # (width, height) in the file, oriented, when decoded reduced

    @property
    def width(self) -> int:
        """The picture's width in the file's own pixels (what the record says)."""
        return self.full_size[0] if self.full_size else int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return self.full_size[1] if self.full_size else int(self.pixels.shape[0])


@functools.lru_cache(maxsize=1)
def _cgroup_memory_limit() -> int | None:
    """The tightest memory limit of this process's cgroup and its parents (cgroup v2 ``memory.max``, or v1
    ``memory.limit_in_bytes``), or None when there is none."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            root, name = Path("/sys/fs/cgroup"), "memory.max"
        elif "memory" in controllers.split(","):
            root, name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"
        else:
            continue
        group = root / path.strip().lstrip("/")
        for d in (group, *group.parents):
            try:
                raw = (d / name).read_text().strip()
            except OSError:
                raw = ""
            if raw.isdigit() and int(raw) < (1 << 60):      # v1 writes "no limit" as a huge number
                limits.append(int(raw))
            if d == root:
                break
    return min(limits) if limits else None


# Pictures this process may decode at the same time (the daemon's --workers): they share the budget.
_concurrent = 1


def share_decode_budget(decoders: int) -> None:
    """Split the decode budget between ``decoders`` pictures decoded at once (threads of one process)."""
    global _concurrent
    _concurrent = max(1, int(decoders))


def decode_budget() -> int:
    """Bytes one picture's decoding may take: $EDGEEMO_DECODE_BUDGET_MB, else a quarter of the cgroup's
    memory limit (the unit's MemoryMax; the rest is the process itself, the file's bytes and the detector),
    else 1 GiB; divided between the pictures decoded at once (``share_decode_budget``)."""
    env = os.environ.get("EDGEEMO_DECODE_BUDGET_MB", "").strip()
    total = None
    if env:
        try:
            total = max(1, int(float(env) * (1 << 20)))
        except ValueError:
            pass
    if total is None:
        limit = _cgroup_memory_limit()
        total = max(32 << 20, limit // 4) if limit else DEFAULT_DECODE_BUDGET
    return max(1, total // _concurrent)


def _png_layout(data: bytes) -> tuple[int, int]:
    """(channels as decoded, bytes per sample) from a PNG's IHDR."""
    depth, colour = (data[24], data[25]) if len(data) > 25 else (8, 6)
    channels = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}.get(colour, 4)
    return channels, 2 if depth == 16 else 1


def _jpeg_components(data: bytes) -> int:
    try:
        sof = _jpeg_sof(data)
    except (struct.error, IndexError):
        sof = None
    return sof[2] if sof else 3


def decode_plan(data: bytes, fmt: str, w: int, h: int) -> tuple[int, int]:
    """(reduction, bytes) for decoding a w x h picture: the JPEG reduction (1, 2, 4 or 8) and the memory
    decoding needs at that reduction (decoded pixels, alpha copy, 8-bit result and the gray copy the
    detector makes), estimated from the header alone."""
    px = w * h
    if fmt == "jpeg":
        ch = 1 if _jpeg_components(data) == 1 else 3
        r = 1
        while r < 8 and px / (r * r) > REDUCE_ABOVE:
            r *= 2
        return r, (px // (r * r)) * (ch + 1 + (3 if r > 1 else 0))
    if fmt == "png":
        ch, bps = _png_layout(data)
    else:   # BMP 8-bit; WebP up to RGBA; TIFF may be 16-bit RGBA
        ch, bps = (4, 2) if fmt == "tiff" else (4, 1) if fmt == "webp" else (3, 1)
    if _png_single_decode(data, fmt):
        return 1, px * (ch * bps + 3 + 1)
    alpha_copy = 4 * bps if _may_have_alpha(data, fmt) else 0
    return 1, px * (ch * bps + alpha_copy + (3 if bps > 1 or alpha_copy else 0) + 1)


def _png_single_decode(data: bytes, fmt: str) -> bool:
    """A PNG with an alpha channel and no EXIF: decoded once, alpha kept (nothing to orient)."""
    return fmt == "png" and _png_layout(data)[0] == 4 and b"eXIf" not in data


TRUNCATED = "truncated"


def looks_incomplete(rec: dict) -> bool:
    """A record of a file whose end was missing: it may still be being written (or appended to)."""
    return rec.get("status") == "unreadable" and f": {TRUNCATED} " in (rec.get("error") or "")


def sniff(data: bytes) -> str | None:
    """The image format from the file's first bytes, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"BM" and len(data) >= 26:
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) from the header without decoding, where cheap; None if unknown."""
    try:
        if fmt == "png":
            return struct.unpack(">II", data[16:24]) if data[12:16] == b"IHDR" else None
        if fmt == "bmp":
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if fmt == "jpeg":
            sof = _jpeg_sof(data)
            return sof[:2] if sof else None
        if fmt == "webp":
            chunk = data[12:16]
            if chunk == b"VP8X":
                w = int.from_bytes(data[24:27], "little") + 1
                h = int.from_bytes(data[27:30], "little") + 1
                return w, h
            if chunk == b"VP8L":
                b = int.from_bytes(data[21:25], "little")
                return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
        if fmt == "tiff":
            end = "<" if data[:2] == b"II" else ">"
            ifd = struct.unpack(end + "I", data[4:8])[0]
            n = struct.unpack(end + "H", data[ifd:ifd + 2])[0]
            dims = {}
            for k in range(n):
                e = ifd + 2 + 12 * k
                tag, typ = struct.unpack(end + "HH", data[e:e + 4])
                if tag in (256, 257):
                    val = struct.unpack(end + ("H" if typ == 3 else "I"), data[e + 8:e + (10 if typ == 3 else 12)])[0]
                    dims[tag] = val
            if 256 in dims and 257 in dims:
                return dims[256], dims[257]
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _jpeg_sof(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) from a JPEG's start-of-frame marker, walking the marker segments."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        seg = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h, data[i + 9]
        i += 2 + seg
    return None


def _truncated(data: bytes, fmt: str) -> bool:
    if fmt == "jpeg":
        # Complete when an end-of-image marker follows the last start-of-scan. Searched from the end for
        # the marker, then forward for a scan after it: two short searches instead of two over the whole
        # file (a thumbnail's own markers sit in the header, before the main scan).
        eoi = data.rfind(b"\xff\xd9")
        return eoi < 0 or data.find(b"\xff\xda", 0, eoi) < 0 or data.find(b"\xff\xda", eoi) >= 0
    if fmt == "png":
        return data.rfind(b"IEND") < 0
    return False


# libjpeg reports damage it can decode past (a bit flip in the compressed data, bytes lost in the middle) as
# warnings on stderr and returns a picture anyway; OpenCV passes neither the warning nor a flag back. These
# are the warnings that mean the pixels are not the photo's: JWRN_EXTRANEOUS_DATA, JWRN_HIT_MARKER,
# JWRN_HUFF_BAD_CODE ("Corrupt JPEG data: ...") and JWRN_JPEG_EOF.
JPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file")
_stderr_lock = threading.Lock()
_stderr_sink = None


def _decoder_messages(fn):
    """Run ``fn()`` with file descriptor 2 pointed at a private file; return (result, what the C decoder
    wrote). Anything else written to stderr meanwhile (another thread's log line) is passed on."""
    global _stderr_sink
    with _stderr_lock:
        if _stderr_sink is None:
            _stderr_sink = tempfile.TemporaryFile()
        sink = _stderr_sink
        sink.seek(0)
        sink.truncate()
        try:
            saved = os.dup(2)
        except OSError:                 # no stderr at all: nothing to capture
            return fn(), ""
        try:
            os.dup2(sink.fileno(), 2)
            try:
                result = fn()
            finally:
                os.dup2(saved, 2)
        finally:
            os.close(saved)
        sink.seek(0)
        text = sink.read(65536).decode("utf-8", "replace")
    damage = [line for line in text.splitlines() if line.startswith(JPEG_DAMAGE)]
    rest = "".join(line + "\n" for line in text.splitlines() if not line.startswith(JPEG_DAMAGE))
    if rest:
        try:
            os.write(2, rest.encode())
        except OSError:
            pass
    return result, "; ".join(damage)


def _may_have_alpha(data: bytes, fmt: str) -> bool:
    """Whether a second, alpha-keeping decode is needed: PNG says so in its header (colour types 4 and 6,
    or a tRNS chunk); WebP and TIFF are always checked."""
    if fmt == "png":
        return (len(data) > 25 and data[25] in (4, 6)) or b"tRNS" in data
    return fmt in ("webp", "tiff")


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return cv2.convertScaleAbs(img, alpha=255.0 / 65535.0)     # no wider copy of a 16-bit picture
    if img.dtype in (np.float32, np.float64):
        top = 1.0 if float(np.nanmax(img)) <= 1.0 else 255.0
        return np.clip(np.nan_to_num(img) * (255.0 / top), 0, 255).astype(np.uint8)
    info = np.iinfo(img.dtype) if np.issubdtype(img.dtype, np.integer) else None
    if info is not None:
        lo, hi = float(info.min), float(info.max)
        return ((img.astype(np.float64) - lo) * 255.0 / (hi - lo)).astype(np.uint8)
    raise ImageError(f"unsupported pixel type {img.dtype}", "unreadable")


def _composite_alpha(img: np.ndarray) -> np.ndarray:
    """BGRA (any depth) over a white background -> BGR uint8, a band of rows at a time so that the float
    working copies stay small whatever the picture's size."""
    h, w = img.shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, (1 << 20) // max(w, 1))
    for y in range(0, h, step):
        band = _to_uint8(img[y:y + step])
        alpha = band[:, :, 3:4].astype(np.float32) * (1.0 / 255.0)
        out[y:y + step] = band[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
    return out


def decode(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS,
           budget: int | None = None) -> tuple[np.ndarray, str, int]:
    """Decode image bytes to uint8 gray or BGR; returns (pixels, format, JPEG reduction: 1, 2, 4 or 8).
    Raises ImageError naming the problem. ``budget``: bytes decoding may take (default ``decode_budget()``)."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    fmt = sniff(data)
    if fmt is None:
        raise ImageError(f"{name}: not a supported image (JPEG, PNG, BMP, TIFF or WebP expected; its first bytes "
                         f"match none of them)")
    size = header_size(data, fmt)
    if size and size[0] * size[1] > max_pixels:
        raise ImageError(f"{name}: image is {size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.0f} megapixels, "
                         f"over the {max_pixels / 1e6:.0f}-megapixel limit; downscale it first", "error")
    if _truncated(data, fmt):
        raise ImageError(f"{name}: {TRUNCATED} {fmt.upper()} file (the end-of-image marker is missing)")
    reduction, need = decode_plan(data, fmt, *size) if size else (1, 0)
    budget = decode_budget() if budget is None else budget
    if need > budget:
        raise ImageError(f"{name}: decoding this {size[0]}x{size[1]} {fmt.upper()} needs about {need >> 20} MiB, "
                         f"over the {budget >> 20} MiB decode budget (a quarter of the service's MemoryMax, or "
                         f"EDGEEMO_DECODE_BUDGET_MB); downscale it or give the service more memory", "error")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        # ANYCOLOR|ANYDEPTH keeps gray and 16-bit and applies EXIF orientation (UNCHANGED would not).
        flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
        if fmt == "jpeg" and reduction > 1:
            flags = _REDUCED[reduction]     # libjpeg decodes at 1/2, 1/4 or 1/8 scale: the memory drops with it
        if fmt == "jpeg":
            img, damage = _decoder_messages(lambda: cv2.imdecode(buf, flags))
            if damage:
                raise ImageError(f"{name}: corrupt JPEG data, the picture is damaged (libjpeg: {damage}); "
                                 f"not classified")
        elif _png_single_decode(data, fmt):
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)      # alpha for sure, no orientation: one decode
        else:
            img = cv2.imdecode(buf, flags)
            if img is not None and _may_have_alpha(data, fmt):
                full = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
                if full is not None and full.ndim == 3 and full.shape[2] == 4 and full.shape[:2] == img.shape[:2]:
                    img = None
                    img = _composite_alpha(full)
                del full
    except cv2.error as exc:
        raise ImageError(f"{name}: corrupt {fmt.upper()} data ({exc.err or exc})") from None
    if img is None or img.size == 0:
        raise ImageError(f"{name}: corrupt {fmt.upper()} data (the decoder could not read it)")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise ImageError(f"{name}: image is {img.shape[1]}x{img.shape[0]}, over the "
                         f"{max_pixels / 1e6:.0f}-megapixel limit; downscale it first", "error")
    img = _to_uint8(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = _composite_alpha(img)
    return np.ascontiguousarray(img), fmt, reduction


def read_bytes(path: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file. A FIFO, socket or device is refused, not read (it could block forever or
    never end), and so is a file over ``max_bytes`` (MAX_FILE_BYTES)."""
    return read_bytes_and_identity(path, max_bytes)[0]


def read_bytes_and_identity(path: str | os.PathLike, max_bytes: int | None = None, follow: bool = True):
    """(bytes, identity) of a regular file, both from one open descriptor: identity is (device, inode, size,
    mtime in ns) of what was read, so a caller can tell later whether the name still points at these bytes.
    ``follow=False``: a symbolic link is refused rather than followed."""
    p = Path(path)
    limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except PermissionError:
        raise ImageError(f"{p}: permission denied (check the file's owner and mode)") from None
    except OSError as exc:
        raise ImageError(f"{p}: cannot read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(f"{p}: is a folder, not an image (use --recursive to classify a folder)")
        if not stat.S_ISREG(st.st_mode):
            kind = ("FIFO" if stat.S_ISFIFO(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode)
                    else "device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "special file")
            raise ImageError(f"{p}: not a regular file (a {kind}); only image files can be classified")
        if st.st_size > limit:      # said by its size: not read at all (a sparse file costs nothing)
            raise ImageError(f"{p}: file is {st.st_size >> 20} MiB, over {limit >> 20} MiB, more than any image "
                             f"within the {MAX_PIXELS / 1e6:.0f}-megapixel limit needs; not read", "error")
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise ImageError(f"{p}: cannot read ({exc.strerror or exc})") from None
        st = os.fstat(fd)           # after the read: a write that came meanwhile shows in size or mtime
    if len(data) > limit:
        raise ImageError(f"{p}: file is over {limit >> 20} MiB, more than any image within the "
                         f"{MAX_PIXELS / 1e6:.0f}-megapixel limit needs; not read", "error")
    return data, identity(st)


def identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image:
    return from_bytes(read_bytes(path), str(path), max_pixels)


def from_bytes(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> Image:
    digest = hashlib.sha256(data).hexdigest()
    try:
        pixels, fmt, reduction = decode(data, name, max_pixels)
    except ImageError as exc:
        exc.sha256 = digest
        raise
    if reduction == 1:
        return Image(pixels, digest, fmt)
    w, h = header_size(data, fmt)
    if abs(pixels.shape[1] * reduction - w) > reduction:     # turned by its EXIF orientation
        w, h = h, w
    return Image(pixels, digest, fmt, 1.0 / reduction, (w, h))


def from_array(array: np.ndarray) -> Image:
    """Wrap an in-memory picture (uint8/uint16/float, gray, BGR or BGRA) as an Image."""
    a = np.asarray(array)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)) or a.size == 0:
        raise ImageError(f"array of shape {a.shape} is not an image (expected HxW, HxWx3 or HxWx4)", "error")
    pixels = _to_uint8(a)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = _composite_alpha(pixels)
    elif pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    digest = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
    return Image(np.ascontiguousarray(pixels), digest, "array")


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 gray from uint8 gray (2-D or one channel) or BGR."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def to_bgr(image: np.ndarray) -> np.ndarray:
    """uint8 BGR from uint8 gray (2-D or one channel) or BGR."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    return image
