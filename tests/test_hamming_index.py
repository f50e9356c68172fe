"""The multi-index Hamming search returns exactly the brute-force pair set."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupflow.index import as_words, brute_force_pairs, hamming_pairs


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


def test_query_ranges_partition_the_work() -> None:
    rng = np.random.default_rng(5)
    words = rng.integers(0, 2**64 - 1, (300, 1), dtype=np.uint64, endpoint=True)
    words[150:] = words[:150] ^ np.uint64(0b111)
    parts = [hamming_pairs(words, 6, start=s, stop=s + 70) for s in range(0, 300, 70)]
    joined = tuple(np.concatenate([p[k] for p in parts]) for k in range(3))
    assert _same(joined, hamming_pairs(words, 6)) and len(joined[0]) >= 150


def test_words_from_arrow_columns() -> None:
    ints = pa.array([1, 2**64 - 1], pa.uint64())
    assert as_words(ints).tolist() == [[1], [2**64 - 1]]
    binary = pa.array([bytes(range(16)), bytes(16)], pa.binary(16))
    assert as_words(binary)[0].tolist() == [0x0001020304050607, 0x08090A0B0C0D0E0F]
    with pytest.raises(ValueError, match="nulls"):
        as_words(pa.array([1, None], pa.uint64()))
