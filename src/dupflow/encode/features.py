"""Compact local features (the `orb` encoder): ORB keypoints of the picture and of its mirror image,
computed from the one decode and stored in the encodings store, so that geometric verification
(`dupflow.match.verify`) never reads an image a second time.

The picture is resized so that its longest side is `WORK_SIDE` px. Up to `KEYPOINTS` keypoints per
view are kept, spread over a 4 x 4 grid (each cell first takes its strongest), so that a crop of
any part of the picture still shares keypoints with it. One view costs 4 bytes of position and
32 bytes of descriptor per keypoint: at most 9.2 KB per image for both views. A grey thumbnail of the
working picture (longest side `THUMB_SIDE` px, at most 1 KB) lets verification check that two pictures
whose detail sits in one small part also agree everywhere else.

Layout of one value (little-endian): a 9-byte header (format version, working width and height,
keypoints in the stored view and in the mirrored view), every keypoint's (x, y) as uint16 in
1/`POSITION_SCALE` px, every keypoint's 32-byte descriptor, then (format 2) the thumbnail's rows.
Values of format 1 (no thumbnail) are still read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from dupflow.encode.catalog import FEATURES_ENCODER
from dupflow.errors import ConfigError

__all__ = [
    "FEATURES_DECODE_SIDE",
    "FEATURES_ENCODER",
    "FORMAT",
    "KEYPOINTS",
    "THUMB_SIDE",
    "WORK_SIDE",
    "Features",
    "extract_features",
    "parse_features",
    "require_cv2",
    "thumb_size",
]

WORK_SIDE = 512  # longest side of the picture the keypoints are found on
FEATURES_DECODE_SIDE = 256  # the smallest side the reduced-scale decode keeps for them
MIN_SIDE = 320  # smaller pictures are enlarged to this longest side (ORB ignores a 15 px border)
KEYPOINTS = 128  # per view
GRID = 4
POSITION_SCALE = 8
THUMB_SIDE = 32  # longest side of the stored grey thumbnail
FORMAT = 2
_READ = (1, 2)  # formats parse_features reads (format 1 has no thumbnail)
_HEADER = struct.Struct("<BHHHH")
_DETECTED = 6 * KEYPOINTS  # candidates the grid chooses from


def require_cv2() -> None:
    """Raise a ConfigError naming the install command when OpenCV is missing."""
    try:
        import cv2  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "the orb encoder and verified rules need OpenCV, which dupflow depends on: reinstall dupflow, or "
            "pip install opencv-python-headless (or encode with --preset fast)"
        ) from exc


@dataclass(frozen=True)
class Features:
    """One picture's keypoints: positions (n, 2) float32 in the working frame and descriptors (n, 32)
    uint8, for the stored view and for its mirror image (x -> width - 1 - x before detection), and the
    working picture's grey thumbnail (`thumb_size`; None in values of format 1)."""

    width: int
    height: int
    points: tuple[np.ndarray, np.ndarray]
    descriptors: tuple[np.ndarray, np.ndarray]
    thumb: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points[0])


def _working_gray(picture: np.ndarray) -> np.ndarray:
    import cv2

    h, w = picture.shape[:2]
    longest = max(h, w)
    target = WORK_SIDE if longest > WORK_SIDE else max(longest, MIN_SIDE)
    if target == longest:
        return picture
    scale = target / longest
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(picture, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def thumb_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of the thumbnail of a working picture of that size."""
    scale = THUMB_SIDE / max(width, height, 1)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _spread(keypoints: list[Any], width: int, height: int) -> list[Any]:
    """Up to KEYPOINTS keypoints: each grid cell's strongest first, then the strongest left over."""
    order = sorted(range(len(keypoints)), key=lambda i: -keypoints[i].response)
    quota = KEYPOINTS // (GRID * GRID)
    taken: list[int] = []
    rest: list[int] = []
    per_cell = np.zeros((GRID, GRID), np.int64)
    for i in order:
        x, y = keypoints[i].pt
        cx, cy = min(GRID - 1, int(x * GRID / width)), min(GRID - 1, int(y * GRID / height))
        if per_cell[cy, cx] < quota:
            per_cell[cy, cx] += 1
            taken.append(i)
        else:
            rest.append(i)
    chosen = taken + rest[: max(0, KEYPOINTS - len(taken))]
    return [keypoints[i] for i in chosen]


def _view(orb: object, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = gray.shape
    found = orb.detect(gray, None)  # type: ignore[attr-defined]
    chosen = _spread(list(found), w, h)
    chosen, descriptors = orb.compute(gray, chosen)  # type: ignore[attr-defined]
    if descriptors is None or not chosen:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    points = np.array([k.pt for k in chosen], np.float32)
    return points, np.ascontiguousarray(descriptors, np.uint8)


def extract_features(picture: np.ndarray) -> bytes:
    """The stored value for a grey (h, w) uint8 picture."""
    import cv2

    gray = _working_gray(picture)
    h, w = gray.shape
    orb = cv2.ORB.create(nfeatures=_DETECTED, scaleFactor=1.2, nlevels=6, edgeThreshold=15, patchSize=31,
                         fastThreshold=7)
    views = [_view(orb, gray), _view(orb, np.ascontiguousarray(gray[:, ::-1]))]
    header = _HEADER.pack(FORMAT, w, h, len(views[0][0]), len(views[1][0]))
    points = np.concatenate([v[0] for v in views]) if views else np.zeros((0, 2), np.float32)
    fixed = np.clip(np.round(points * POSITION_SCALE), 0, 65535).astype("<u2")
    thumb = cv2.resize(gray, thumb_size(w, h), interpolation=cv2.INTER_AREA)
    return bytes(header + fixed.tobytes() + b"".join(v[1].tobytes() for v in views) + thumb.tobytes())


def parse_features(value: bytes) -> Features:
    """A stored value back as Features; raises ValueError on a value of another format."""
    version, w, h, n0, n1 = _HEADER.unpack_from(value)
    if version not in _READ:
        raise ValueError(f"local features of format {version}; this dupflow reads formats {_READ}")
    n = n0 + n1
    start = _HEADER.size
    points = np.frombuffer(value, "<u2", 2 * n, start).reshape(n, 2).astype(np.float32) / POSITION_SCALE
    descriptors = np.frombuffer(value, np.uint8, 32 * n, start + 4 * n).reshape(n, 32)
    thumb = None
    if version >= 2:
        tw, th = thumb_size(w, h)
        thumb = np.frombuffer(value, np.uint8, tw * th, start + 36 * n).reshape(th, tw)
    return Features(w, h, (points[:n0], points[n0:]), (descriptors[:n0], descriptors[n0:]), thumb)
