"""Geometric verification: do two pictures show the same content, and how much of it?

Each picture's stored ORB keypoints (`dupflow.encode.features`) are matched by descriptor (nearest
neighbour, ratio test), and a similarity transform (rotation, scale, shift) is fitted to the matches
with RANSAC, once against the other picture as stored and once against its mirror image. The pair
is verified when at least `MIN_INLIERS` matches agree and they spread over at least `MIN_SPREAD` of
the area the two pictures share (a common logo or watermark alone does not verify a pair).

The score is the **shared fraction**: the area both pictures show divided by the area either shows
(intersection over union of the two frames once one is mapped onto the other). An identical or
resized copy scores ~1; a crop keeping 64% of the picture scores 0.64; two windows of a photo
sharing a quarter of their area score 0.14; touching tiles and unrelated photos do not verify (0).
A picture whose keypoints cover less than `MIN_TEXTURE` of it (detail in one small part: a logo, a
small subject on a flat background) is verified only when the pictures also agree outside the matched
detail: on the stored grey thumbnails, mapped by the fitted transform and with brightness and contrast
fitted, at least `MIN_AGREEMENT` of the shared area outside the detail must lie within `TOLERANCE` grey
levels (two flat tiles carrying one watermark share the watermark only: NaN, cannot tell). Where no
transform fits at all, such a pair is refuted (0) like any other. Pictures with fewer than
`MIN_KEYPOINTS` keypoints, and low-texture pictures whose stored features have no thumbnail (format 1),
cannot be verified: NaN.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from threadpoolctl import threadpool_limits

from dupflow.encode.features import Features, parse_features

__all__ = [
    "MIN_AGREEMENT",
    "MIN_INLIERS",
    "MIN_KEYPOINTS",
    "MIN_SPREAD",
    "MIN_TEXTURE",
    "TOLERANCE",
    "LocalFeatures",
    "shared_fraction",
    "verify_pair",
]

MIN_KEYPOINTS = 16
MIN_INLIERS = 12
# A picture whose detail sits in a small part of it (a logo or a watermark on a flat background) is not
# verified by its keypoints alone: sharing that part would not make two such pictures copies of each other.
MIN_TEXTURE = 0.1
# ... but by its thumbnail too: the share of the shared area outside the matched detail where the two
# pictures agree within TOLERANCE grey levels once brightness and contrast are fitted, each picture
# mapped onto the other (chosen on the accuracy benchmark's seed 0, the best F1 of 0.5, 0.6 and 0.7: 76%
# of its true little-detail copies reach 0.7, flat tiles carrying one watermark at most 0.48).
MIN_AGREEMENT = 0.7
TOLERANCE = 6.0
_GAIN = (0.5, 2.0)  # the contrast change the photometric fit may find between two copies
_MIN_PIXELS = 10  # thumbnail pixels: fewer shared or in the detail, and it cannot tell; fewer outside the
# detail, and the keypoints have covered the shared area
MIN_SPREAD = 0.25  # agreeing matches' convex hull / that of all keypoints in the shared area
RATIO = 0.85  # Lowe's ratio test
MAX_DESCRIPTOR_DISTANCE = 80  # of 256 bits
REPROJECTION = 6.0  # px in the 512 px working frame
MAX_SCALE = 8.0
SURE = 0.5  # a picture shares at most half of itself with both the other and its mirror image


_REFUTED = 0.0


@dataclass(frozen=True)
class _Fit:
    """A transform fitted to one view: its shared fraction, the model (a's frame to b's view) and the
    agreeing keypoints in b's view."""

    shared: float
    model: np.ndarray
    agreeing: np.ndarray


def verify_pair(a: Features, b: Features) -> float:
    """The shared fraction of pictures a and b, against b as stored or mirrored (NaN: cannot tell);
    RANSAC is seeded, so the same pair always gets the same score."""
    if len(a) < MIN_KEYPOINTS or len(b) < MIN_KEYPOINTS:
        return float("nan")
    textured = _textured(a) and _textured(b)
    best = _REFUTED
    undecided = False  # a transform fits the detail, but the thumbnails do not show the rest agrees
    for view in (0, 1):
        fit = _fit_view(a, b, view)
        if fit is None:
            continue
        if textured or _agrees_outside_detail(fit, a, b, view):
            best = max(best, fit.shared)
        else:
            undecided = True
        if best >= SURE:  # the mirror image cannot share more
            break
    return float("nan") if undecided and best == _REFUTED else best


def _checkable(f: Features) -> bool:
    """Whether a copy of this picture can be verified at all (so identical features verify it)."""
    return len(f) >= MIN_KEYPOINTS and (f.thumb is not None or _textured(f))


def _textured(f: Features) -> bool:
    return _texture(f) >= MIN_TEXTURE


