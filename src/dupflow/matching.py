"""From encodings to accepted matches, rule by rule, without an N x N matrix.

For each rule, images whose keys (all the rule's hashes or digests) are identical form a class
within their dataset; a class's representative is its first image in (dataset, uri) order. The
exact indexed Hamming search then runs between representatives only: within the matched
datasets, and from them against reference datasets (a corpus is never matched against itself).
A rule's work is a list of joins, each split into the same numbered blocks (`RuleSearch.block`):
the unit a thread here or a Dask worker in the flows runs.

What a rule finds is kept compact: the members of each class, plus the class pairs within the
rule's thresholds. `evidence_pairs` turns them into rows of pairs.parquet: every member of a class
is paired with its representative, and matching classes are paired through their representatives,
so a blank frame copied 100,000 times gives 100,000 rows, not 5 billion; groups.parquet lists
every member of every group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dupflow.errors import ConfigError
from dupflow.hashing import DIHEDRAL
from dupflow.index import Block, HammingIndex, as_words, plan_search, search_block
from dupflow.rules import Rule

__all__ = [
    "ORIENTATIONS",
    "ORIENTATION_MARGIN",
    "ClassPairs",
    "Images",
    "RuleMatch",
    "RuleSearch",
    "evidence_pairs",
    "prepare_search",
]

# Orientation codes: -1 is the picture as stored; k names DIHEDRAL[k].
# Mirrored and rotated copies must be this many bits closer than the rule allows: comparing 7 more
# orientations multiplies chance matches, and (bench/results/thresholds.md, 494 distinct photos)
# pHash within 6 still finds 100% of mirrored and 99% of 90-degree-rotated copies while within 10
# it would add 15 false pairs instead of 9.
ORIENTATION_MARGIN = 4
ORIENTATIONS = tuple(name for name, _ in DIHEDRAL)
_INVERSE = {name: {"rot90": "rot270", "rot270": "rot90"}.get(name, name) for name in ORIENTATIONS}
_INVERSE_CODES = np.array([ORIENTATIONS.index(_INVERSE[name]) for name in ORIENTATIONS], np.int64)


@dataclass(frozen=True)
class Images:
    """The images being matched: valid rows sorted by (dataset, uri); a row number is an image id."""

    table: pa.Table
    datasets: tuple[str, ...]  # matched datasets, in keep-priority order
    dataset_ix: np.ndarray  # (N,) index into `datasets`
    reference: np.ndarray  # (N,) bool: from a reference dataset

    def __len__(self) -> int:
        return int(self.table.num_rows)


class ClassPairs:
    """Matching class pairs of one rule: c1 < c2, distance (first metric), similarity, orientation."""

    __slots__ = ("c1", "c2", "distance", "orientation", "similarity")

    def __init__(self, c1: np.ndarray, c2: np.ndarray, distance: np.ndarray, similarity: np.ndarray,
                 orientation: np.ndarray) -> None:
        self.c1, self.c2, self.distance, self.similarity, self.orientation = c1, c2, distance, similarity, orientation

    def __len__(self) -> int:
        return len(self.c1)

    @classmethod
    def concat(cls, parts: list[ClassPairs]) -> ClassPairs:
        if not parts:
            empty = np.zeros(0, np.int64)
            return cls(empty, empty, empty, np.zeros(0), empty)
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in
                     ("c1", "c2", "distance", "similarity", "orientation")))

    def best_per_pair(self) -> ClassPairs:
        """One row per class pair: the smallest distance, the stored orientation first on ties."""
        order = np.lexsort((self.orientation, self.distance, self.c2, self.c1))
        c1, c2 = self.c1[order], self.c2[order]
        first = np.ones(len(order), bool)
        first[1:] = (c1[1:] != c1[:-1]) | (c2[1:] != c2[:-1])
        keep = order[first]
        return ClassPairs(self.c1[keep], self.c2[keep], self.distance[keep], self.similarity[keep],
                          self.orientation[keep])


@dataclass(frozen=True)
class _Join:
    index: HammingIndex
    queries: HammingIndex | None
    query_class: np.ndarray
    index_class: np.ndarray
    orientation: np.ndarray  # per query row


@dataclass(frozen=True)
class RuleSearch:
    """One rule's classes and joins; `block(Block(k, n))` for k < n together give every match."""

    rule: Rule
    member: np.ndarray  # image ids in the rule's domain
    cls: np.ndarray  # class of each member
    reps: np.ndarray  # representative image id of each class, ascending
    reference_class: np.ndarray  # (C,) bool
    rep_words: tuple[np.ndarray, ...]  # per condition, (C, W) words of the representatives
    joins: tuple[_Join, ...]

    def block(self, block: Block) -> ClassPairs:
        """The class pairs this block of every join finds, verified against all conditions."""
        parts = []
        for join in self.joins:
            found = search_block(join.index, block, join.queries)
            cq = join.query_class[found.a] if join.queries is not None else join.index_class[found.a]
            cx = join.index_class[found.b]
            orient = join.orientation[found.a]
            keep = cq != cx  # a symmetric picture matches its own mirror image
            cq, cx, dist, orient = cq[keep], cx[keep], found.distance[keep], orient[keep]
            lo, hi = np.minimum(cq, cx), np.maximum(cq, cx)
            # the orientation maps the query's picture onto the other; stored as a -> b
            swapped = cq > cx
            orient = np.where(swapped & (orient >= 0), _INVERSE_CODES[np.maximum(orient, 0)], orient)
            similarity = self.rule.conditions[0].similarity(dist)
            ok = np.ones(len(dist), bool)
            for k, cond in enumerate(self.rule.conditions[1:], start=1):
                words = self.rep_words[k]
                d = np.bitwise_count(words[lo] ^ words[hi]).sum(axis=1, dtype=np.int64)
                ok &= d <= cond.max_distance
                similarity = np.minimum(similarity, cond.similarity(d))
            parts.append(ClassPairs(lo[ok], hi[ok], dist[ok], similarity[ok], orient[ok]))
        return ClassPairs.concat(parts)

    def finish(self, parts: list[ClassPairs]) -> RuleMatch:
        """Merge the blocks' results into the rule's match."""
        return RuleMatch(self, ClassPairs.concat(parts).best_per_pair())


