"""Exact Hamming range search by multi-index hashing with a compiled bucket join; memory O(N + pairs).

Each hash (one or more 64-bit words) is cut into m 16-bit chunks. Two hashes within distance t
differ by at most r_c bits on at least one chunk c whenever sum(r_c + 1) > t (pigeonhole), so the
radii are spread as evenly as possible with sum(r_c) = t - m + 1 (a radius of -1 skips a chunk:
at t = 0 one chunk suffices). Per chunk, both sides are sorted by chunk value (a counting-sort
table of 65,536 buckets), and every bucket b is joined with the buckets b ^ mask for each mask of
at most r_c bits; candidates are verified with XOR + popcount over the whole hash. A pair is kept
only by the first chunk that can find it, so no de-duplication pass is needed.

The join is split into blocks (`Block`): independent units that threads here, or Dask workers in the
flows, run in any order; their union is the exact answer. The probed chunks are laid end to end, each
as long as its rows times its expected work (`SearchPlan.units`), and a block is one even share of that
line: a run of buckets in one chunk or a few. A chunk's sorted copy is made when a block first needs
it, so a worker running a few of many blocks sorts and holds only their chunks. The kernel is compiled
by numba and releases the GIL.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, cast

import numpy as np
import pyarrow as pa
from numba import njit, types
from numba.extending import intrinsic

from dupflow.index.blocks import Block

__all__ = [
    "HammingIndex",
    "Pairs",
    "QueryRows",
    "SearchPlan",
    "as_words",
    "brute_force_pairs",
    "concat_pairs",
    "hamming_pairs",
    "plan_search",
    "search_block",
    "search_blocks",
    "sort_pairs",
]

CHUNK_BITS = 16
_BUCKETS = 1 << CHUNK_BITS


class Pairs(NamedTuple):
    """Matches as parallel arrays: query row, index row, Hamming distance."""

    a: np.ndarray
    b: np.ndarray
    distance: np.ndarray


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


_UNITS = 1000  # work units a row of the costliest chunk counts for (`SearchPlan.units`)


@dataclass(frozen=True)
class SearchPlan:
    """What every block of one search shares: the threshold, each chunk's probe radius and the work its
    probes are expected to cost (`plan_search`'s estimate; None: the same for every probed chunk)."""

    threshold: int
    radii: np.ndarray  # (C,) int64; -1 skips the chunk
    work: np.ndarray | None = None  # (C,) float64

    def __post_init__(self) -> None:
        if int(np.sum(self.radii + 1)) <= self.threshold:
            raise ValueError("chunk radii do not cover the threshold: some pairs would be missed")

    def units(self) -> np.ndarray:
        """(C,) int64: how many work units one row of each chunk counts for when the search is cut into
        blocks (1 to _UNITS for a probed chunk, 0 for a skipped one)."""
        probed = self.radii >= 0
        if self.work is None or not probed.any():
            return probed.astype(np.int64)
        work = np.where(probed, np.maximum(self.work, 0.0), 0.0)
        top = float(work.max()) or 1.0
        return np.where(probed, np.maximum(1, np.round(_UNITS * work / top)), 0).astype(np.int64)


_PROBE_COST = 2.0  # one bucket probe, in units of one candidate check


def plan_search(threshold: int, index_words: np.ndarray, query_words: np.ndarray | None = None) -> SearchPlan:
    """Choose chunk radii that minimise the expected work on these hashes.

    Real hashes are not uniform: a chunk whose bits barely vary puts most rows in a few buckets,
    and probing it costs nearly N^2. For each chunk the number of candidate pairs at radius r is
    sum over masks m with popcount(m) <= r of the XOR-correlation of the two bucket histograms,
    computed for all m at once with a Walsh-Hadamard transform. A small dynamic programme then
    picks radii with sum(r_c + 1) > threshold (so no pair is missed) at the least total cost.
    """
    index_words = _as_2d(index_words)
    n_bits = 64 * index_words.shape[1]
    if not 0 <= threshold <= n_bits:
        raise ValueError(f"threshold must be between 0 and {n_bits} bits, not {threshold}")
    q = index_words if query_words is None else _as_2d(query_words)
    chunks = n_bits // CHUNK_BITS
    _, upto = _masks()
    group = np.bitwise_count(np.arange(_BUCKETS)).astype(np.int64)
    cost = np.empty((chunks, CHUNK_BITS + 2))  # column r + 1 for radius r
    every = np.arange(chunks)
    index_counts = _histograms(index_words, every).astype(np.float64)
    query_counts = index_counts if q is index_words else _histograms(q, every).astype(np.float64)
    for c in range(chunks):
        hx, hq = index_counts[c], query_counts[c]
        corr = _walsh_hadamard(_walsh_hadamard(hq) * _walsh_hadamard(hx)) / _BUCKETS
        candidates = np.cumsum(np.bincount(group, weights=corr, minlength=CHUNK_BITS + 1))
        cost[c, 0] = 0.0
        probes = np.count_nonzero(hq)
        cost[c, 1:] = candidates + _PROBE_COST * probes * upto
    radii = _cheapest_radii(cost, threshold + 1)
    return SearchPlan(threshold, radii, cost[np.arange(chunks), radii + 1])


def _walsh_hadamard(h: np.ndarray) -> np.ndarray:
    """Unnormalised Walsh-Hadamard transform of a length-65,536 vector."""
    x = h.copy()
    for bit in range(CHUNK_BITS):
        x = x.reshape(-1, 2, 1 << bit)
        x = np.concatenate((x[:, :1] + x[:, 1:], x[:, :1] - x[:, 1:]), axis=1)
    return x.reshape(-1)


def _cheapest_radii(cost: np.ndarray, need: int) -> np.ndarray:
    """Radii r_c (column r_c + 1 of `cost`) with sum(r_c + 1) >= need at the least total cost."""
    chunks, options = cost.shape
    best = np.full(need + 1, np.inf)  # best[s]: least cost so far with coverage min(s, need)
    best[0] = 0.0
    choice = np.zeros((chunks, need + 1), np.int64)
    for c in range(chunks):
        nxt = np.full(need + 1, np.inf)
        for s in range(need + 1):
            if not np.isfinite(best[s]):
                continue
            for k in range(options):
                s2 = min(need, s + k)
                if best[s] + cost[c, k] < nxt[s2]:
                    nxt[s2] = best[s] + cost[c, k]
                    choice[c, s2] = k * (need + 1) + s
        best = nxt
    radii = np.empty(chunks, np.int64)
    s = need
    for c in range(chunks - 1, -1, -1):
        k, s = divmod(int(choice[c, s]), need + 1)
        radii[c] = k - 1
    return radii


@functools.cache
def _masks() -> tuple[np.ndarray, np.ndarray]:
    """All 16-bit masks ordered by popcount, and how many have at most r bits (index r)."""
    values = np.arange(_BUCKETS, dtype=np.int64)
    bits = np.bitwise_count(values)
    order = np.argsort(bits, kind="stable")
    upto = np.cumsum(np.bincount(bits, minlength=CHUNK_BITS + 1)).astype(np.int64)
    return values[order], upto


def _row_ids(n: int) -> type[np.signedinteger[Any]]:
    """The narrowest type that numbers n rows: a chunk's row numbers are a third of its bytes."""
    return np.int32 if n < 2**31 else np.int64


@dataclass(frozen=True, eq=False)
class HammingIndex:
    """One side of a join: the hashes, their bucket offsets in each chunk, and (`chunk`) the hashes
    sorted by each chunk's value, made when a block first needs them."""

    words: np.ndarray  # (N, W) uint64
    plan: SearchPlan
    starts: np.ndarray  # (C, 65537) int64, bucket b holds sorted rows starts[c, b] : starts[c, b + 1]
    sorted_chunks: list[tuple[np.ndarray, np.ndarray] | None]  # per chunk, once made: see `chunk`
    locks: tuple[threading.Lock, ...]  # one per chunk: two blocks never sort the same chunk twice

    @classmethod
    def build(cls, words: np.ndarray, plan: SearchPlan) -> HammingIndex:
        """Index `words` (see `as_words`) for `plan`: here only the bucket counts of each probed chunk;
        each chunk's sorted copy (12-16 bytes a row for one 64-bit word) is made by `chunk`."""
        words = np.ascontiguousarray(_as_2d(words))
        chunks = len(plan.radii)
        if chunks != words.shape[1] * 64 // CHUNK_BITS:
            raise ValueError("the plan was made for hashes of another length")
        return cls(words, plan, _bucket_starts(words, plan), [None] * chunks,
                   tuple(threading.Lock() for _ in range(chunks)))

    def __len__(self) -> int:
        return len(self.words)

    def chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows ordered by chunk c's value: their words (N, W) and row numbers (N,), bucket by bucket
        as `starts[c]` says, rows ascending within a bucket. Sorted on first use and kept."""
        made = self.sorted_chunks[c]
        if made is None:
            with self.locks[c]:
                made = self.sorted_chunks[c]
                if made is None:
                    order = _order_by_chunk(self.words, c, self.starts[c])
                    made = (self.words[order], order)
                    self.sorted_chunks[c] = made
        return made

    def bucket_ranges(self, block: Block) -> np.ndarray:
        """(C, 2) bucket range of `block` in each chunk (see the module's docstring)."""
        return _bucket_ranges(self.starts, len(self.words), block, self.plan)

    def with_plan(self, plan: SearchPlan) -> HammingIndex:
        """This index for another plan over the same hashes: the sorted chunks either makes serve both."""
        if len(plan.radii) != len(self.plan.radii):
            raise ValueError("the plan was made for hashes of another length")
        return replace(self, plan=plan, starts=_bucket_starts(self.words, plan))


def _bucket_starts(words: np.ndarray, plan: SearchPlan) -> np.ndarray:
    """(C, 65537) bucket offsets of `words` in each probed chunk (zeros for a skipped chunk)."""
    starts = np.zeros((len(plan.radii), _BUCKETS + 1), np.int64)
    probed = np.flatnonzero(plan.radii >= 0)
    starts[probed, 1:] = np.cumsum(_histograms(words, probed), axis=1)
    return starts


def _histograms(words: np.ndarray, chunks: np.ndarray) -> np.ndarray:
    """(len(chunks), 65536) int64: how many rows of `words` have each value in each of these chunks, counted in
    one compiled pass (a cast and a bincount per chunk read the words four times: 0.8 s a chunk at 70M rows)."""
    counts: np.ndarray = _count_chunks(np.ascontiguousarray(_as_2d(words)), np.asarray(chunks, np.int64))
    return counts


def _order_by_chunk(words: np.ndarray, c: int, starts: np.ndarray) -> np.ndarray:
    """The rows ordered by chunk c's value, ascending within a value (a stable sort), given the chunk's bucket
    offsets: one compiled counting-sort pass, 6x NumPy's stable argsort of the extracted 16-bit keys."""
    if starts[-1] != len(words):
        raise ValueError(f"chunk {c} has no bucket offsets for these {len(words):,} rows (a chunk the plan skips)")
    order = np.empty(len(words), _row_ids(len(words)))
    _scatter_rows(words, c, starts, order)
    return order


@dataclass(frozen=True, eq=False)
class QueryRows:
    """The query side of an across join, indexed one block at a time (`part`): a block's index holds only
    the rows in its own buckets, so a process running some of the blocks never copies the rest. Each
    chunk's row order (by chunk value; 4 bytes a row) is sorted once, when a part first needs that chunk:
    rescanning a side of 70M mirrored pHashes for every part cost more than the search it fed. A part
    gives `search_block` the same pairs, in the same order, as the whole query index would."""

    words: np.ndarray  # (N, W) uint64
    plan: SearchPlan
    starts: np.ndarray  # (C, 65537) int64: the whole side's bucket offsets, as HammingIndex.starts
    orders: list[np.ndarray | None]  # per chunk, once made: the rows ordered by its value, stable
    locks: tuple[threading.Lock, ...]  # one per chunk

    @classmethod
    def of(cls, words: np.ndarray, plan: SearchPlan) -> QueryRows:
        """`words` as queries for `plan`: only the bucket counts are computed here."""
        words = np.ascontiguousarray(_as_2d(words))
        chunks = len(plan.radii)
        return cls(words, plan, _bucket_starts(words, plan), [None] * chunks,
                   tuple(threading.Lock() for _ in range(chunks)))

    def __len__(self) -> int:
        return len(self.words)

    def rows_in(self, block: Block) -> int:
        """How many row entries (rows times chunks) `part(block)` holds."""
        ranges = _bucket_ranges(self.starts, len(self.words), block, self.plan)
        return int(sum(self.starts[c, hi] - self.starts[c, lo] for c, (lo, hi) in enumerate(ranges.tolist())))

    def _order(self, c: int) -> np.ndarray:
        made = self.orders[c]
        if made is None:
            with self.locks[c]:
                made = self.orders[c]
                if made is None:
                    made = _order_by_chunk(self.words, c, self.starts[c])
                    self.orders[c] = made
        return made

    def part(self, block: Block) -> HammingIndex:
        """The index of the rows in `block`'s buckets, chunk by chunk."""
        ranges = _bucket_ranges(self.starts, len(self.words), block, self.plan)
        chunks = len(self.plan.radii)
        made: list[tuple[np.ndarray, np.ndarray] | None] = []
        starts = np.zeros((chunks, _BUCKETS + 1), np.int64)
        for c in range(chunks):
            rows = np.zeros(0, _row_ids(len(self.words)))
            lo, hi = (int(x) for x in ranges[c])
            if self.plan.radii[c] >= 0 and hi > lo:
                first, last = int(self.starts[c, lo]), int(self.starts[c, hi])
                rows = self._order(c)[first:last]  # bucket by bucket, rows ascending
                starts[c] = np.clip(self.starts[c] - first, 0, last - first)
            made.append((self.words[rows], rows))
        locks = tuple(threading.Lock() for _ in range(chunks))
        return _BlockIndex(self.words, self.plan, starts, made, locks, block, ranges)


@dataclass(frozen=True, eq=False)
class _BlockIndex(HammingIndex):
    """`QueryRows.part`: rows of one block's buckets only, so only that block can be searched from it."""

    block: Block
    ranges: np.ndarray  # (C, 2): the block's bucket range in each chunk

    def bucket_ranges(self, block: Block) -> np.ndarray:
        if block != self.block:
            raise ValueError(f"this index holds the rows of block {self.block.k} of {self.block.of}, not "
                             f"{block.k} of {block.of}")
        return self.ranges


def _bucket_ranges(starts: np.ndarray, n: int, block: Block, plan: SearchPlan) -> np.ndarray:
    """(C, 2) bucket range of `block` in each chunk of a side of `n` rows with these bucket offsets. The
    probed chunks lie end to end, chunk c as n * units[c] long; the block is its even share of that line,
    cut at bucket edges ([0, 0) in a chunk it does not reach). Block k of n, split in s, is the union of
    blocks k*s .. k*s + s - 1 of n*s."""
    if not 0 <= block.k < block.of:
        raise ValueError(f"block {block.k} of {block.of} does not exist")
    units = [int(u) for u in plan.units()]
    total = n * sum(units)
    lo, hi = block.k * total // block.of, (block.k + 1) * total // block.of
    ranges = np.zeros((len(starts), 2), np.int64)
    offset = 0
    for c, unit in enumerate(units):
        if unit:
            rows = [min(max(bound - offset, 0), n * unit) // unit for bound in (lo, hi)]
            if rows[1] > rows[0]:
                ranges[c] = np.searchsorted(starts[c], rows, side="left")
            offset += n * unit
    return ranges


def _as_2d(words: np.ndarray) -> np.ndarray:
    arr = np.asarray(words, dtype=np.uint64)
    return arr.reshape(-1, 1) if arr.ndim == 1 else arr


@intrinsic
def _ctpop(_typingctx: Any, _x: Any) -> Any:
    """The CPU's popcount instruction on a uint64."""
    sig = types.uint64(types.uint64)

    def codegen(_context: Any, builder: Any, _signature: Any, args: Any) -> Any:
        return builder.ctpop(args[0])

    return sig, codegen


_popcount = cast(Callable[[Any], Any], _ctpop)  # called as popcount(x) inside compiled code


@njit(nogil=True, cache=True, inline="always")
def _found_earlier(a, b, c, radii):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """Whether chunk c2 < c would find the pair (a, b): it is kept only by the first chunk that can."""
    for c2 in range(c):
        r2 = radii[c2]
        if r2 >= 0 and _popcount(((a[c2 // 4] ^ b[c2 // 4]) >> np.uint64(16 * (c2 % 4))) & np.uint64(0xFFFF)) <= r2:
            return True
    return False


@njit(nogil=True, cache=True)
def _count_chunks(words, chunks):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled; see _histograms
    counts = np.zeros((len(chunks), _BUCKETS), np.int64)
    for i in range(words.shape[0]):
        for k in range(len(chunks)):
            c = chunks[k]
            counts[k, (words[i, c // 4] >> np.uint64(16 * (c % 4))) & np.uint64(0xFFFF)] += 1
    return counts


@njit(nogil=True, cache=True)
def _scatter_rows(words, c, starts, order):  # type: ignore[no-untyped-def]  # pragma: no cover - see _order_by_chunk
    at = starts[:-1].copy()
    shift = np.uint64(16 * (c % 4))
    for i in range(words.shape[0]):
        b = (words[i, c // 4] >> shift) & np.uint64(0xFFFF)
        order[at[b]] = i
        at[b] += 1


# One flat loop nest on purpose: splitting this hot kernel into helpers costs speed, hence the C901 waiver.
@njit(nogil=True, cache=True)
def _join(  # type: ignore[no-untyped-def]  # noqa: C901  # pragma: no cover - compiled; tested through the wrappers
    qs, qids, qstarts, xs, xids, xstarts, c, radii, masks, upto, b0, b1, threshold, within
):
    """Chunk c's buckets b0 .. b1 - 1 of the queries against the index (both sorted by chunk c)."""
    n_words = qs.shape[1]
    cap = 4096
    out_a = np.empty(cap, np.int64)
    out_b = np.empty(cap, np.int64)
    out_d = np.empty(cap, np.int64)
    n = 0
    n_masks = upto[radii[c]]
    for b in range(b0, b1):
        s0 = qstarts[b]
        s1 = qstarts[b + 1]
        if s0 == s1:
            continue
        for mi in range(n_masks):
            b2 = b ^ masks[mi]
            if within and b2 < b:
                continue
            t0 = xstarts[b2]
            t1 = xstarts[b2 + 1]
            if t0 == t1:
                continue
            for p in range(s0, s1):
                first = p + 1 if (within and b2 == b) else t0
                for q in range(first, t1):
                    d = 0
                    for w in range(n_words):
                        d += _popcount(qs[p, w] ^ xs[q, w])
                    if d > threshold:
                        continue
                    if _found_earlier(qs[p], xs[q], c, radii):
                        continue
                    if n == cap:
                        cap *= 2
                        out_a = np.resize(out_a, cap)
                        out_b = np.resize(out_b, cap)
                        out_d = np.resize(out_d, cap)
                    i = np.int64(qids[p])
                    j = np.int64(xids[q])
                    if within and j < i:
                        i, j = j, i
                    out_a[n] = i
                    out_b[n] = j
                    out_d[n] = d
                    n += 1
    return out_a[:n], out_b[:n], out_d[:n]


def search_block(index: HammingIndex, block: Block, queries: HammingIndex | None = None) -> Pairs:
    """One block of the join, unsorted. Within one set (`queries` None): each pair (i, j), i < j,
    once. Across sets: every (query row, index row) pair, driven by the queries' buckets (`queries`: their
    whole index, or `QueryRows.part(block)`)."""
    within = queries is None
    q = index if queries is None else queries
    if q.words.shape[1] != index.words.shape[1]:
        raise ValueError("queries and index have hashes of different lengths")
    if q.plan is not index.plan:
        raise ValueError("queries and index were built for different search plans")
    ranges = q.bucket_ranges(block)
    if len(q) == 0 or len(index) == 0:
        return concat_pairs([])
    masks, upto = _masks()
    radii = index.plan.radii
    found = []
    for c in np.flatnonzero(radii >= 0).tolist():
        b0, b1 = ranges[c]
        if q.starts[c, b1] == q.starts[c, b0]:
            continue  # no query row of this block in this chunk: its sorted copy is not needed here
        qs, qids = q.chunk(c)
        xs, xids = (qs, qids) if within else index.chunk(c)
        found.append(Pairs(*_join(qs, qids, q.starts[c], xs, xids, index.starts[c], c, radii, masks, upto,
                                  b0, b1, index.plan.threshold, within)))
    return concat_pairs(found)


def search_blocks(
    index: HammingIndex, queries: HammingIndex | None = None, *, blocks: int = 0, threads: int = 0
) -> Pairs:
    """The whole join, run as `blocks` blocks on `threads` threads, sorted by (a, b)."""
    threads = threads or os.cpu_count() or 1
    blocks = blocks or 4 * threads
    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(lambda k: search_block(index, Block(k, blocks), queries), range(blocks)))
    return sort_pairs(concat_pairs(parts))


def hamming_pairs(
    words: np.ndarray, threshold: int, index_words: np.ndarray | None = None, *, block: Block | None = None
) -> Pairs:
    """Exact range search, sorted by (a, b). Within one set (`index_words` None): pairs (i, j) with
    i < j. Across sets: every (query, index) pair. With `block`, only that block's share."""
    plan = plan_search(threshold, words if index_words is None else index_words,
                       None if index_words is None else words)
    index = HammingIndex.build(words if index_words is None else index_words, plan)
    queries = None if index_words is None else HammingIndex.build(words, plan)
    if block is None:
        return search_blocks(index, queries)
    return sort_pairs(search_block(index, block, queries))


def brute_force_pairs(words: np.ndarray, threshold: int, index_words: np.ndarray | None = None) -> Pairs:
    """Reference all-pairs scan in numpy blocks (for tests and benchmarks), sorted by (a, b)."""
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
        out.append(Pairs(qi, ij, dist[qi - lo, ij]))
    return sort_pairs(concat_pairs(out))


def sort_pairs(pairs: Pairs) -> Pairs:
    """Pairs ordered by (a, b)."""
    order = np.lexsort((pairs.b, pairs.a))
    return Pairs(pairs.a[order], pairs.b[order], pairs.distance[order])


def concat_pairs(parts: list[Pairs]) -> Pairs:
    """Pairs from several blocks as one set of arrays."""
    if not parts:
        empty = np.zeros(0, np.int64)
        return Pairs(empty, empty.copy(), empty.copy())
    return Pairs(*(np.concatenate([p[k] for p in parts]).astype(np.int64) for k in range(3)))
