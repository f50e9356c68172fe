"""Exact cosine threshold search over embeddings, in tiles: never an N x N matrix.

Within one set only the upper triangle is computed (each pair once, i < j); across two sets every
(a, b) pair. Tiles are `rows x cols` float32 matrix products (BLAS), so memory beyond the embeddings
is one tile plus the pairs found. Embeddings may be held as float16 (half the memory): each tile is
widened to float32 for its product, 2-8% slower (bench/results/cosine_speed.md). Work splits into
independent `Block`s of row tiles, assigned round-robin so that the shrinking tiles of the triangle
spread evenly over the blocks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dupflow.index.blocks import Block

__all__ = ["CosinePairs", "cosine_pairs", "normalized"]

WHOLE = Block(0, 1)


class CosinePairs(NamedTuple):
    """Pairs of row numbers with their cosine similarity, sorted by (i, j)."""

    i: np.ndarray  # int64
    j: np.ndarray  # int64
    similarity: np.ndarray  # float32


def normalized(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length as C-contiguous float32; NaN, infinite or all-zero rows are refused."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (rows x dimensions), not {x.ndim}-D")
    bad = ~np.isfinite(x).all(axis=1)
    norms = np.linalg.norm(x, axis=1)
    bad |= norms == 0
    if bad.any():
        raise ValueError(f"{int(bad.sum())} embedding row(s) have NaN, infinite or all-zero values "
                         f"(first: row {int(np.flatnonzero(bad)[0])})")
    out: np.ndarray = x / norms[:, None]
    return out


def cosine_pairs(a: np.ndarray, threshold: float, b: np.ndarray | None = None, *, block: Block = WHOLE,
                 rows: int = 1024, cols: int = 8192) -> CosinePairs:
    """Pairs with cosine similarity >= `threshold`: within `a` (i < j) when `b` is None, else every
    (row of a, row of b). Inputs must be unit rows (`normalized`, or those rounded to float16). Only the row
    tiles of `block` are searched."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"a cosine threshold lies in [-1, 1], not {threshold}")
    within = b is None
    other = a if b is None else b
    if a.shape[1] != other.shape[1]:
        raise ValueError(f"embeddings of {a.shape[1]} and {other.shape[1]} dimensions cannot be compared")
    found_i, found_j, found_s = [], [], []
    for tile, start in enumerate(range(0, len(a), rows)):
        if tile % block.of != block.k:
            continue
        stop = min(start + rows, len(a))
        first_col = start if within else 0
        tile_rows = a[start:stop].astype(np.float32, copy=False)
        for col in range(first_col, len(other), cols):
            sims = tile_rows @ other[col:col + cols].astype(np.float32, copy=False).T
            hit_r, hit_c = np.nonzero(sims >= threshold)
            i, j = hit_r + start, hit_c + col
            if within and col < stop:  # the diagonal tile: keep the upper triangle only
                keep = j > i
                i, j, hit_r, hit_c = i[keep], j[keep], hit_r[keep], hit_c[keep]
            found_i.append(i)
            found_j.append(j)
            found_s.append(sims[hit_r, hit_c])
    if not found_i:
        return CosinePairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    i, j, s = (np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64),
               np.concatenate(found_s).astype(np.float32))
    order = np.lexsort((j, i))
    return CosinePairs(i[order], j[order], s[order])
