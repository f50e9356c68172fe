"""Exact similarity search: Hamming range search over hashes (cosine search joins it later)."""

from dupflow.index.hamming import HammingIndex, as_words, brute_force_pairs, hamming_pairs

__all__ = ["HammingIndex", "as_words", "brute_force_pairs", "hamming_pairs"]
