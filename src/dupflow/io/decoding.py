"""Decode an image once, at reduced scale, into the normalised picture every encoder reads.

JPEGs (and MPO, a JPEG whose first picture is read) use libjpeg's reduced-scale DCT (Pillow's `draft`);
other formats decode whole and are box-reduced by the same factor, so a JPEG and its lossless copy give
comparable pictures. EXIF orientation is applied; palette, alpha, 16-bit, CMYK and other modes are
normalised to 8-bit L/RGB. The format is the one the bytes announce, whatever the file's name says.
HEIC/HEIF decodes through pillow-heif, registered with Pillow the first time such a file is met, and
AVIF through Pillow's own codec (11.3 and later); where one is missing, the file fails with what to install.
"""

from __future__ import annotations

import functools
import importlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError, features

from dupflow.errors import ErrorKind, FileFailure
from dupflow.io.formats import heif_codec

__all__ = [
    "DecodedImage",
    "configure_pillow",
    "decode_image",
    "reduction_factor",
]

Mode = Literal["L", "RGB"]

# What compressed bytes can expand to, per format, as a hard ceiling of the format itself (so no genuine
# file exceeds it). PNG: zlib/deflate expands at most 1032:1 (a 258-byte match in 2 bits), and a pixel
# takes at least 1 bit, so N bytes hold at most N * 1032 * 8 pixels; a 1-bit all-white PNG saved at
# compress_level=9 reaches about half of that. Formats without such a ceiling are left out: JPEG
# (arithmetic coding spends under a bit per 8x8 block), WebP lossless (a one-colour image costs 0 bits
# a pixel), BMP RLE and GIF (an end-of-bitmap code or a small frame on a large screen leave the rest
# blank), TIFF (any codec); for them only the memory guard applies.
# PPM (every netpbm variant, as Pillow names them): PBM's packed rows spend at least 1 bit a pixel, and
# every other variant more.
_MAX_PIXELS_PER_BYTE = {
    "PNG": (1032 * 8, "deflate expands at most 1032:1 and a pixel takes at least 1 bit"),
    "PPM": (8, "a netpbm pixel takes at least 1 bit"),
}
# Formats that decode through libjpeg, at reduced scale with `draft`.
_DCT_FORMATS = frozenset({"JPEG", "MPO"})
# Rough peak bytes per decoded pixel: Pillow's storage (1 to 4 bytes) plus the copies `_normalise`
# and the final `convert` make. 16-bit and float go through float64 arrays; alpha and palette images
# through RGBA composites.
_PEAK_BYTES_HIGH_DEPTH = 32
_PEAK_BYTES_ALPHA = 20
_PEAK_BYTES = 8
_HIGH_DEPTH = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_ALPHA_OR_PALETTE = frozenset({"P", "PA", "RGBA", "LA", "RGBa", "La"})
# Below this estimate the available memory is not looked up (the look-up reads /proc for every file).
_MEMORY_CHECK_FLOOR = 256 << 20
_PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")

# EXIF orientations that swap width and height.
_SWAPS_AXES = {5, 6, 7, 8}
_BACKGROUND = 255  # transparent pixels are composited on white
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class DecodedImage:
    """The normalised, reduced picture plus facts about the original file."""

    image: Image.Image  # mode "L" or "RGB", orientation applied, reduced by `scale`
    width: int  # original width after orientation
    height: int
    format: str
    mode: str  # original mode
    scale: int  # reduction factor applied (1, 2, 4 or 8)


