"""Every bad image gets an ImageError naming the file and the problem; odd formats are converted."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facetrail.vision.errors import ImageError
from facetrail.vision.image import as_bgr, load_image
from facetrail.vision.samples import sample_image


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims the given size (pixels absent): a decompression-bomb stand-in."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file") as info:
        load_image(tmp_path / "absent.jpg")
    assert "absent.jpg" in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(path)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is a text file, not a photo\n")
    with pytest.raises(ImageError, match="not an image"):
        load_image(path)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = sample_image("yaoming.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_zero_size_image() -> None:
    with pytest.raises(ImageError):
        load_image(_png_with_size(0, 10), name="zero.png")


def test_absurdly_large_image_is_refused_before_decoding() -> None:
    with pytest.raises(ImageError, match="over the limit"):
        load_image(_png_with_size(100_000, 100_000), name="huge.png")
    with pytest.raises(ImageError, match="9000x9000 = 81,000,000 pixels, over the limit"):
        load_image(_png_with_size(9000, 9000), name="big.png")


def test_grey_and_sixteen_bit_and_alpha_become_bgr() -> None:
    grey = Image.fromarray(np.full((20, 30), 77, np.uint8))
    deep = Image.fromarray(np.full((20, 30), 40000, np.uint16))
    rgba = Image.fromarray(np.dstack([np.full((20, 30), v, np.uint8) for v in (10, 20, 30, 255)]))
    for image in (grey, deep, rgba):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        bgr = load_image(buffer.getvalue())
        assert bgr.shape == (20, 30, 3) and bgr.dtype == np.uint8
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    assert load_image(buffer.getvalue())[0, 0].tolist() == [30, 20, 10]


def test_exif_orientation_is_applied() -> None:
    image = Image.fromarray(np.zeros((10, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert load_image(buffer.getvalue()).shape == (40, 10, 3)


def test_as_bgr_rejects_nonsense() -> None:
    with pytest.raises(ImageError, match="not an image array"):
        as_bgr(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ImageError, match="channel"):
        as_bgr(np.zeros((5, 5, 2), np.uint8))
    assert as_bgr(np.ones((4, 4), np.float32)).max() == 255
