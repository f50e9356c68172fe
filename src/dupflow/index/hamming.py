"""Exact Hamming range search by multi-index hashing, vectorised in numpy, memory O(N + pairs).

Each hash (one or more 64-bit words) is cut into 16-bit chunks. By the pigeonhole principle, two
hashes within distance t agree to within r = t // m bits on at least one of the m chunks, so for
every chunk we probe the buckets within radius r of the query's chunk value (a counting-sort
table, no hashing), and verify candidates with XOR + popcount. A pair is kept only by the first
chunk that finds it, so no de-duplication pass is needed. Queries are processed in blocks, so a
caller (or a Dask task) can split the work into independent ranges of query rows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = ["HammingIndex", "as_words", "brute_force_pairs", "hamming_pairs"]

CHUNK_BITS = 16
_BUCKETS = 1 << CHUNK_BITS
_CANDIDATES_PER_BLOCK = 4_000_000

Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]  # (query row, index row, distance)


def as_words(values: pa.Array | pa.ChunkedArray | np.ndarray) -> np.ndarray:
    """Hashes as an (N, W) uint64 array: uint64 columns give W=1, fixed-size binary big-endian words."""
    if isinstance(values, np.ndarray):
        arr = values.astype(np.uint64, copy=False)
        return arr.reshape(len(arr), -1)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.null_count:
        raise ValueError("hashes contain nulls: drop rows with an error before searching")
    if pa.types.is_fixed_size_binary(values.type):
        width = values.type.byte_width
        if width % 8:
            raise ValueError(f"binary hashes must be a multiple of 8 bytes, not {width}")
        raw = np.frombuffer(values.buffers()[1], dtype=">u8", count=len(values) * width // 8,
                            offset=values.offset * width)
        return raw.astype(np.uint64).reshape(len(values), width // 8)
    ints: np.ndarray = values.to_numpy(zero_copy_only=False).astype(np.uint64)
    return ints.reshape(-1, 1)


@functools.cache
def _probe_masks(radius: int) -> np.ndarray:
    """All 16-bit values with at most `radius` bits set."""
    values = np.arange(_BUCKETS, dtype=np.uint32)
    return values[np.bitwise_count(values) <= radius].astype(np.int64)


def _chunk(words: np.ndarray, c: int) -> np.ndarray:
    return ((words[:, c // 4] >> np.uint64(CHUNK_BITS * (c % 4))) & np.uint64(_BUCKETS - 1)).astype(np.int64)


@dataclass(frozen=True)
class HammingIndex:
    """Counting-sort tables, one per 16-bit chunk, over an (N, W) uint64 hash array."""

    words: np.ndarray
    order: tuple[np.ndarray, ...]
    starts: tuple[np.ndarray, ...]

    @classmethod
    def build(cls, words: np.ndarray) -> HammingIndex:
        """Index `words` (see `as_words`); O(N) memory per chunk."""
        order, starts = [], []
        for c in range(words.shape[1] * 4):
            key = _chunk(words, c)
            order.append(np.argsort(key, kind="stable").astype(np.int64))
            counts = np.bincount(key, minlength=_BUCKETS)
            starts.append(np.concatenate(([0], np.cumsum(counts))).astype(np.int64))
        return cls(words, tuple(order), tuple(starts))

    @property
    def chunks(self) -> int:
        return len(self.order)

    def search(self, queries: np.ndarray, threshold: int, *, self_offset: int | None = None) -> Pairs:
        """Pairs (query row, index row, distance) with distance <= threshold.

        With `self_offset`, the queries are rows `self_offset ...` of the index itself and only
        pairs with index row > query row are returned (each unordered pair once, no self-pairs).
        """
        if queries.shape[1] != self.words.shape[1]:
            raise ValueError("queries and index have hashes of different lengths")
        radius = threshold // self.chunks
        masks = _probe_masks(radius)
        load = self.chunks * len(masks) * max(1.0, len(self.words) / _BUCKETS)
        block = max(16, int(_CANDIDATES_PER_BLOCK / load))
        found: list[Pairs] = []
        for lo in range(0, len(queries), block):
            found.append(self._search_block(queries[lo : lo + block], lo, threshold, radius, masks, self_offset))
        return _concat(found)

    def _search_block(
        self, q: np.ndarray, lo: int, threshold: int, radius: int, masks: np.ndarray, self_offset: int | None
    ) -> Pairs:
        out: list[Pairs] = []
        for c in range(self.chunks):
            probes = (_chunk(q, c)[:, None] ^ masks[None, :]).ravel()
            begin, end = self.starts[c][probes], self.starts[c][probes + 1]
            counts = end - begin
            total = int(counts.sum())
            if total == 0:
                continue
            qrow = np.repeat(np.repeat(np.arange(len(q)), len(masks)), counts)
            offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            cand = self.order[c][np.repeat(begin, counts) + offsets]
            if self_offset is not None:
                keep = cand > qrow + lo + self_offset
                qrow, cand = qrow[keep], cand[keep]
            x = q[qrow] ^ self.words[cand]
            dist = np.bitwise_count(x).sum(axis=1, dtype=np.int64)
            keep = dist <= threshold
            qrow, cand, x, dist = qrow[keep], cand[keep], x[keep], dist[keep]
            for earlier in range(c):  # found by an earlier chunk already
                first = np.bitwise_count(_chunk(x, earlier)) <= radius
                qrow, cand, x, dist = qrow[~first], cand[~first], x[~first], dist[~first]
            out.append((qrow + lo, cand, dist))
        return _concat(out)


def hamming_pairs(
    words: np.ndarray,
    threshold: int,
    index_words: np.ndarray | None = None,
    *,
    start: int = 0,
    stop: int | None = None,
    index: HammingIndex | None = None,
) -> Pairs:
    """Exact range search for query rows [start, stop).

    Within one set (`index_words` None): pairs (i, j) with i < j. Across sets: every (query, index)
    pair. Results are sorted by (query row, index row). Pass a built `index` to reuse it across
    ranges (the shardable form the flows use).
    """
    if not 0 <= threshold <= 64 * words.shape[1]:
        raise ValueError(f"threshold must be between 0 and {64 * words.shape[1]} bits, not {threshold}")
    within = index_words is None
    index = index or HammingIndex.build(words if within else index_words)  # type: ignore[arg-type]
    stop = len(words) if stop is None else stop
    qi, ij, d = index.search(words[start:stop], threshold, self_offset=start if within else None)
    qi = qi + start
    order = np.lexsort((ij, qi))
    return qi[order], ij[order], d[order]


def brute_force_pairs(words: np.ndarray, threshold: int, index_words: np.ndarray | None = None) -> Pairs:
    """Reference all-pairs scan in blocks (for tests and benchmarks)."""
    other = words if index_words is None else index_words
    out: list[Pairs] = []
    for lo in range(0, len(words), 256):
        q = words[lo : lo + 256]
        dist = np.bitwise_count(q[:, None, :] ^ other[None, :, :]).sum(axis=2, dtype=np.int64)
        qi, ij = np.nonzero(dist <= threshold)
        qi = qi + lo
        if index_words is None:
            keep = ij > qi
            qi, ij = qi[keep], ij[keep]
        out.append((qi, ij, dist[qi - lo, ij]))
    qi, ij, d = _concat(out)
    order = np.lexsort((ij, qi))
    return qi[order], ij[order], d[order]


def _concat(parts: list[Pairs]) -> Pairs:
    if not parts:
        empty = np.zeros(0, np.int64)
        return empty, empty.copy(), empty.copy()
    return (np.concatenate([p[0] for p in parts]).astype(np.int64),
            np.concatenate([p[1] for p in parts]).astype(np.int64),
            np.concatenate([p[2] for p in parts]).astype(np.int64))