def configure_pillow(max_pixels: int) -> None:
    """Let Pillow open images up to our own limit; `decode_image` enforces it with a clear error."""
    Image.MAX_IMAGE_PIXELS = max(max_pixels, 1)
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def reduction_factor(width: int, height: int, decode_size: int) -> int:
    """Largest of 1, 2, 4, 8 that keeps both sides at least `decode_size` (what libjpeg can do)."""
    fit = min(width // max(decode_size, 1), height // max(decode_size, 1))
    for factor in (8, 4, 2):
        if fit >= factor:
            return factor
    return 1


def decode_image(data: bytes, *, mode: Mode, decode_size: int, max_pixels: int, draft: bool = True) -> DecodedImage:
    """Decode `data` or raise FileFailure with the error kind; `draft=False` forces a full decode."""
    if not data:
        raise FileFailure(ErrorKind.EMPTY, "the file is empty (0 bytes)")
    _let_pillow_open(max_pixels)
    im = _open(data, max_pixels)
    width, height = im.size
    _check_pixels(width, height, max_pixels)
    fmt, original_mode = im.format or "unknown", im.mode
    _check_payload(width, height, fmt, len(data))
    factor = reduction_factor(width, height, decode_size) if draft else 1
    _check_memory(im, width, height, factor)
    picture, orientation = _decode_pixels(im, mode, fmt, factor, (width, height), max_pixels)
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return DecodedImage(picture, width, height, fmt, original_mode, factor)


def _let_pillow_open(max_pixels: int) -> None:
    """Raise Pillow's own limit to at least ours (never lower it), so ours is the one that applies; callers
    that skipped `configure_pillow` (thumbnails) would otherwise get Pillow's 89.5 M-pixel default."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        configure_pillow(max_pixels)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open the file's header (pixels are not read yet), or raise FileFailure with the error kind. Pillow
    recognises the format by content; nothing here looks at the file's name."""
    _need_codec(heif_codec(data))
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise FileFailure(ErrorKind.NOT_AN_IMAGE, "no image format recognises this file's bytes") from None
    except Image.DecompressionBombError as exc:
        raise _pillow_bomb(exc, max_pixels) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise FileFailure(ErrorKind.CORRUPT, f"the header cannot be parsed: {exc}") from None


def _need_codec(container: str | None) -> None:
    """Make sure the codec an ISO-BMFF `container` ("AVIF", "HEIF" or None) needs is there, or raise
    FileFailure saying what to install. MISSING_CODEC: the next run retries the file, once it can decode it."""
    if container == "AVIF" and not features.check("avif"):
        raise FileFailure(ErrorKind.MISSING_CODEC, "AVIF needs Pillow 11.3 or later with its AVIF codec (the PyPI "
                          "wheels have it): pip install -U 'pillow>=11.3'")
    if container == "HEIF" and not _heif_opener():
        raise FileFailure(ErrorKind.MISSING_CODEC, "HEIC needs pillow-heif: pip install 'dupflow[heif]'")


@functools.cache
def _heif_opener() -> bool:
    """Register pillow-heif's HEIF opener with Pillow, once per process and only when a HEIF file is met (it
    loads libheif); False where pillow-heif is not installed."""
    try:
        pillow_heif = importlib.import_module("pillow_heif")
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse a picture whose declared size is above the pixel limit, before decoding it."""
    if width * height > max_pixels:
        raise FileFailure(
            ErrorKind.DECOMPRESSION_BOMB,
            f"declares {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,}; "
            "raise --max-pixels if the image is genuine",
        )


def _pillow_bomb(exc: Image.DecompressionBombError, max_pixels: int) -> FileFailure:
    """Pillow's bomb error restated with our limit: Pillow names its own (twice `MAX_IMAGE_PIXELS`), which
    is not the number the user set."""
    found = _PILLOW_PIXELS.search(str(exc))
    declared = f"{int(found.group(1)):,} pixels" if found else "more pixels than twice the limit"
    return FileFailure(
        ErrorKind.DECOMPRESSION_BOMB,
        f"declares {declared}, above the limit of {max_pixels:,}; raise --max-pixels if the image is genuine",
    )


def _check_payload(width: int, height: int, fmt: str, size: int) -> None:
    """Refuse a picture whose declared size its bytes cannot hold (see `_MAX_PIXELS_PER_BYTE`): its header
    lies or its pixel data is missing, and decoding it would only allocate the declared size for nothing."""
    per_byte, why = _MAX_PIXELS_PER_BYTE.get(fmt, (0, ""))
    if not per_byte or width * height <= size * per_byte:
        return
    raise FileFailure(
        ErrorKind.TRUNCATED,
        f"declares {width}x{height} = {width * height:,} pixels, but {size:,} bytes of {fmt} can hold at most "
        f"{size * per_byte:,} ({why}): the pixel data is missing or the header lies; replace or remove the file",
    )


def _check_memory(im: Image.Image, width: int, height: int, factor: int) -> None:
    """Refuse a picture whose decode would need more memory than is available now (a DECOMPRESSION_BOMB,
    which the next run retries); `factor` is the reduction asked of the decode."""
    needed = _decode_bytes(im, width, height, factor)
    mode = im.mode
    if needed < _MEMORY_CHECK_FLOOR:
        return
    available = _available_memory()
    if available is None or needed <= available:
        return
    raise FileFailure(
        ErrorKind.DECOMPRESSION_BOMB,
        f"declares {width}x{height} = {width * height:,} pixels ({mode}); decoding needs about {_gib(needed)} "
        f"but {_gib(available)} is available: run with fewer --workers or on a machine with more memory, "
        "or lower --max-pixels to skip such images",
    )


def _decode_bytes(im: Image.Image, width: int, height: int, factor: int) -> int:
    """Rough peak bytes of decoding `im`: only JPEG decodes at reduced scale, but a progressive JPEG keeps
    every DCT coefficient of the full image (2 bytes each, one per pixel and component) while decoding."""
    if im.format not in _DCT_FORMATS:
        return width * height * _peak_bytes_per_pixel(im.mode)
    pixels = -(-width // factor) * -(-height // factor)
    coefficients = width * height * len(im.getbands()) * 2 if im.info.get("progressive") else 0
    return pixels * _peak_bytes_per_pixel(im.mode) + coefficients


def _peak_bytes_per_pixel(mode: str) -> int:
    """Rough peak memory per decoded pixel of an image in Pillow mode `mode`, normalisation included."""
    if mode in _HIGH_DEPTH:
        return _PEAK_BYTES_HIGH_DEPTH
    return _PEAK_BYTES_ALPHA if mode in _ALPHA_OR_PALETTE else _PEAK_BYTES


def _gib(n: int) -> str:
    """A byte count for a message: GiB, or MiB below one GiB."""
    return f"{n / (1 << 30):,.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):,.0f} MiB"


def _available_memory() -> int | None:
    """Bytes this process can allocate now: the host's available memory, capped by a cgroup (container)
    limit; None where neither can be read."""
    found = [n for n in (_host_available(), _cgroup_headroom()) if n is not None]
    return min(found) if found else None


def _host_available() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else free pages from sysconf; None where neither exists."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _cgroup_headroom() -> int | None:
    """What the cgroup memory limit leaves (v2, then v1); None without a limit or where it cannot be read."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            with open(limit_file, encoding="ascii") as fh:
                limit = fh.read().strip()
            with open(usage_file, encoding="ascii") as fh:
                usage = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # v1 reports "no limit" as a huge number, v2 as "max"
            return max(int(limit) - usage, 0)
        return None
    return None


def _decode_pixels(
    im: Image.Image, mode: Mode, fmt: str, factor: int, size: tuple[int, int], max_pixels: int
) -> tuple[Image.Image, int]:
    """Load, normalise, reduce by `factor` and orient the pixels, returning them and the EXIF orientation;
    `size` is the declared size, read before `draft` changes `im.size`."""
    width, height = size
    try:
        if factor > 1 and fmt in _DCT_FORMATS:
            im.draft(mode, (width // factor, height // factor))
        im.load()
        orientation = _orientation(im)  # after load: PNG reads EXIF by loading, which must fail loudly
        picture = _normalise(im)
        left = factor // max(1, width // picture.size[0])  # what draft did not reduce
        if left > 1:
            picture = picture.reduce(left)
        picture = picture.convert(mode) if picture.mode != mode else picture
        if orientation != 1:
            picture = _orient(picture, orientation)
    except Image.DecompressionBombError as exc:  # a later frame (GIF) or tile declares more than the header did
        raise _pillow_bomb(exc, max_pixels) from None
    except MemoryError:  # the last resort behind `_check_memory`: other processes took the memory, or a ulimit
        raise FileFailure(
            ErrorKind.DECOMPRESSION_BOMB,
            f"ran out of memory decoding {width}x{height} = {width * height:,} pixels: run with fewer --workers "
            "or on a machine with more memory, or lower --max-pixels to skip such images",
        ) from None
    except (OSError, SyntaxError, ValueError, IndexError, EOFError, TypeError) as exc:
        text = str(exc)
        kind = ErrorKind.TRUNCATED if "truncated" in text or isinstance(exc, EOFError) else ErrorKind.CORRUPT
        raise FileFailure(kind, f"pixel data cannot be decoded: {text or type(exc).__name__}") from None
    return picture, orientation


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - broken EXIF raises many types and must not fail the picture
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _orient(picture: Image.Image, orientation: int) -> Image.Image:
    return picture.transpose(_TRANSPOSE[orientation])


def _normalise(im: Image.Image) -> Image.Image:
    """8-bit L or RGB; alpha composited on white; 16-bit and float scaled, never clipped."""
    m = im.mode
    if m in ("L", "RGB"):
        return im
    if m in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if m.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if m == "F":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr, top = arr - lo, max(hi - lo, 1e-12)
        return Image.fromarray(np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), "L")
    if m == "P" or m == "PA":
        im = im.convert("RGBA" if m == "PA" or "transparency" in im.info else "RGB")
        m = im.mode
    elif m == "1":
        return im.convert("L")
    if m in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (_BACKGROUND,) * 4)
        flat = Image.alpha_composite(background, rgba).convert("RGB")
        return flat.convert("L") if m in ("LA", "La") else flat
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX
