"""A unit of search work: block `k` of `of`, shared by the Hamming and the cosine index."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Block"]


class Block(NamedTuple):
    """Block `k` of `of`: one independent share of a search (buckets for Hamming, row tiles for cosine).
    Threads here, or Dask tasks on a cluster, each take one."""

    k: int
    of: int
