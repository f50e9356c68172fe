"""Exact similarity search: Hamming range search over hashes (cosine search joins it later)."""

from dupflow.index.hamming import (
    Block,
    HammingIndex,
    Pairs,
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
    "HammingIndex",
    "Pairs",
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
