"""Groups from pairs: connected components of the pair graph, numbered by their first image."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["components", "group_lists"]


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Group id per image of `n` (-1: in no pair), for the edges a[i]-b[i]; groups are numbered in
    the order of their first (smallest) image id. Only the images in some pair are in the graph: at 10M
    images, most in no pair, labelling every image cost seconds per call."""
    group_of = np.full(n, -1, np.int64)
    if n == 0 or len(a) == 0:
        return group_of
    # a mask and its running count number the paired images in id order: np.unique's sort of the 2 x pairs
    # ends and of the labels cost ~1.7 s a call at 10M images
    paired = np.zeros(n, bool)
    paired[a] = True
    paired[b] = True
    nodes = np.flatnonzero(paired)  # ascending image ids
    node_of = np.cumsum(paired) - 1
    m = len(nodes)
    graph = coo_matrix((np.ones(len(a), np.int8), (node_of[a], node_of[b])), shape=(m, m))
    del paired, node_of
    count, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels, minlength=count)
    first = np.full(count, m, np.int64)
    np.minimum.at(first, labels, np.arange(m))  # first node (smallest image id) of each label
    order = np.argsort(first, kind="stable")
    in_group = sizes[order] >= 2
    number = np.full(len(first), -1, np.int64)
    number[order[in_group]] = np.arange(int(in_group.sum()))
    group_of[nodes] = number[labels]
    return group_of


def group_lists(group_of: np.ndarray) -> list[list[int]]:
    """The members of each group (image ids, ascending), groups in their numbering order."""
    ids = np.flatnonzero(group_of >= 0)
    if not len(ids):
        return []
    order = np.argsort(group_of[ids], kind="stable")
    ids, lab = ids[order], group_of[ids][order]
    bounds = [0, *(np.flatnonzero(lab[1:] != lab[:-1]) + 1).tolist(), len(ids)]
    flat = ids.tolist()  # one conversion, then list slices: groups are many and small
    return [flat[s:e] for s, e in pairwise(bounds)]
