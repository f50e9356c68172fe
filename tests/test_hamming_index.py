"""The multi-index Hamming search returns exactly the brute-force pair set."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupflow.index import (
    Block,
    HammingIndex,
    QueryRows,
    as_words,
    brute_force_pairs,
    concat_pairs,
    hamming_pairs,
    plan_search,
    search_block,
    search_blocks,
    sort_pairs,
)


@st.composite
def hash_sets(draw: st.DrawFn, words: int = 1) -> np.ndarray:
    """Uniform or clustered (few centres, few flipped bits: uneven buckets, like real hashes)."""
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(0, 160))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        return rng.integers(0, 2**64 - 1, (n, words), dtype=np.uint64, endpoint=True)
    centres = rng.integers(0, 2**64 - 1, (max(1, n // 20), words), dtype=np.uint64, endpoint=True)
    out = centres[rng.integers(0, len(centres), n)]
    for _ in range(draw(st.integers(0, 12))):  # flip random bits
        bit = rng.integers(0, 64, (n, words)).astype(np.uint64)
        out = out ^ (np.left_shift(np.uint64(1), bit) * rng.integers(0, 2, (n, words)).astype(np.uint64))
    return out


def _same(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@settings(max_examples=60, deadline=None)
@given(hash_sets(), st.integers(0, 16))
def test_within_equals_brute_force_no_self_pairs(words: np.ndarray, t: int) -> None:
    got = hamming_pairs(words, t)
    assert _same(got, brute_force_pairs(words, t))
    assert np.all(got[0] < got[1])  # each unordered pair once, never (i, i)


@settings(max_examples=40, deadline=None)
@given(hash_sets(), hash_sets(), st.integers(0, 16))
def test_across_equals_brute_force_and_is_symmetric(a: np.ndarray, b: np.ndarray, t: int) -> None:
    ab = hamming_pairs(a, t, b)
    assert _same(ab, brute_force_pairs(a, t, b))
    ba = hamming_pairs(b, t, a)
    swapped = sorted(zip(ba[1].tolist(), ba[0].tolist(), ba[2].tolist(), strict=True))
    assert swapped == sorted(zip(ab[0].tolist(), ab[1].tolist(), ab[2].tolist(), strict=True))


@settings(max_examples=30, deadline=None)
@given(hash_sets(), st.integers(0, 15))
def test_larger_threshold_never_loses_a_pair(words: np.ndarray, t: int) -> None:
    small = set(zip(*hamming_pairs(words, t)[:2], strict=True))
    large = set(zip(*hamming_pairs(words, t + 1)[:2], strict=True))
    assert small <= large


@settings(max_examples=20, deadline=None)
@given(hash_sets(words=4), st.integers(0, 40))
def test_256_bit_hashes(words: np.ndarray, t: int) -> None:
    assert _same(hamming_pairs(words, t), brute_force_pairs(words, t))


@pytest.mark.parametrize("across", [False, True])
def test_blocks_partition_the_work(across: bool) -> None:
    rng = np.random.default_rng(5)
    words = rng.integers(0, 2**64 - 1, (300, 1), dtype=np.uint64, endpoint=True)
    words[150:] = words[:150] ^ np.uint64(0b111)
    other = words[::-1].copy() if across else None
    parts = [hamming_pairs(words, 6, other, block=Block(k, 7)) for k in range(7)]
    joined = sorted(zip(*(np.concatenate([p[k] for p in parts]).tolist() for k in range(3)), strict=True))
    whole = hamming_pairs(words, 6, other)
    assert joined == sorted(zip(*(x.tolist() for x in whole), strict=True))
    assert len(joined) >= 150


def test_a_constant_chunk_is_skipped_and_the_search_stays_exact() -> None:
    rng = np.random.default_rng(9)
    words = rng.integers(0, 2**64 - 1, (8000, 1), dtype=np.uint64, endpoint=True) & ~np.uint64(0xFFFF)
    words[4000:] = words[:4000] ^ np.uint64(1 << 40 | 1 << 20 | 1)
    plan = plan_search(10, words)
    assert plan.radii[0] == -1  # the 16 bits that never vary are not probed
    assert np.all(plan.radii[1:] >= 0)
    assert int(np.sum(plan.radii + 1)) > 10
    got, want = hamming_pairs(words, 10), brute_force_pairs(words, 10)
    assert all(np.array_equal(x, y) for x, y in zip(got, want, strict=True))
    assert len(got.a) >= 4000


@settings(max_examples=40, deadline=None)
@given(hash_sets(), st.integers(0, 64))
def test_every_plan_covers_its_threshold(words: np.ndarray, t: int) -> None:
    plan = plan_search(t, words)
    assert int(np.sum(plan.radii + 1)) > t
    assert np.all(plan.radii >= -1)
    assert np.all(plan.radii <= 16)


def test_threshold_outside_the_hash_is_refused() -> None:
    words = np.zeros((3, 1), np.uint64)
    with pytest.raises(ValueError, match="between 0 and 64"):
        plan_search(65, words)


def test_words_from_arrow_columns() -> None:
    ints = pa.array([1, 2**64 - 1], pa.uint64())
    assert as_words(ints).tolist() == [[1], [2**64 - 1]]
    binary = pa.array([bytes(range(16)), bytes(16)], pa.binary(16))
    assert as_words(binary)[0].tolist() == [0x0001020304050607, 0x08090A0B0C0D0E0F]
    with pytest.raises(ValueError, match="nulls"):
        as_words(pa.array([1, None], pa.uint64()))


@settings(max_examples=40, deadline=None)
@given(hash_sets(), hash_sets(), st.integers(0, 16), st.integers(1, 6), st.integers(1, 4))
def test_a_blocks_query_part_gives_the_whole_query_index_pairs(queries: np.ndarray, index_words: np.ndarray, t: int,
                                                              of: int, split: int) -> None:
    plan = plan_search(t, index_words, queries)
    index, whole = HammingIndex.build(index_words, plan), HammingIndex.build(queries, plan)
    rows = QueryRows.of(queries, plan)
    held = [0] * len(plan.radii)
    for k in range(of):
        block = Block(k, of)
        part = rows.part(block)
        assert _same(search_block(index, block, part), search_block(index, block, whole))  # same pairs, same order
        for c in range(len(plan.radii)):
            held[c] += int(part.starts[c, -1])
        subs = [Block(k * split + s, of * split) for s in range(split)]  # sub-blocks: the same buckets together
        got = sort_pairs(concat_pairs([search_block(index, b, rows.part(b)) for b in subs]))
        assert _same(got, sort_pairs(search_block(index, block, whole)))
        with pytest.raises(ValueError, match="holds the rows of block"):
            part.bucket_ranges(Block(k, of + 1))
    probed = plan.radii >= 0
    assert all(h == len(queries) for h, p in zip(held, probed, strict=True) if p)  # each row in one part a chunk


@pytest.mark.parametrize("across", [False, True])
def test_a_block_sorts_only_the_chunks_it_reaches(across: bool) -> None:
    rng = np.random.default_rng(11)
    words = rng.integers(0, 2**64 - 1, (3000, 1), dtype=np.uint64, endpoint=True)
    words[1500:] = words[:1500] ^ np.uint64(0b1011)
    queries = words[::-1].copy()
    plan = plan_search(10, words, queries if across else None)
    probed = set(np.flatnonzero(plan.radii >= 0).tolist())
    assert len(probed) == 4
    found, sorted_by = [], set()
    for k in range(4):
        index = HammingIndex.build(words, plan)  # a worker's own copy: it runs block k only
        part = QueryRows.of(queries, plan).part(Block(k, 4)) if across else None
        found.append(search_block(index, Block(k, 4), part))
        made = {c for c, chunk in enumerate(index.sorted_chunks) if chunk is not None}
        assert 1 <= len(made) <= 2, made  # a quarter of the work: one chunk, or the ends of two
        sorted_by |= made
    assert sorted_by == probed
    got = sort_pairs(concat_pairs(found))
    assert _same(got, brute_force_pairs(queries, 10, words) if across else brute_force_pairs(words, 10))


@settings(max_examples=30, deadline=None)
@given(hash_sets(), hash_sets(), st.integers(0, 12), st.integers(0, 12), st.integers(1, 4))
def test_an_index_for_another_plan_shares_its_sorted_chunks_and_finds_that_plans_pairs(
        queries: np.ndarray, index_words: np.ndarray, t1: int, t2: int, blocks: int) -> None:
    first = HammingIndex.build(index_words, plan_search(t1, index_words, queries))
    search_blocks(first, HammingIndex.build(queries, first.plan), blocks=blocks, threads=2)
    plan = plan_search(t2, index_words, queries)
    other = first.with_plan(plan)
    assert other.sorted_chunks is first.sorted_chunks
    parts = [search_block(other, Block(k, blocks), QueryRows.of(queries, plan).part(Block(k, blocks)))
             for k in range(blocks)]
    assert _same(sort_pairs(concat_pairs(parts)), brute_force_pairs(queries, t2, index_words))


@settings(max_examples=30, deadline=None)
@given(hash_sets(words=2), st.integers(0, 20))
def test_a_sorted_chunk_lists_rows_by_chunk_value_then_row_number(words: np.ndarray, t: int) -> None:
    plan = plan_search(t, words)
    index, queries = HammingIndex.build(words, plan), QueryRows.of(words, plan)
    for c in np.flatnonzero(plan.radii >= 0).tolist():
        value = (words[:, c // 4] >> np.uint64(16 * (c % 4))) & np.uint64(0xFFFF)
        expected = np.argsort(value, kind="stable")
        assert np.array_equal(index.starts[c, 1:], np.cumsum(np.bincount(value.astype(np.int64), minlength=65536)))
        sorted_words, rows = index.chunk(c)
        assert np.array_equal(rows, expected)
        assert np.array_equal(sorted_words, words[expected])
        whole = queries.part(Block(0, 1)).chunk(c)[1]
        assert np.array_equal(whole, expected)


def test_a_chunk_without_bucket_offsets_is_refused_rather_than_sorted_into_garbage() -> None:
    from dupflow.index.hamming import _order_by_chunk

    words = np.arange(10, dtype=np.uint64).reshape(-1, 1)
    with pytest.raises(ValueError, match="no bucket offsets"):
        _order_by_chunk(words, 0, np.zeros(65537, np.int64))  # a chunk the plan skips has all-zero offsets