def _texture(f: Features) -> float:
    """The share of the picture its keypoints spread over (the area of their convex hull)."""
    return _hull_area(f.points[0]) / max(1.0, float(f.width * f.height))


def _signs(descriptors: np.ndarray) -> np.ndarray:
    """Descriptors as rows of +-1: the Hamming distance of two rows is (256 - their dot product) / 2."""
    result: np.ndarray = np.unpackbits(descriptors, axis=1).astype(np.float32) * 2 - 1
    return result


def _fit_view(a: Features, b: Features, view: int) -> _Fit | None:
    """The transform from a to b's view `view` that the matched keypoints verify, or None."""
    import cv2

    da, db = a.descriptors[0], b.descriptors[view]
    if len(db) < 2 or len(da) < 2:
        return None
    distance = (256 - _signs(da) @ _signs(db).T) / 2
    rows = np.arange(len(da))
    first = distance.argmin(axis=1)
    best = distance[rows, first]
    distance[rows, first] = np.inf
    second = distance.min(axis=1)
    good = (best <= MAX_DESCRIPTOR_DISTANCE) & (best < RATIO * second)
    if int(good.sum()) < MIN_INLIERS:
        return None
    src = a.points[0][good]
    dst = b.points[view][first[good]]
    cv2.setRNGSeed(int(good.sum()))
    model, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=REPROJECTION,
                                              maxIters=500, confidence=0.995, refineIters=10)
    if model is None or mask is None:
        return None
    inliers = mask.ravel().astype(bool)
    if int(inliers.sum()) < MIN_INLIERS:
        return None
    scale = float(np.sqrt(abs(np.linalg.det(model[:, :2]))))
    if not 1 / MAX_SCALE <= scale <= MAX_SCALE:
        return None
    shared, union = _overlap(model, a, b)
    if shared <= 0 or _spread(model, a, b, view, dst[inliers]) < MIN_SPREAD:
        return None
    return _Fit(float(np.clip(shared / union, 0.0, 1.0)), model, dst[inliers])


def _agrees_outside_detail(fit: _Fit, a: Features, b: Features, view: int) -> bool | None:
    """Whether the thumbnails agree around the matched detail, checked both ways (a mapped onto b's
    view, and b's view mapped back onto a): None where that cannot be told."""
    import cv2

    if a.thumb is None or b.thumb is None:
        return None
    small_b = np.ascontiguousarray(b.thumb if view == 0 else b.thumb[:, ::-1])
    inverse = cv2.invertAffineTransform(fit.model)
    agreeing_a = fit.agreeing @ inverse[:, :2].T + inverse[:, 2]
    one = _agreement(a.thumb, (a.width, a.height), small_b, (b.width, b.height), fit.model, fit.agreeing)
    two = _agreement(small_b, (b.width, b.height), a.thumb, (a.width, a.height), inverse, agreeing_a)
    if one is None or two is None:
        return None
    return min(one, two) >= MIN_AGREEMENT


