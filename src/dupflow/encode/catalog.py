"""The encoders' names and the decode size the hashes fix: what the settings, the rules and the command
line need, without the encoders' own imports (numpy, Pillow, imagehash, pyarrow, OpenCV).
`dupflow.encode.hashing` implements each name, in this order."""

from __future__ import annotations

__all__ = ["ENCODER_NAMES", "FEATURES_ENCODER", "decode_size_for"]

FEATURES_ENCODER = "orb"  # the local features encoder's name and the store's column
# Every encoding a file can get, in registry order (the store's column order).
ENCODER_NAMES: tuple[str, ...] = (
    "phash", "dhash", "ahash", "phash_dihedral", "phash_windows", "whash", "colorhash", "crop_resistant", "pixel",
    FEATURES_ENCODER, "cnn",
)


def decode_size_for(hash_size: int) -> int:
    """The reduced-scale decode's smallest side for a hash size (64 px for 64-bit hashes)."""
    return 8 * hash_size
