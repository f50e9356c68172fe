"""Which files are images: by extension (fast, no read) and by their first bytes (when the name says
nothing), plus the ISO-BMFF brands that tell HEIC from AVIF, whose codecs may be missing."""

from __future__ import annotations

import os

__all__ = ["IMAGE_EXTENSIONS", "SNIFF_BYTES", "has_image_extension", "heif_codec", "sniff_format"]

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif",
    ".ppm", ".pgm", ".pbm", ".pnm",  # netpbm
    ".mpo",  # multi-picture JPEG (stereo cameras, some phones): its first picture is read
    ".heic", ".heif", ".avif",  # ISO-BMFF containers: HEVC (needs pillow-heif) and AV1 (Pillow >= 11.3)
})

# Enough of a file to recognise every format below, an ftyp box's major and first compatible brands included.
SNIFF_BYTES = 64

_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"})
_HEIF_GENERIC = frozenset({b"mif1", b"msf1"})  # a HEIF still or sequence: the codec is in the item, not the brand
# BMP: the size of the DIB header that follows the 14-byte file header, one per version (core, v1..v5, OS/2 v2).
_BMP_DIB_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),  # MPO too: a JPEG whose APP2 segment indexes the pictures after it
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)


def has_image_extension(name: str) -> bool:
    """Whether the file name ends in an image extension (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def sniff_format(prefix: bytes) -> str | None:
    """The image format the first bytes of a file announce (`SNIFF_BYTES` are enough), or None."""
    for magic, fmt in _SIGNATURES:
        if prefix.startswith(magic):
            return fmt
    if prefix[:4] == b"RIFF" and prefix[8:12] == b"WEBP":
        return "WEBP"
    if prefix[:2] == b"BM" and int.from_bytes(prefix[14:18], "little") in _BMP_DIB_SIZES:
        return "BMP"
    if len(prefix) > 2 and prefix[0:1] == b"P" and prefix[1:2] in b"123456" and prefix[2:3].isspace():
        return "PPM"  # what Pillow calls every netpbm variant
    return heif_codec(prefix)


def heif_codec(data: bytes) -> str | None:
    """For an ISO-BMFF image (its ftyp box first): "AVIF" or "HEIF" (HEVC or another non-AV1 codec);
    None for anything else, MP4 video included."""
    if data[4:8] != b"ftyp":
        return None
    box = min(int.from_bytes(data[:4], "big"), len(data))
    brands = {data[8:12], *(data[i : i + 4] for i in range(16, box - 3, 4))}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    return "HEIF" if brands & (_HEVC_BRANDS | _HEIF_GENERIC) else None
