"""The encoder registry: every encoding a file can get, as pure functions of one decoded picture.

Perceptual hashes are imagehash's own algorithms, packed MSB-first into unsigned integers so that
`int(str(imagehash_value), 16)` equals the stored value. Hashes of up to 64 bits are `uint64`;
longer ones are big-endian fixed-size binary.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import imagehash
import numpy as np
import pyarrow as pa
from PIL import Image

from dupflow.encode.catalog import ENCODER_NAMES, FEATURES_ENCODER, decode_size_for
from dupflow.encode.features import FEATURES_DECODE_SIDE, extract_features
from dupflow.io.decoding import DecodedImage
from dupflow.schemas import encodings_schema as table_schema

__all__ = [
    "DIHEDRAL",
    "ENCODERS",
    "WINDOWS",
    "Encoder",
    "HashInput",
    "bits_to_value",
    "encodings_schema",
    "hash_bits",
    "hash_input",
    "pixel_digest",
    "sha256_digest",
]



@dataclass
class HashInput:
    """What the structure hashes of one picture read: its grey picture (box-reduced, see `hash_input`)
    and the hash size; the pHash DCT is computed once for pHash and its mirrored and rotated views."""

    gray: Image.Image
    hash_size: int

    @functools.cached_property
    def phash_dct(self) -> np.ndarray:
        """The low-frequency DCT coefficients pHash thresholds (hash_size x hash_size)."""
        return _low_dct(_phash_input(self.gray, self.hash_size), self.hash_size)


EncodeFn = Callable[[DecodedImage, HashInput], Any]


@dataclass(frozen=True)
class Encoder:
    """One named encoding: its column type, whether it needs colour, the function (None: batched
    through a network, see `dupflow.encode.cnn`) and its version."""

    name: str
    description: str
    needs_color: bool
    bits: Callable[[int], int]  # hash_size -> bits (0: not a Hamming hash)
    arrow_type: Callable[[Mapping[str, Any]], pa.DataType]  # of the value settings (hash_size, cnn_dim)
    fn: EncodeFn | None
    version: int  # bump when a change alters its values: stores re-encode the rows older versions made
    decode_side: int = 0  # the smallest side it needs from the reduced-scale decode (0: the hashes' own)


def hash_bits(bits: list[bool] | np.ndarray) -> int:
    """Bits (first = most significant) as one integer."""
    flat = np.asarray(bits, dtype=bool).ravel()
    return int.from_bytes(np.packbits(flat).tobytes(), "big") >> ((-flat.size) % 8)


def bits_to_value(value: int, n_bits: int) -> int | bytes:
    """The stored form: an int for <= 64 bits, big-endian bytes beyond."""
    return value if n_bits <= 64 else value.to_bytes(n_bits // 8, "big")


def _hash_type(n_bits: int) -> pa.DataType:
    return pa.uint64() if n_bits <= 64 else pa.binary(n_bits // 8)


def _square(hash_size: int) -> int:
    return hash_size * hash_size


def _imagehash(fn: Callable[..., imagehash.ImageHash], **kwargs: Any) -> EncodeFn:
    def encode(_decoded: DecodedImage, given: HashInput) -> int | bytes:
        h = fn(given.gray, hash_size=given.hash_size, **kwargs)
        return bits_to_value(hash_bits(h.hash), given.hash_size * given.hash_size)

    return encode


def _phash(_decoded: DecodedImage, given: HashInput) -> int | bytes:
    """imagehash's pHash (LANCZOS to 4 x hash_size, DCT, above the median), from the shared DCT; equal to
    `imagehash.phash` (tests/test_hashing.py) at a third of its cost."""
    return _phash_bits(given.phash_dct, given.hash_size)


@functools.cache
def _dct_rows(size: int, rows: int) -> np.ndarray:
    """The first `rows` rows of the unnormalised DCT-II matrix (scipy.fftpack.dct's convention)."""
    k = np.arange(rows)[:, None]
    n = np.arange(size)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * size))


def _phash_input(gray: Image.Image, hash_size: int) -> np.ndarray:
    side = 4 * hash_size
    return np.asarray(gray.resize((side, side), Image.Resampling.LANCZOS), dtype=np.float64)


def _phash_of(pixels: np.ndarray, hash_size: int) -> int | bytes:
    return _phash_bits(_low_dct(pixels, hash_size), hash_size)


def _low_dct(pixels: np.ndarray, hash_size: int) -> np.ndarray:
    """The hash_size x hash_size low DCT coefficients of a square picture, or of each of a stack of them."""
    d = _dct_rows(pixels.shape[-1], hash_size)
    low: np.ndarray = d @ pixels @ d.T
    return low


def _phash_bits(low: np.ndarray, hash_size: int) -> int | bytes:
    return bits_to_value(hash_bits(low > _median(low.ravel())), hash_size * hash_size)


def _median(values: np.ndarray) -> float:
    """np.median of an even count (64 or 256 coefficients), without its overhead: the mean of the two
    middle values."""
    middle = len(values) // 2
    part = np.partition(values, [middle - 1, middle])
    return float((part[middle - 1] + part[middle]) / 2)