@dataclass(frozen=True)
class RuleMatch:
    """What one rule accepted: its classes and its matching class pairs."""

    search: RuleSearch
    pairs: ClassPairs


def _column_words(images: Images, metric: str) -> np.ndarray | None:
    column = images.table[metric]
    if column.null_count == len(column):
        return None
    return as_words(pc.fill_null(column, _zero(column.type)))


def _zero(dtype: pa.DataType) -> pa.Scalar:
    if pa.types.is_fixed_size_binary(dtype):
        return pa.scalar(bytes(dtype.byte_width), dtype)
    return pa.scalar(0, dtype)


def prepare_search(images: Images, rule: Rule, *, orientations: bool = False) -> RuleSearch:
    """Classes of identical keys and the joins between their representatives for `rule`."""
    metrics = [c.metric for c in rule.conditions]
    if orientations and rule.conditions[0].metric == "phash" and len(rule.conditions) > 1:
        raise ConfigError(
            f"rule {rule.label!r}: --orientations applies to rules on pHash alone; "
            "a second hash of a mirrored picture would not match"
        )
    valid = np.ones(len(images), bool)
    for metric in metrics:
        valid &= images.table[metric].is_valid().to_numpy(zero_copy_only=False)
    member = np.flatnonzero(valid)
    words = [w[member] for w in (_column_words(images, m) for m in metrics) if w is not None]
    if len(words) != len(metrics):
        member = np.zeros(0, np.int64)
        words = [np.zeros((0, 1), np.uint64) for _ in metrics]
    key = np.concatenate([images.dataset_ix[member].astype(np.uint64)[:, None], *words], axis=1)
    _, first, cls = np.unique(key, axis=0, return_index=True, return_inverse=True)
    cls = cls.ravel()
    # number classes by their representative (first member: member ids ascend)
    order = np.argsort(member[first], kind="stable")
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    cls = renumber[cls]
    reps = member[first][order]
    reference_class = images.reference[reps]
    rep_words = tuple(w[first][order] for w in words)
    joins = _joins(images, rule, reps, reference_class, rep_words, orientations)
    return RuleSearch(rule, member, cls, reps, reference_class, rep_words, joins)


def _joins(
    images: Images, rule: Rule, reps: np.ndarray, reference_class: np.ndarray,
    rep_words: tuple[np.ndarray, ...], orientations: bool,
) -> tuple[_Join, ...]:
    threshold = rule.conditions[0].max_distance
    words = rep_words[0]
    normal = np.flatnonzero(~reference_class)
    ref = np.flatnonzero(reference_class)
    stored = np.full(len(normal), -1, np.int64)
    joins = []
    if len(normal) > 1:
        plan = plan_search(threshold, words[normal])
        joins.append(_Join(HammingIndex.build(words[normal], plan), None, normal, normal, stored))
    if len(normal) and len(ref):
        plan = plan_search(threshold, words[ref], words[normal])
        joins.append(_Join(HammingIndex.build(words[ref], plan), HammingIndex.build(words[normal], plan),
                           normal, ref, stored))
    if orientations and rule.conditions[0].metric == "phash" and len(normal):
        variants = as_words(images.table["phash_dihedral"].take(pa.array(reps[normal])))
        variants = variants.reshape(len(normal), len(ORIENTATIONS), -1).transpose(1, 0, 2)
        queries = variants.reshape(-1, words.shape[1])
        everyone = np.arange(len(reps))
        plan = plan_search(max(0, threshold - ORIENTATION_MARGIN), words, queries)
        joins.append(_Join(HammingIndex.build(words, plan), HammingIndex.build(queries, plan),
                           np.tile(normal, len(ORIENTATIONS)), everyone,
                           np.repeat(np.arange(len(ORIENTATIONS)), len(normal))))
    return tuple(joins)


def evidence_pairs(match: RuleMatch) -> tuple[np.ndarray, ...]:
    """Image-id pairs (a, b, distance, similarity, orientation) for pairs.parquet: members with their
    class's representative (not within reference datasets), and representatives of matching classes."""
    s = match.search
    mates = (s.member != s.reps[s.cls]) & ~s.reference_class[s.cls]
    a = np.concatenate([s.reps[s.cls[mates]], s.reps[match.pairs.c1]])
    b = np.concatenate([s.member[mates], s.reps[match.pairs.c2]])
    n_mates = int(mates.sum())
    distance = np.concatenate([np.zeros(n_mates, np.int64), match.pairs.distance])
    similarity = np.concatenate([np.ones(n_mates), match.pairs.similarity])
    orientation = np.concatenate([np.full(n_mates, -1, np.int64), match.pairs.orientation])
    return a, b, distance, similarity, orientation
