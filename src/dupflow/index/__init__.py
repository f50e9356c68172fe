"""Exact similarity search: Hamming range search over hashes, tiled cosine threshold search over embeddings."""

from dupflow.index.blocks import Block
from dupflow.index.cosine import CosinePairs, cosine_pairs, normalized
from dupflow.index.hamming import (
    HammingIndex,
    Pairs,
    QueryRows,
    SearchPlan,
    as_words,
    brute_force_pairs,
    concat_pairs,
    hamming_pairs,
    plan_search,
    search_block,
    search_blocks,
    sort_pairs,
)

__all__ = [
    "Block",
    "CosinePairs",
    "HammingIndex",
    "Pairs",
    "QueryRows",
    "SearchPlan",
    "as_words",
    "brute_force_pairs",
    "concat_pairs",
    "cosine_pairs",
    "hamming_pairs",
    "normalized",
    "plan_search",
    "search_block",
    "search_blocks",
    "sort_pairs",
]
