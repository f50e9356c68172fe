"""Decoding: every bad-file kind becomes an error row, odd modes and EXIF orientation are handled."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dupflow.encode.settings import EncodeSettings
from dupflow.errors import ErrorKind, FileFailure
from dupflow.io.decoding import decode_image
from dupflow.io.sources import DatasetSource
from dupflow.store.encode_job import run_encode
from dupflow.store.encodings import EncodingsStore
from imagegen import encode, natural, write


def _decode(data: bytes, max_pixels: int = 10**8):  # type: ignore[no-untyped-def]
    return decode_image(data, mode="RGB", decode_size=64, max_pixels=max_pixels)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but carries a tiny payload (a bomb)."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", ErrorKind.EMPTY),
        (b"this is a text file, not a JPEG" * 10, ErrorKind.NOT_AN_IMAGE),
        (encode(natural(1, 400, 300), "JPEG")[:2000], ErrorKind.TRUNCATED),
        (_png_header_only(60_000, 60_000), ErrorKind.DECOMPRESSION_BOMB),
    ],
    ids=["empty", "not-an-image", "truncated", "bomb"],
)
def test_bad_bytes_raise_their_kind(data: bytes, kind: ErrorKind) -> None:
    with pytest.raises(FileFailure) as info:
        _decode(data)
    assert info.value.kind is kind
    assert info.value.message


def test_pixel_limit_is_the_users_to_raise() -> None:
    data = encode(natural(2, 300, 200), "PNG")
    with pytest.raises(FileFailure) as info:
        _decode(data, max_pixels=300 * 200 - 1)
    assert info.value.kind is ErrorKind.DECOMPRESSION_BOMB
    assert "--max-pixels" in info.value.message
    assert _decode(data, max_pixels=300 * 200).width == 300


def test_corrupt_pixel_data_is_recorded() -> None:
    good = bytearray(encode(natural(4, 400, 300), "PNG"))
    idat = good.index(b"IDAT")
    good[idat + 20 : idat + 400] = b"\xff" * 380  # garbage inside the compressed stream
    with pytest.raises(FileFailure) as info:
        _decode(bytes(good))
    assert info.value.kind in (ErrorKind.CORRUPT, ErrorKind.TRUNCATED)


def test_exif_orientation_is_applied() -> None:
    img = natural(5, 400, 200)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    stored = img.transpose(Image.Transpose.ROTATE_90)  # what a camera writes for orientation 6
    decoded = _decode(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    upright = _decode(encode(img, "JPEG", quality=95))
    assert (decoded.width, decoded.height) == (400, 200)
    diff = np.abs(np.asarray(decoded.image, np.int16) - np.asarray(upright.image, np.int16)).mean()
    assert diff < 6


@pytest.mark.parametrize("mode", ["P", "P+transparency", "RGBA", "LA", "I;16", "I", "F", "1", "CMYK", "L"])
def test_every_mode_normalises_to_8_bit(mode: str) -> None:
    base = natural(6, 120, 90)
    if mode in ("I;16", "I"):
        arr = (np.asarray(base.convert("L"), np.uint16) * 257).astype(np.uint16 if mode == "I;16" else np.int32)
        img = Image.fromarray(arr).convert(mode) if mode == "I" else Image.fromarray(arr)
    elif mode == "F":
        img = Image.fromarray(np.asarray(base.convert("L"), np.float32) / 255.0, "F")
    elif mode == "P+transparency":
        img = base.convert("P")
        img.info["transparency"] = 0
    else:
        img = base.convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "F", "I") else "PNG"
    decoded = _decode(encode(img, fmt, **({"transparency": 0} if mode == "P+transparency" else {})))
    assert decoded.image.mode == "RGB"
    assert decoded.mode == mode.split("+")[0]
    gray = np.asarray(decoded.image.convert("L"), np.float64)
    if mode != "1":  # 16-bit and float are scaled, not clipped to white or black
        assert 20 < gray.mean() < 235
        assert gray.std() > 5


def test_transparent_pixels_are_composited_on_white() -> None:
    img = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    decoded = _decode(encode(img, "PNG"))
    assert np.asarray(decoded.image).min() == 255


def test_a_run_over_every_bad_kind_completes_with_error_rows(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write(data / "good.jpg", natural(1))
    (data / "empty.jpg").write_bytes(b"")
    (data / "text.png").write_bytes(b"hello, not an image")
    (data / "truncated.jpg").write_bytes(encode(natural(2, 400, 300), "JPEG")[:1500])
    (data / "bomb.png").write_bytes(_png_header_only(50_000, 50_000))
    locked = data / "locked.jpg"
    write(locked, natural(3))
    os.chmod(locked, 0)
    try:
        report = run_encode([DatasetSource("d", str(data))], str(tmp_path / "store"), EncodeSettings(max_pixels=10**8))
    finally:
        os.chmod(locked, 0o644)
    rows = {Path(r["uri"]).name: r for r in EncodingsStore(str(tmp_path / "store")).read().to_pylist()}
    expected = {"empty.jpg": "empty", "text.png": "not_an_image", "truncated.jpg": "truncated",
                "bomb.png": "decompression_bomb", "good.jpg": None}
    if os.geteuid() != 0:  # root reads any file: permission errors cannot be produced as root
        expected["locked.jpg"] = "unreadable"
    for name, kind in expected.items():
        assert rows[name]["error"] == kind, rows[name]
        assert (rows[name]["error_message"] is None) == (kind is None)
    assert rows["good.jpg"]["phash"] is not None
    assert rows["empty.jpg"]["phash"] is None
    assert report.listed == 6
    assert report.errors["empty"] == 1