def _thumb_scale(thumb: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per axis (x, y): the scale from the working frame to the thumbnail and the shift of pixel centres
    (an area-averaged thumbnail pixel j covers working pixels [j / s, (j + 1) / s))."""
    scale = np.array([thumb.shape[1] / size[0], thumb.shape[0] / size[1]])
    return scale, (scale - 1) / 2


def _agreement(source: np.ndarray, source_size: tuple[int, int], target: np.ndarray, target_size: tuple[int, int],
               model: np.ndarray, detail: np.ndarray) -> float | None:
    """The share of the target thumbnail's area, shared with the source and outside the matched detail
    (`detail`: agreeing keypoints in the target's working frame), where the source mapped by `model`
    lies within TOLERANCE once a brightness and contrast change is applied (contrast fitted over the
    shared area, within `_GAIN`; brightness over the detail). 1 where the detail covers the shared area;
    None where the thumbnails barely overlap or the detail is too small in them."""
    import cv2

    scale_s, shift_s = _thumb_scale(source, source_size)
    scale_t, shift_t = _thumb_scale(target, target_size)
    linear = scale_t[:, None] * model[:, :2] / scale_s[None, :]
    mapping = np.column_stack([linear, scale_t * model[:, 2] + shift_t - linear @ shift_s])
    size = (target.shape[1], target.shape[0])
    mapped = cv2.warpAffine(source.astype(np.float32), mapping, size, flags=cv2.INTER_LINEAR)
    kernel = np.ones((3, 3), np.uint8)
    inside = cv2.warpAffine(np.ones(source.shape, np.uint8), mapping, size, flags=cv2.INTER_NEAREST)
    inside = cv2.erode(inside, kernel).astype(bool)
    if int(inside.sum()) < _MIN_PIXELS:
        return None
    hull = np.zeros(target.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(detail * scale_t + shift_t).astype(np.int32)), 1)
    matched = inside & cv2.dilate(hull, kernel).astype(bool)
    rest = inside & ~matched
    if int(rest.sum()) < _MIN_PIXELS:
        return 1.0
    if int(matched.sum()) < _MIN_PIXELS:
        return None
    target = target.astype(np.float32)
    x, y = mapped[inside], target[inside]
    spread = float(x.var())
    gain = float(np.clip(np.mean((x - x.mean()) * (y - y.mean())) / spread, *_GAIN)) if spread > 0 else 1.0
    # brightness is pinned where the pictures are known to correspond, the matched detail: fitted over
    # flat surroundings alone, it would map any flat area onto any other
    offset = float(np.median(target[matched] - gain * mapped[matched]))
    residual = target[rest] - (gain * mapped[rest] + offset)
    return float((np.abs(residual) <= TOLERANCE).mean())


def _hull_area(points: np.ndarray) -> float:
    import cv2

    if len(points) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(points.reshape(-1, 1, 2).astype(np.float32))))


def _spread(model: np.ndarray, a: Features, b: Features, view: int, agreeing: np.ndarray) -> float:
    """How much of the textured shared area the agreeing matches cover: the area of their convex hull
    over that of every keypoint lying in the shared area (the smaller of a's and b's), in b's frame."""
    import cv2

    in_b = a.points[0] @ model[:, :2].T + model[:, 2]
    inside_b = (in_b >= 0).all(axis=1) & (in_b[:, 0] <= b.width) & (in_b[:, 1] <= b.height)
    inverse = cv2.invertAffineTransform(model)
    points_b = b.points[view]
    in_a = points_b @ inverse[:, :2].T + inverse[:, 2]
    inside_a = (in_a >= 0).all(axis=1) & (in_a[:, 0] <= a.width) & (in_a[:, 1] <= a.height)
    textured = min(_hull_area(in_b[inside_b]), _hull_area(points_b[inside_a]))
    return _hull_area(agreeing) / textured if textured > 0 else 0.0


def _overlap(model: np.ndarray, a: Features, b: Features) -> tuple[float, float]:
    """Area shared by a (mapped by `model`) and b, and the area of their union, in b's frame."""
    corners = np.array([[0, 0], [a.width, 0], [a.width, a.height], [0, a.height]], np.float64)
    shared = _area_in_frame(corners @ model[:, :2].T + model[:, 2], b.width, b.height)
    area_a = abs(float(np.linalg.det(model[:, :2]))) * a.width * a.height
    return shared, area_a + float(b.width * b.height) - shared


def _area_in_frame(polygon: np.ndarray, width: float, height: float) -> float:
    """The area of a convex polygon's part inside [0, width] x [0, height] (clipped edge by edge;
    OpenCV's intersectConvexConvex misses part of the area when edges coincide, as for a copy)."""
    points = [(float(x), float(y)) for x, y in polygon]
    for axis, bound, upper in ((0, 0.0, False), (0, float(width), True), (1, 0.0, False), (1, float(height), True)):
        kept: list[tuple[float, float]] = []
        for i, p in enumerate(points):
            q = points[(i + 1) % len(points)]
            p_in = p[axis] <= bound if upper else p[axis] >= bound
            q_in = q[axis] <= bound if upper else q[axis] >= bound
            if p_in:
                kept.append(p)
            if p_in != q_in:  # the edge crosses the bound
                t = (bound - p[axis]) / (q[axis] - p[axis])
                kept.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
        points = kept
        if len(points) < 3:
            return 0.0
    x, y = np.array(points).T
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def shared_fraction(a: Features, b: Features) -> float:
    """The score of a pair, the same whichever picture comes first: the pair is verified in one order
    fixed by the pictures' own keypoints."""
    if (len(b), b.points[0].tobytes()) < (len(a), a.points[0].tobytes()):
        a, b = b, a
    return verify_pair(a, b)


FetchValues = Callable[[np.ndarray], Sequence[bytes | None]]  # the stored values of some feature keys
PARSED_KEPT = 20_000  # parsed values kept between calls (~200 MB): a task fetches what it verifies, in batches


class LocalFeatures:
    """The local features of the images being matched, row for row: `key` names each row's value (-1: none;
    equal keys, equal values), fetched and parsed when a pair needs it, so a process holds the values it
    verifies (at most `PARSED_KEPT` between calls), not the whole column; identical values are verified once."""

    def __init__(self, key: np.ndarray, fetch: FetchValues) -> None:
        self.key = key
        self._fetch = fetch
        self._parsed: dict[int, Features] = {}
        self._digest: dict[int, bytes] = {}  # of each fetched value: two keys can hold one value (same pixels)
        self._shared: dict[tuple[int, int], float] = {}  # verified pairs of values: the group check asks again
        self._lock = threading.Lock()
        self.verified = 0  # distinct pairs verified in this process (bench/verification.py reads it)
        self.seconds = 0.0  # CPU time verifying them
        self.fetched = 0  # values fetched in this process

    @classmethod
    def held(cls, column: pa.Array | pa.ChunkedArray) -> LocalFeatures:
        """Features held in memory (each distinct value once), from a column of stored values (null: none)."""
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        encoded = pc.dictionary_encode(array)
        values = encoded.dictionary
        key = encoded.indices.to_numpy(zero_copy_only=False).astype(np.float64)
        key = np.where(np.isnan(key), -1, key).astype(np.int64)
        return cls(key, lambda keys: values.take(pa.array(keys, pa.int64())).to_pylist())

    def take(self, ids: np.ndarray) -> LocalFeatures:
        """The features of images `ids`, in that order (fetched from the same values)."""
        return LocalFeatures(self.key[ids], self._fetch)

    def known(self) -> np.ndarray:
        """(M, 3) float64: every pair of feature values verified in this process (key, key, shared fraction),
        for `learn` in another process (keys are the same there: the same rows give the same dictionary)."""
        with self._lock:
            if not self._shared:
                return np.zeros((0, 3))
            keys = np.array(list(self._shared), np.float64)
            return np.column_stack([keys, np.fromiter(self._shared.values(), np.float64, len(self._shared))])

    def learn(self, known: np.ndarray) -> None:
        """Take pairs verified elsewhere (`known`), so that they are not verified again here."""
        learned = {(int(x), int(y)): float(f) for x, y, f in known}
        with self._lock:
            self._shared.update(learned)

    def present(self) -> np.ndarray:
        """(N,) bool: the image has stored features."""
        result: np.ndarray = self.key >= 0
        return result

    def _parse(self, keys: np.ndarray) -> dict[int, Features]:
        """The parsed values of `keys` (none for a key without a value): those kept, the others fetched in
        one batch."""
        with self._lock:
            found = {int(k): self._parsed[int(k)] for k in keys if int(k) in self._parsed}
        missing = np.array([k for k in np.unique(keys) if int(k) not in found], np.int64)
        if len(missing):
            raw = [(int(k), v) for k, v in zip(missing, self._fetch(missing), strict=True) if v is not None]
            fetched = {k: parse_features(v) for k, v in raw}
            found.update(fetched)
            with self._lock:
                self.fetched += len(fetched)
                self._digest.update((k, hashlib.blake2b(v, digest_size=16).digest()) for k, v in raw)
                self._parsed.update(fetched)
                for old in list(self._parsed)[: max(0, len(self._parsed) - PARSED_KEPT)]:
                    del self._parsed[old]
        return found

    def _score(self, parsed: dict[int, Features], pair: tuple[int, int]) -> float:
        """The shared fraction of two values: 1 (or NaN, unverifiable) when they are the same value."""
        a, b = parsed.get(pair[0]), parsed.get(pair[1])
        if a is None or b is None:
            return float("nan")
        if self._digest.get(pair[0], b"a") == self._digest.get(pair[1], b"b"):
            return 1.0 if _checkable(a) else float("nan")
        return shared_fraction(a, b)

    def scores(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The shared fraction of each image pair (a[i], b[i]): NaN where either has no features or too
        few keypoints to tell (identical values included: two flat pictures have the same, empty, features);
        1 for identical features with keypoints."""
        ka, kb = self.key[a], self.key[b]
        out = np.full(len(a), np.nan)
        same = (ka == kb) & (ka >= 0)
        todo = np.flatnonzero(~same & (ka >= 0) & (kb >= 0))
        lo, hi = np.minimum(ka[todo], kb[todo]), np.maximum(ka[todo], kb[todo])
        unique, back = np.unique(np.stack([lo, hi], axis=1), axis=0, return_inverse=True)
        keys = [(int(x), int(y)) for x, y in unique]
        with self._lock:
            fresh = [k for k in keys if k not in self._shared]
        parsed = self._parse(np.concatenate([ka[same], np.array(fresh, np.int64).reshape(-1)]))
        out[same] = [1.0 if int(k) in parsed and _checkable(parsed[int(k)]) else np.nan for k in ka[same]]
        if len(todo) == 0:
            return out
        start = time.thread_time()
        with threadpool_limits(1, user_api="blas"):  # one small product per pair: threads only cost
            scored = {k: self._score(parsed, k) for k in fresh}
        with self._lock:
            self._shared.update(scored)
            self.verified += len(fresh)
            self.seconds += time.thread_time() - start
        found = np.array([self._shared[k] for k in keys])
        out[todo] = found[back.ravel()]
        return out