# The seven non-identity symmetries of the square, as functions of the pixel array; the stored
# variant k is the pHash the picture would have after DIHEDRAL[k][0] was applied to it.
DIHEDRAL: tuple[tuple[str, Callable[[np.ndarray], np.ndarray]], ...] = (
    ("hflip", lambda p: p[:, ::-1]),
    ("vflip", lambda p: p[::-1, :]),
    ("rot180", lambda p: p[::-1, ::-1]),
    ("transpose", lambda p: p.T),
    ("rot90", lambda p: np.rot90(p, 1)),
    ("rot270", lambda p: np.rot90(p, 3)),
    ("transverse", lambda p: p[::-1, ::-1].T),
)


def _dihedral_dct(low: np.ndarray) -> tuple[np.ndarray, ...]:
    """The low DCT coefficients of the seven DIHEDRAL views, from the picture's own: reversing an axis
    flips the sign of its odd coefficients and transposing transposes them (one DCT instead of seven)."""
    s = (-1.0) ** np.arange(len(low))
    t = low.T
    return (low * s[None, :], low * s[:, None], low * np.outer(s, s), t, t * s[:, None], t * s[None, :],
            t * np.outer(s, s))


def _phash_dihedral(_decoded: DecodedImage, given: HashInput) -> bytes:
    """pHash of the flipped and rotated picture, seven variants concatenated big-endian."""
    return _packed_phashes(np.stack([v.ravel() for v in _dihedral_dct(given.phash_dct)]))


def _packed_phashes(low: np.ndarray) -> bytes:
    """One pHash per row of low DCT coefficients (each above its row's median), concatenated big-endian."""
    middle = low.shape[1] // 2  # an even count: the median is the mean of the two middle values
    part = np.partition(low, [middle - 1, middle], axis=1)
    median = (part[:, middle - 1] + part[:, middle]) / 2
    return bytes(np.packbits(low > median[:, None], axis=1).tobytes())


# Windows of the picture whose pHashes `phash_windows` stores, as (left, top, side) fractions: at 90% of
# each side on a 3 x 3 grid of offsets and at 80% on a 5 x 5 grid, so a crop keeping 80-95% of each side
# is within 2.5% (of the side) of one of them. A crop's own pHash lies within 8 bits of one of its
# original's windows for 90% of 20% crops and 94% of 10% crops, against 36% and 78% of crops within 16
# bits of the whole picture (bench/.work accuracy set, seed 0); such candidates are verified by local
# features before they are accepted (matching.WINDOW_MARGIN).
WINDOWS: tuple[tuple[float, float, float], ...] = tuple(
    (float(x), float(y), side)
    for side, steps in ((0.9, 3), (0.8, 5))
    for y in np.linspace(0.0, 1.0 - side, steps)
    for x in np.linspace(0.0, 1.0 - side, steps)
)


def _phash_windows(_decoded: DecodedImage, given: HashInput) -> bytes:
    """pHash of each of the WINDOWS of the grey picture, concatenated big-endian."""
    gray, hash_size = given.gray, given.hash_size
    w, h = gray.size
    side = 4 * hash_size
    pixels = np.stack([
        np.asarray(gray.resize((side, side), Image.Resampling.LANCZOS,
                               box=(x * w, y * h, (x + s) * w, (y + s) * h)), dtype=np.float64)
        for x, y, s in WINDOWS
    ])
    return _packed_phashes(_low_dct(pixels, hash_size).reshape(len(WINDOWS), -1))


def _whash(_decoded: DecodedImage, given: HashInput) -> int | bytes:
    # A fixed image_scale: imagehash otherwise derives it from the input size, and reduced-scale
    # decoding would then change the hash.
    h = imagehash.whash(given.gray, hash_size=given.hash_size, image_scale=8 * given.hash_size)
    return bits_to_value(hash_bits(h.hash), given.hash_size * given.hash_size)


COLORHASH_BINBITS = 3


def _colorhash(decoded: DecodedImage, _given: HashInput) -> int:
    return hash_bits(imagehash.colorhash(decoded.image, binbits=COLORHASH_BINBITS).hash)


def _crop_resistant(decoded: DecodedImage, _given: HashInput) -> list[int]:
    multi = imagehash.crop_resistant_hash(decoded.image)
    return [hash_bits(seg.hash) for seg in multi.segment_hashes]


def _orb(decoded: DecodedImage, _given: HashInput) -> bytes:
    picture = decoded.image if decoded.image.mode == "L" else decoded.image.convert("L")
    return extract_features(np.asarray(picture))


def hash_input(gray: Image.Image, decode_size: int) -> Image.Image:
    """The grayscale picture the structure hashes read: box-reduced so its short side is in
    [decode_size, 2 * decode_size). Their own LANCZOS resize then costs ~10x less, and values stay
    within the documented tolerance of hashing the full-resolution picture."""
    factor = min(gray.size) // max(decode_size, 1)
    return gray.reduce(factor) if factor >= 2 else gray


