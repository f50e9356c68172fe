"""Decode an image once, at reduced scale, into the normalised picture every encoder reads.

JPEGs use libjpeg's reduced-scale DCT (Pillow's `draft`); other formats decode whole and are
box-reduced by the same factor, so a JPEG and its lossless copy give comparable pictures. EXIF
orientation is applied; palette, alpha, 16-bit, CMYK and other modes are normalised to 8-bit L/RGB.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from dupflow.errors import ErrorKind, FileFailure

__all__ = ["DecodedImage", "configure_pillow", "decode_image", "reduction_factor"]

Mode = Literal["L", "RGB"]

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
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise FileFailure(ErrorKind.NOT_AN_IMAGE, "no image format recognises this file's bytes") from None
    except Image.DecompressionBombError as exc:
        raise FileFailure(ErrorKind.DECOMPRESSION_BOMB, f"{exc}; raise --max-pixels to allow it") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise FileFailure(ErrorKind.CORRUPT, f"the header cannot be parsed: {exc}") from None
    width, height = im.size
    if width * height > max_pixels:
        raise FileFailure(
            ErrorKind.DECOMPRESSION_BOMB,
            f"declares {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,}; "
            "raise --max-pixels if the image is genuine",
        )
    fmt, original_mode = im.format or "unknown", im.mode
    factor = reduction_factor(width, height, decode_size) if draft else 1
    try:
        if factor > 1 and fmt == "JPEG":
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
    except Image.DecompressionBombError as exc:
        raise FileFailure(ErrorKind.DECOMPRESSION_BOMB, str(exc)) from None
    except (OSError, SyntaxError, ValueError, IndexError, EOFError, TypeError) as exc:
        text = str(exc)
        kind = ErrorKind.TRUNCATED if "truncated" in text or isinstance(exc, EOFError) else ErrorKind.CORRUPT
        raise FileFailure(kind, f"pixel data cannot be decoded: {text or type(exc).__name__}") from None
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return DecodedImage(picture, width, height, fmt, original_mode, factor)


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # broken EXIF must not fail the picture
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
