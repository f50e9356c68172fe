"""Tiled cosine search equals brute force, within and across sets, whole or split into blocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupflow.index.blocks import Block
from dupflow.index.cosine import cosine_pairs, normalized

MARGIN = 1e-4  # pairs this close to the threshold may fall either side in float32 arithmetic


def _brute(a: np.ndarray, b: np.ndarray | None, threshold: float) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(pairs surely in, pairs near the threshold) from the full matrix in float64."""
    other = a if b is None else b
    sims = a.astype(np.float64) @ other.astype(np.float64).T
    i, j = np.nonzero(sims >= threshold - MARGIN)
    pairs = [(int(x), int(y)) for x, y in zip(i, j, strict=True) if b is not None or x < y]
    near = {p for p in pairs if abs(sims[p] - threshold) < MARGIN}
    return set(pairs) - near, near


def _clustered(seed: int, n: int, dim: int) -> np.ndarray:
    """Rows around a few centres, so that many pairs are similar and many are not."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 5), dim))
    return normalized(centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, dim)))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 70), m=st.integers(1, 40), dim=st.integers(1, 24),
       threshold=st.floats(-0.5, 0.99), rows=st.integers(1, 16), cols=st.integers(1, 33), of=st.integers(1, 5))
def test_tiled_search_equals_brute_force(seed: int, n: int, m: int, dim: int, threshold: float, rows: int,
                                          cols: int, of: int) -> None:
    a, b = _clustered(seed, n, dim), _clustered(seed + 1, m, dim)
    for other in (None, b):
        sure, near = _brute(a, other, threshold)
        parts = [cosine_pairs(a, threshold, other, block=Block(k, of), rows=rows, cols=cols) for k in range(of)]
        got = [(int(i), int(j)) for p in parts for i, j in zip(p.i, p.j, strict=True)]
        assert len(got) == len(set(got))  # every pair once, from exactly one block
        assert sure <= set(got) <= sure | near
        whole = cosine_pairs(a, threshold, other, rows=rows, cols=cols)
        assert sorted(got) == [(int(i), int(j)) for i, j in zip(whole.i, whole.j, strict=True)]
        assert np.all(whole.similarity >= threshold)


def test_float16_rows_find_the_float32_pairs_away_from_the_threshold() -> None:
    a = _clustered(7, 300, 64)
    half = a.astype(np.float16)
    for threshold in (0.6, 0.8, 0.95):
        exact = cosine_pairs(a, threshold, rows=64, cols=100)
        compact = cosine_pairs(half, threshold, rows=64, cols=100)
        assert compact.similarity.dtype == np.float32
        assert len(exact.i) >= 10
        sims = a.astype(np.float64) @ a.astype(np.float64).T
        clear = {(int(i), int(j)) for i, j in zip(*np.nonzero(sims >= threshold + 2e-3), strict=True) if i < j}
        got = set(zip(compact.i.tolist(), compact.j.tolist(), strict=True))
        assert clear <= got <= set(zip(exact.i.tolist(), exact.j.tolist(), strict=True)) | _near(sims, threshold)
        assert np.abs(compact.similarity - sims[compact.i, compact.j]).max() < 2e-3


def _near(sims: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    i, j = np.nonzero(np.abs(sims - threshold) < 2e-3)
    return {(int(x), int(y)) for x, y in zip(i, j, strict=True) if x < y}


def test_across_equals_the_swapped_search() -> None:
    a, b = _clustered(1, 50, 8), _clustered(2, 30, 8)
    ab, ba = cosine_pairs(a, 0.8, b, rows=7, cols=9), cosine_pairs(b, 0.8, a, rows=5, cols=11)
    assert sorted(zip(ab.i.tolist(), ab.j.tolist(), strict=True)) == sorted(
        zip(ba.j.tolist(), ba.i.tolist(), strict=True))


def test_bad_embeddings_and_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN, infinite or all-zero"):
        normalized(np.array([[1.0, 0.0], [np.nan, 1.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="2-D"):
        normalized(np.ones(3))
    with pytest.raises(ValueError, match="dimensions"):
        cosine_pairs(normalized(np.ones((2, 3))), 0.9, normalized(np.ones((2, 4))))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        cosine_pairs(normalized(np.ones((2, 3))), 1.5)