def pixel_digest(decoded: DecodedImage) -> bytes:
    """SHA-256 over size, mode and the decoded RGB pixels: equal for lossless re-encodes."""
    rgb = decoded.image if decoded.image.mode == "RGB" else decoded.image.convert("RGB")
    h = hashlib.sha256(f"{rgb.size[0]}x{rgb.size[1]}:{decoded.width}x{decoded.height}".encode())
    h.update(rgb.tobytes())
    return h.digest()


def sha256_digest(data: bytes) -> bytes:
    """SHA-256 of the file's bytes (compare with `sha256sum`)."""
    return hashlib.sha256(data).digest()


def _square_hash(name: str, description: str, fn: EncodeFn, version: int = 1) -> Encoder:
    """A grey-picture hash of hash_size x hash_size bits (pHash, dHash, aHash, wHash)."""
    return Encoder(name, description, False, _square, lambda v: _hash_type(_square(v["hash_size"])), fn,
                   version=version)


def _views_hash(name: str, description: str, views: int, fn: EncodeFn) -> Encoder:
    """The pHashes of `views` other views of the grey picture, concatenated (not a Hamming hash itself)."""
    return Encoder(name, description, False, lambda _hash_size: 0,
                   lambda v: pa.binary(views * _square(v["hash_size"]) // 8), fn, version=1)


_IMPLEMENTATIONS: dict[str, Encoder] = {
    e.name: e
    for e in (
        _square_hash("phash", "perceptual hash (DCT), robust to resizing and re-encoding", _phash),
        _square_hash("dhash", "difference hash (gradients), fast and robust to small edits",
                     _imagehash(imagehash.dhash)),
        _square_hash("ahash", "average hash, fastest, weakest", _imagehash(imagehash.average_hash)),
        _views_hash("phash_dihedral", "pHash of the 7 flipped/rotated versions: lets `match --orientations` "
                    "catch mirrored and rotated copies", len(DIHEDRAL), _phash_dihedral),
        _views_hash("phash_windows", f"pHash of {len(WINDOWS)} windows keeping 80-90% of each side: candidate "
                    "crops, accepted once local features verify them", len(WINDOWS), _phash_windows),
        _square_hash("whash", "wavelet hash (Haar)", _whash),
        Encoder(
            "colorhash",
            "colour distribution hash (42 bits), not a structure hash",
            True,
            lambda _hash_size: 14 * COLORHASH_BINBITS,
            lambda _values: pa.uint64(),
            _colorhash,
            version=1,
        ),
        Encoder(
            "crop_resistant",
            "crop-resistant segment hashes (slow, ~0.2 s/image)",
            True,
            lambda _hash_size: 0,
            lambda _values: pa.list_(pa.uint64()),
            _crop_resistant,
            version=1,
        ),
        Encoder(
            "pixel",
            "SHA-256 of the decoded pixels: lossless re-encodes and metadata edits",
            True,
            lambda _hash_size: 0,
            lambda _values: pa.binary(32),
            lambda d, _given: pixel_digest(d),
            version=1,
        ),
        Encoder(
            FEATURES_ENCODER,
            "local features (ORB keypoints of the picture and its mirror image, and a 32 px grey thumbnail, "
            "<= 10.2 KB): geometric verification of crops and overlaps (verified rules)",
            False,
            lambda _hash_size: 0,
            lambda _values: pa.binary(),
            _orb,
            version=2,
            decode_side=FEATURES_DECODE_SIDE,
        ),
        Encoder(
            "cnn",
            "CNN embedding (EfficientNet-Lite0 or your ONNX model; needs dupflow[cnn] or dupflow[onnx]): crops, "
            "rotations, edits; stored as float16 (2.5 KB per image)",
            True,
            lambda _hash_size: 0,
            lambda v: pa.list_(pa.float16(), int(v["cnn_dim"])),
            None,
            version=1,
        ),
    )
}
# The registry: the implementations of dupflow.encode.catalog's names, in its order.
ENCODERS: dict[str, Encoder] = {name: _IMPLEMENTATIONS[name] for name in ENCODER_NAMES}


def encodings_schema(encoders: Iterable[str], values: Mapping[str, Any], *, staged: bool = False) -> pa.Schema:
    """The encodings table for these encoders (registry order) and value settings (`hash_size`; with
    the cnn encoder `cnn_dim`, `cnn_id`, `cnn_model`), recorded in the metadata; `staged` adds `dataset`."""
    wanted = set(encoders)
    fields = [pa.field(name, enc.arrow_type(values)) for name, enc in ENCODERS.items() if name in wanted]
    hash_size = int(values["hash_size"])
    meta = {"hash_size": str(hash_size), "decode_size": str(decode_size_for(hash_size))}
    if "cnn" in wanted:
        meta.update({k: str(values[k]) for k in ("cnn_model", "cnn_id", "cnn_dim")})
    return table_schema(fields, meta, staged=staged)
