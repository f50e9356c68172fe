"""Hostile files: headers that lie about their size, bombs above a user-set limit, symlink loops."""

from __future__ import annotations

import binascii
import io
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from dupflow.encode.encoding import encode_refs
from dupflow.encode.settings import EncodeSettings
from dupflow.errors import ErrorKind, FileFailure
from dupflow.io import decoding
from dupflow.io.decoding import decode_image
from dupflow.io.listing import ImageRef, ListingStats, list_dataset
from dupflow.io.sources import DatasetSource
from dupflow.store.encodings import EncodingsStore
from imagegen import encode, natural, write

# The subprocess's address space: far below the 40 GB a 100000x100000 RGB decode would allocate, far above
# what an encode run needs; it also keeps a regression from swapping the test machine to death.
_ADDRESS_SPACE = 24 << 30


def _chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC-32 of type and body."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", binascii.crc32(kind + body) & 0xFFFFFFFF)


def lying_png(width: int, height: int) -> bytes:
    """A valid 8-bit RGB PNG header declaring width x height, followed by one short row of pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" + b"\x80" * 48)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_ADDRESS_SPACE, _ADDRESS_SPACE))


def _dupflow(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it, in a bounded address space."""
    exe = Path(sys.executable).with_name("dupflow")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300, preexec_fn=_limited)


def _decode(data: bytes, max_pixels: int) -> decoding.DecodedImage:
    return decode_image(data, mode="RGB", decode_size=64, max_pixels=max_pixels)


def test_a_lying_png_is_recorded_and_the_run_completes(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    for i in range(3):
        write(data / f"good_{i}.jpg", natural(i), quality=90)
    liar = lying_png(100_000, 100_000)
    assert len(liar) < 100
    (data / "liar.png").write_bytes(liar)
    args = ("encode", "-d", f"d={data}", "--store", str(store), "--max-pixels", "20000000000", "-q", "-j", "1")
    first = _dupflow(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    rows = {Path(r["uri"]).name: r for r in EncodingsStore(str(store)).read().to_pylist()}
    assert all(rows[f"good_{i}.jpg"]["error"] is None and rows[f"good_{i}.jpg"]["phash"] is not None for i in range(3))
    assert rows["liar.png"]["error"] == "truncated", rows["liar.png"]
    message = rows["liar.png"]["error_message"]
    assert "100000x100000" in message
    assert "can hold at most" in message
    info = _dupflow("info", "--store", str(store))
    assert info.returncode == 0, info.stdout
    assert "complete" in info.stdout.split("state", 1)[1].splitlines()[0], info.stdout
    again = _dupflow(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 to decode, 4 unchanged" in again.stdout + again.stderr


def test_the_payload_guard_names_declared_and_possible_pixels() -> None:
    with pytest.raises(FileFailure) as info:
        _decode(lying_png(100_000, 100_000), max_pixels=10**11)
    assert info.value.kind is ErrorKind.TRUNCATED
    assert "10,000,000,000 pixels" in info.value.message
    assert "replace or remove" in info.value.message


@pytest.mark.parametrize(("mode", "side", "colour"), [("1", 4000, 1), ("L", 3000, 255), ("RGB", 2000, (255, 255, 255))])
def test_genuine_white_pngs_pass_the_payload_guard(mode: str, side: int, colour: object) -> None:
    """The best-compressing genuine PNGs (one colour, zlib level 9) stay well inside deflate's ceiling."""
    buf = io.BytesIO()
    Image.new(mode, (side, side), colour).save(buf, "PNG", compress_level=9)  # type: ignore[arg-type]
    assert side * side < len(buf.getvalue()) * decoding._MAX_PIXELS_PER_BYTE["PNG"][0] / 1.5
    decoded = _decode(buf.getvalue(), max_pixels=10**9)
    assert (decoded.width, decoded.height) == (side, side)


def test_a_decode_larger_than_available_memory_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoding, "_MEMORY_CHECK_FLOOR", 0)
    monkeypatch.setattr(decoding, "_available_memory", lambda: 1 << 20)
    with pytest.raises(FileFailure) as info:
        _decode(encode(natural(1, 600, 400), "PNG"), max_pixels=10**9)
    assert info.value.kind is ErrorKind.DECOMPRESSION_BOMB
    assert "600x400" in info.value.message
    assert "but 1 MiB is available" in info.value.message
    assert "--workers" in info.value.message
    monkeypatch.setattr(decoding, "_available_memory", lambda: 1 << 30)
    assert _decode(encode(natural(1, 600, 400), "PNG"), max_pixels=10**9).width == 600


def test_a_progressive_jpeg_counts_its_full_size_coefficients() -> None:
    picture = natural(5, 1600, 1200)
    baseline, progressive = (Image.open(io.BytesIO(encode(picture, "JPEG", progressive=p))) for p in (False, True))
    extra = decoding._decode_bytes(progressive, 1600, 1200, 8) - decoding._decode_bytes(baseline, 1600, 1200, 8)
    assert extra == 1600 * 1200 * 3 * 2


def test_running_out_of_memory_while_decoding_fails_only_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(_self: ImageFile.ImageFile) -> None:
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_memory)
    with pytest.raises(FileFailure) as info:
        _decode(encode(natural(2, 300, 200), "PNG"), max_pixels=10**9)
    assert info.value.kind is ErrorKind.DECOMPRESSION_BOMB
    assert "ran out of memory" in info.value.message


def test_the_bomb_message_names_the_limit_the_user_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # encode_refs sets it; restore after
    path = tmp_path / "big.png"
    path.write_bytes(encode(natural(3, 600, 400), "PNG"))  # 240,000 pixels: over twice the limit below
    ref = ImageRef(uri=str(path), dataset="d", rel_path="big.png", size=path.stat().st_size, mtime_ns=1_000, etag=None)
    table, _ = encode_refs([ref], EncodeSettings(max_pixels=100_000))
    (row,) = table.to_pylist()
    assert row["error"] == "decompression_bomb"
    assert "limit of 100,000" in row["error_message"]
    assert "--max-pixels" in row["error_message"]
    assert "200000" not in row["error_message"]
    assert "200,000" not in row["error_message"]


def test_our_limit_applies_even_where_pillows_is_lower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # as a caller that never ran configure_pillow
    assert _decode(encode(natural(4, 300, 200), "PNG"), max_pixels=10**6).width == 300


def test_symlink_loops_are_counted_as_loops_not_as_leaving_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    write(root / "real.jpg", natural(1, 32, 32))
    write(outside / "secret.jpg", natural(2, 32, 32))
    os.symlink(root / "b.jpg", root / "a.jpg")  # a -> b -> a
    os.symlink(root / "a.jpg", root / "b.jpg")
    os.symlink("self.png", root / "self.png")  # a link to itself
    (root / "sub").mkdir()
    os.symlink("..", root / "sub" / "up")  # a folder link to its own parent
    os.symlink(tmp_path, root / "sub" / "way_up.jpg")  # to an ancestor above the root, named like an image
    os.symlink(outside / "secret.jpg", root / "escape.jpg")  # a real escape, for contrast
    stats = ListingStats()
    listed = sorted(r.rel_path for r in list_dataset(DatasetSource("d", str(root)), stats=stats))
    assert listed == ["real.jpg"]
    assert (stats.skipped_loops, stats.skipped_links, stats.skipped_extension) == (5, 1, 0)
    merged = ListingStats.merged([stats, stats])
    assert merged.skipped_loops == 10
