"""Reading images by content: formats, EXIF orientation, depth and alpha, and every kind of bad file."""
from __future__ import annotations

import os
import struct

import cv2
import numpy as np
import pytest

from edgeemo import imageio
from edgeemo.imageio import ImageError


def encode(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 EXIF segment holding only the Orientation tag."""
    tiff = (b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0))
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@pytest.fixture
def picture():
    img = np.zeros((60, 100, 3), np.uint8)
    img[:, :50] = (255, 255, 255)          # left half white
    img[:10, :, 2] = 200                   # a red band on top
    return img


@pytest.mark.parametrize("ext,fmt", [(".jpg", "jpeg"), (".png", "png"), (".bmp", "bmp"), (".tiff", "tiff"),
                                     (".webp", "webp")])
def test_formats_read_by_content_not_extension(tmp_path, picture, ext, fmt):
    p = tmp_path / "photo.dat"           # wrong extension on purpose
    p.write_bytes(encode(ext, picture))
    img = imageio.read_image(p)
    assert img.format == fmt
    assert (img.width, img.height) == (100, 60)
    assert img.pixels.dtype == np.uint8 and img.pixels.shape == (60, 100, 3)
    assert imageio.header_size(p.read_bytes(), fmt) == (100, 60)


def test_exif_orientation_is_applied(tmp_path, picture):
    p = tmp_path / "rotated.jpg"
    p.write_bytes(with_exif_orientation(encode(".jpg", picture), 6))   # 6 = rotate 90 degrees clockwise
    img = imageio.read_image(p)
    assert (img.width, img.height) == (60, 100)
    # After a clockwise turn the white left half is on top.
    assert img.pixels[:40].mean() > 200 and img.pixels[60:].mean() < 60


def test_gray_16bit_and_alpha(tmp_path):
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (32, 1))
    p = tmp_path / "gray.png"
    p.write_bytes(encode(".png", gray))
    assert imageio.read_image(p).pixels.shape == (32, 64)

    deep = (np.tile(np.arange(64, dtype=np.uint16), (32, 1)) * 1000)
    p16 = tmp_path / "deep.png"
    p16.write_bytes(encode(".png", deep))
    px = imageio.read_image(p16).pixels
    assert px.dtype == np.uint8 and px.shape == (32, 64)
    assert px[0, 63] == 63000 * 255 // 65535 and px[0, 0] == 0

    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:, :10] = (0, 0, 0, 255)          # opaque black left, transparent right
    pa = tmp_path / "alpha.png"
    pa.write_bytes(encode(".png", rgba))
    px = imageio.read_image(pa).pixels
    assert px.shape == (20, 20, 3)
    assert px[:, :10].max() == 0 and px[:, 10:].min() == 255     # transparent over white


def test_bad_files_raise_errors_naming_the_problem(tmp_path, picture):
    jpeg = encode(".jpg", picture)
    cases = {
        "empty.jpg": (b"", "empty file"),
        "text.jpg": (b"hello, not an image\n", "not a supported image"),
        "half.jpg": (jpeg[: len(jpeg) // 2], "truncated JPEG"),
        "garbage.png": (b"\x89PNG\r\n\x1a\n" + os.urandom(300) + b"IEND", "corrupt PNG"),
    }
    for name, (data, message) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(ImageError) as err:
            imageio.read_image(p)
        assert message in str(err.value) and name in str(err.value)
        assert err.value.status == "unreadable"
    with pytest.raises(ImageError, match="no such file"):
        imageio.read_image(tmp_path / "missing.jpg")


def test_unreadable_permission(tmp_path, picture, monkeypatch):
    p = tmp_path / "secret.jpg"
    p.write_bytes(encode(".jpg", picture))
    p.chmod(0)
    if os.geteuid() == 0:
        # root reads any file whatever its mode: make the read fail as it does for other users.
        real_open = os.open

        def refuse(path, *args, **kw):
            if os.fspath(path) == os.fspath(p):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_open(path, *args, **kw)
        monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(ImageError, match="permission denied") as err:
        imageio.read_image(p)
    assert "secret.jpg" in str(err.value) and err.value.status == "unreadable"


def test_over_50_megapixels_is_refused_from_the_header(tmp_path):
    # A valid PNG header claiming 10000 x 6000 pixels: refused before any decoding.
    big = cv2.imencode(".png", np.zeros((2, 2), np.uint8))[1].tobytes()
    big = big[:16] + struct.pack(">II", 10000, 6000) + big[24:]
    p = tmp_path / "huge.png"
    p.write_bytes(big)
    with pytest.raises(ImageError, match="60 megapixels") as err:
        imageio.read_image(p)
    assert err.value.status == "error"
    # The limit is real, not only a header check: a small limit refuses a decoded image too.
    q = tmp_path / "small.png"
    q.write_bytes(encode(".png", np.zeros((100, 100), np.uint8)))
    with pytest.raises(ImageError, match="megapixel limit"):
        imageio.read_image(q, max_pixels=5000)


def test_from_array():
    img = imageio.from_array(np.zeros((10, 12, 4), np.uint8))
    assert img.pixels.shape == (10, 12, 3) and img.format == "array"
    with pytest.raises(ImageError):
        imageio.from_array(np.zeros((10,), np.uint8))


def test_truncation_seen_past_an_embedded_thumbnail(tmp_path, picture):
    """A camera JPEG carries a complete thumbnail JPEG in its header: the thumbnail's end marker must not
    make a cut-off main picture look complete, and bytes after the end marker are no truncation."""
    main = encode(".jpg", picture)
    thumb = encode(".jpg", cv2.resize(picture, (20, 12)))
    payload = b"Exif\x00\x00" + thumb
    with_thumb = main[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + main[2:]
    whole, cut, padded = tmp_path / "whole.jpg", tmp_path / "cut.jpg", tmp_path / "padded.jpg"
    whole.write_bytes(with_thumb)
    cut.write_bytes(with_thumb[: len(with_thumb) - len(main) // 3])
    padded.write_bytes(main + b"\x00" * 64)
    assert imageio.read_image(whole).pixels.shape == (60, 100, 3)
    assert imageio.read_image(padded).pixels.shape == (60, 100, 3)
    with pytest.raises(ImageError, match="truncated JPEG"):
        imageio.read_image(cut)
