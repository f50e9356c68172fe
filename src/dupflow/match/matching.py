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

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit
from threadpoolctl import threadpool_limits

from dupflow.encode.hashing import DIHEDRAL, WINDOWS
from dupflow.errors import ConfigError
from dupflow.index import (
    Block,
    HammingIndex,
    QueryRows,
    as_words,
    cosine_pairs,
    plan_search,
    search_block,
)
from dupflow.match.digests import class_digests, key_mix
from dupflow.match.embeddings import Embeddings
from dupflow.match.rules import COSINE, DIGESTS, VERIFIED, Rule, orientable, searches_crops
from dupflow.match.state import RuleState, carry
from dupflow.match.verify import LocalFeatures

__all__ = [
    "ORIENTATIONS",
    "ORIENTATION_MARGIN",
    "VIEWS",
    "WINDOW_MARGIN",
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
# an across join's query side is indexed one part at a time, about this many rows times the probed chunks
# (a part takes whole buckets and holds 4 + 8·W bytes a row a chunk: ~100 MB for 64-bit hashes on 4 chunks,
# plus ~26 bytes a row while it is built); a block over more is searched in sub-blocks, each scanning the
# queries' values of the chunks it reaches once (3 bytes a query row a chunk)
QUERY_PART_ROWS = 2_000_000
COSINE_TILE = 1024  # rows of embeddings per cosine tile: one tile's candidates are verified at a time
# Tiles find cosine candidates this much below the threshold; each is then decided on its own row-by-row
# dot product, so a pair's similarity does not depend on the tiling (a full and an incremental search agree).
COSINE_SLACK = 1e-4
ORIENTATIONS = tuple(name for name, _ in DIHEDRAL)
# Crops: one picture's pHash against the pHashes of the other's windows (`phash_windows`), this many bits
# closer than the rule allows (10 for phash<=16&verified), for rules that verify what they find: the
# windows of flat pictures hash alike (bench/results/accuracy.md).
WINDOW_MARGIN = 6
CROP = "crop"  # the pairs' `orientation` of a match found through the windows
VIEWS = (*ORIENTATIONS, CROP)  # names of the orientation codes 0, 1, ...
# each view column's orientation code per stored view
_VIEW_CODES = {"phash_dihedral": np.arange(len(ORIENTATIONS)),
               "phash_windows": np.full(len(WINDOWS), VIEWS.index(CROP))}
_INVERSE = {name: {"rot90": "rot270", "rot270": "rot90"}.get(name, name) for name in VIEWS}
_INVERSE_CODES = np.array([VIEWS.index(_INVERSE[name]) for name in VIEWS], np.int64)


@dataclass(frozen=True)
class Images:
    """The images being matched: valid rows sorted by (dataset, uri); a row number is an image id."""

    table: pa.Table
    datasets: tuple[str, ...]  # matched datasets, in keep-priority order
    dataset_ix: np.ndarray  # (N,) index into `datasets`
    reference: np.ndarray  # (N,) bool: from a reference dataset
    embeddings: Embeddings | None = None  # for cosine rules, row for row
    features: LocalFeatures | None = None  # for verification, row for row

    def __len__(self) -> int:
        return int(self.table.num_rows)


class ClassPairs:
    """Matching class pairs of one rule: c1 < c2, distance (first metric; -1 when it is cosine),
    similarity, orientation."""

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


_AS_STORED = np.array([-1], np.int64)  # the views of a side that searches the pictures as stored


@dataclass(frozen=True)
class _Rows:
    """What each row of one side of a join is: row r is view `views[r // C]` of class `classes[r % C]`
    (C = len(classes)), as `_variants` lays the views out. Nothing is held per row: a side of seven
    views of 3M classes would otherwise hold 340 MB of class numbers and orientation codes."""

    classes: np.ndarray
    views: np.ndarray = field(default_factory=lambda: _AS_STORED)  # orientation code of each view

    def of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The class and the orientation code of each of these rows."""
        if len(self.views) == 1:
            return self.classes[rows], np.full(len(rows), self.views[0], np.int64)
        n = len(self.classes)
        return self.classes[rows % n], self.views[rows // n]


@dataclass(frozen=True)
class _Join:
    """A bucket join: within `index` (`queries` None) or from `queries` to it, the query side indexed
    per block (`QueryRows.part`), in sub-blocks of about QUERY_PART_ROWS rows times the probed chunks."""

    index: HammingIndex
    queries: QueryRows | None
    query: _Rows  # of the query rows (the index's own rows within one set)
    index_class: np.ndarray

    def sub_blocks(self, block: Block) -> list[Block]:
        """`block` as the sub-blocks whose query parts are built one at a time: together the same buckets, each
        part of at most about QUERY_PART_ROWS rows times the probed chunks (a share of a cheap chunk holds more
        rows than one of a costly chunk: the split doubles until no part is over, or a bucket is the excess)."""
        if self.queries is None:
            return [block]
        limit = QUERY_PART_ROWS * int(np.count_nonzero(self.queries.plan.radii >= 0))
        split, largest = max(1, -(-len(self.queries) // (block.of * QUERY_PART_ROWS))), -1
        while True:
            subs = [Block(block.k * split + s, block.of * split) for s in range(split)]
            held = max(self.queries.rows_in(sub) for sub in subs)
            if held <= limit or held == largest:
                return subs
            split, largest = 2 * split, held


@dataclass(frozen=True)
class _CosineJoin:
    """Tiled cosine search: within `a` (upper triangle) or every (a, b) pair."""

    a: np.ndarray
    b: np.ndarray | None
    a_class: np.ndarray
    b_class: np.ndarray
    threshold: float


AnyJoin = _Join | _CosineJoin


@dataclass(frozen=True)
class RuleSearch:
    """One rule's classes and joins; `block(Block(k, n))` for k < n together give every match."""

    rule: Rule
    member: np.ndarray  # image ids in the rule's domain
    cls: np.ndarray  # class of each member
    reps: np.ndarray  # representative image id of each class, ascending
    reference_class: np.ndarray  # (C,) bool
    # per condition, (C, W) hash words of the representatives, or (C, d) unit vectors for cosine
    # ((C, 0) for verified: the features are in `features`)
    rep_words: tuple[np.ndarray, ...]
    joins: tuple[AnyJoin, ...]
    features: LocalFeatures | None = None  # of every image: verifies and scores the rule's pairs
    identity: np.ndarray | None = None  # (C, 2) digests of the classes, where the run keeps a match state
    reused: ClassPairs | None = None  # accepted pairs taken over from the previous run's state
    searched: int = -1  # classes the joins search from (new ones); -1: every class
    released: bool = False  # the joins were dropped (`without_joins`): only `finish` is left

    def without_joins(self) -> RuleSearch:
        """This search with its joins (indexes and query rows) released, for the decision."""
        return replace(self, joins=(), released=True)

    def block(self, block: Block) -> ClassPairs:
        """The class pairs this block of every join finds, verified against all conditions."""
        if self.released:
            raise RuntimeError("this search's joins were released for the decision: prepare the match again")
        parts = []
        for join in self.joins:
            if isinstance(join, _CosineJoin):
                # tile by tile, verified as it goes: a loose threshold's candidates never pile up. Blocks
                # run one per thread (or worker), so BLAS gets one thread each: 15% faster on 2 cores.
                tiles = -(-len(join.a) // COSINE_TILE)
                for tile in range(block.k, tiles, block.of):
                    with threadpool_limits(1, user_api="blas"):
                        found_c = cosine_pairs(join.a, max(-1.0, join.threshold - COSINE_SLACK), join.b,
                                               block=Block(tile, tiles), rows=COSINE_TILE)
                    other = join.a if join.b is None else join.b
                    sims = _row_cosines(join.a[found_c.i], other[found_c.j])
                    hit = sims >= join.threshold
                    cq = join.a_class[found_c.i[hit]]
                    cx = (join.a_class if join.b is None else join.b_class)[found_c.j[hit]]
                    none = np.full(len(cq), -1, np.int64)
                    similarity = np.clip(sims[hit].astype(np.float64), 0.0, 1.0)
                    parts.append(self._verified(cq, cx, none, similarity, none))
            else:
                for sub in join.sub_blocks(block):
                    found = search_block(join.index, sub, None if join.queries is None else join.queries.part(sub))
                    cq, orient = join.query.of(found.a)
                    similarity = self.rule.conditions[0].similarity(found.distance)
                    parts.append(self._verified(cq, join.index_class[found.b], found.distance, similarity, orient))
        return ClassPairs.concat(parts)

    def _verified(self, cq: np.ndarray, cx: np.ndarray, dist: np.ndarray, similarity: np.ndarray,
                  orient: np.ndarray) -> ClassPairs:
        """Candidate class pairs that pass every condition after the first, as (lo, hi) class pairs."""
        keep = cq != cx  # a symmetric picture matches its own mirror image
        cq, cx, dist, orient, similarity = cq[keep], cx[keep], dist[keep], orient[keep], similarity[keep]
        lo, hi = np.minimum(cq, cx), np.maximum(cq, cx)
        # the orientation maps the query's picture onto the other; stored as a -> b
        swapped = cq > cx
        orient = np.where(swapped & (orient >= 0), _INVERSE_CODES[np.maximum(orient, 0)], orient)
        ok = np.ones(len(dist), bool)
        for k, cond in enumerate(self.rule.conditions[1:], start=1):
            words = self.rep_words[k]
            if cond.verified:
                continue
            if cond.cosine:
                sim = np.clip(_row_cosines(words[lo], words[hi]).astype(np.float64), 0.0, 1.0)
                ok &= sim >= cond.min_similarity
                similarity = np.minimum(similarity, sim)
                continue
            d = np.bitwise_count(words[lo] ^ words[hi]).sum(axis=1, dtype=np.int64)
            ok &= d <= cond.max_distance
            similarity = np.minimum(similarity, cond.similarity(d))
        lo, hi, dist, similarity, orient = lo[ok], hi[ok], dist[ok], similarity[ok], orient[ok]
        if self.features is not None and self.rule.conditions[0].metric not in DIGESTS:
            lo, hi, dist, similarity, orient = self._scored(lo, hi, dist, similarity, orient)
        return ClassPairs(lo, hi, dist, similarity, orient)

    def _scored(self, lo: np.ndarray, hi: np.ndarray, dist: np.ndarray, similarity: np.ndarray,
                orient: np.ndarray) -> tuple[np.ndarray, ...]:
        """Pairs that pass the rule's verified conditions, scored by their verified shared fraction. A rule
        without one loses the pairs verification refutes (both pictures verifiable, no transform maps one
        onto the other) and keeps the rest, scored by their shared fraction where verification shows it."""
        assert self.features is not None
        shared = self.features.scores(self.reps[lo], self.reps[hi])
        needs = [c.min_similarity for c in self.rule.conditions if c.verified]
        if needs:
            ok = shared >= max(needs)  # NaN (cannot tell) fails
            return lo[ok], hi[ok], dist[ok], shared[ok], orient[ok]
        kept = ~(shared == 0)
        shared = shared[kept]
        return lo[kept], hi[kept], dist[kept], np.where(shared > 0, shared, similarity[kept]), orient[kept]

    def finish(self, parts: list[ClassPairs]) -> RuleMatch:
        """Merge the blocks' results (and the pairs reused from the previous run) into the rule's match."""
        reused = [self.reused] if self.reused is not None else []
        return RuleMatch(self, ClassPairs.concat([*parts, *reused]).best_per_pair())


@dataclass(frozen=True)
class RuleMatch:
    """What one rule accepted: its classes and its matching class pairs."""

    search: RuleSearch
    pairs: ClassPairs

    def state(self) -> RuleState:
        """What the next run reuses of this rule (its search must have tracked identities)."""
        if self.search.identity is None:
            raise ValueError("this search kept no class identities")
        p = self.pairs
        return RuleState(self.search.identity, p.c1, p.c2, p.distance, p.similarity.astype(np.float64),
                         p.orientation)


def _column_words(images: Images, metric: str) -> np.ndarray | None:
    column = images.table[metric]
    if column.null_count == len(column):
        return None
    return as_words(pc.fill_null(column, _zero(column.type)))


def _zero(dtype: pa.DataType) -> pa.Scalar:
    if pa.types.is_fixed_size_binary(dtype):
        return pa.scalar(bytes(dtype.byte_width), dtype)
    return pa.scalar(0, dtype)


def prepare_search(images: Images, rule: Rule, *, orientations: bool = False, windows: bool = False,
                   rows: np.ndarray | None = None, previous: RuleState | None = None) -> RuleSearch:
    """Classes of identical keys and the joins between their representatives for `rule`; `windows`: also
    between one's pHash and the other's windows' (crops; a rule on pHash that verifies). `rows` (each
    image's `file_digests`): keep each class's identity for the match state; with the `previous` run's
    state too, the joins search only the classes it lacks (against all) and its pairs between the others
    are reused."""
    metrics = [c.metric for c in rule.conditions]
    if orientations and rule.conditions[0].metric == "phash" and not orientable(rule):
        raise ConfigError(
            f"rule {rule.label!r}: --orientations applies to rules on pHash alone; "
            "a second hash of a mirrored picture would not match"
        )
    if windows and not searches_crops(rule):
        raise ConfigError(f"rule {rule.label!r}: crops are searched for rules on pHash that verify what they "
                          "find, e.g. phash<=16&verified")
    valid = np.ones(len(images), bool)
    for metric in metrics:
        if metric == COSINE:
            if images.embeddings is None:
                raise ConfigError(f"rule {rule.label!r} needs embeddings: encode with --encoders ...,cnn "
                                  "or pass --embeddings FILE.parquet")
            valid &= images.embeddings.present
        elif metric == VERIFIED:
            if images.features is None:
                raise ConfigError(f"rule {rule.label!r} needs local features: encode with --encoders ...,orb "
                                  "(or --preset thorough)")
            valid &= images.features.present()
        else:
            valid &= images.table[metric].is_valid().to_numpy(zero_copy_only=False)
    member = np.flatnonzero(valid)
    vectors = None if images.embeddings is None else images.embeddings.vectors
    columns = [vectors if m == COSINE else np.zeros((len(images), 0), np.uint64) if m == VERIFIED
               else _column_words(images, m) for m in metrics]
    words = [_rows(w, member) for w in columns if w is not None]
    if len(words) != len(metrics):
        member = np.zeros(0, np.int64)
        words = [np.zeros((0, 1), np.uint64) for _ in metrics]
    keys = [_digest_words(w) if m == COSINE else w for m, w in zip(metrics, words, strict=True) if m != VERIFIED]
    key = np.concatenate([images.dataset_ix[member].astype(np.uint64)[:, None], *keys], axis=1)
    first, cls = _classes(key)
    reps = member[first]
    reference_class = images.reference[reps]
    rep_words = tuple(_rows(w, first) for w in words)
    identity = class_digests(rows, reps, key[first]) if rows is not None else None
    carried = carry(previous, identity) if previous is not None and identity is not None else None
    # searching new classes against all beats a full search only while they are few
    fresh = carried.fresh if carried is not None and 2 * int(carried.fresh.sum()) <= len(reps) else None
    views = _Views(orientations and rule.conditions[0].metric == "phash", windows)
    joins = _joins(images, rule, reps, reference_class, rep_words, views, fresh)
    reused = None
    if fresh is not None and carried is not None:
        reused = ClassPairs(carried.c1, carried.c2, carried.distance, carried.similarity, carried.orientation)
    return RuleSearch(rule, member, cls, reps, reference_class, rep_words, joins, images.features, identity,
                      reused, -1 if fresh is None else int(fresh.sum()))


def _classes(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with identical keys form a class: the first row of each class, and each row's class, classes
    numbered by their first row. The rows are sorted by one 64-bit mix of their key words, not by each word
    in turn (five stable sorts of 10M rows for a digest rule); two keys that mix alike (so rarely that only
    a test that forces it meets one) fall back to the word-by-word sort. Runs of equal keys are found and
    numbered by compiled passes (NumPy's gathers, compares and second sort cost ~4 s a rule at 10M rows)."""
    n = len(key)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    key = np.ascontiguousarray(key, np.uint64)
    mixed = key_mix(key)
    run_of = np.empty(n, np.int64)
    runs = _runs(key, mixed, np.argsort(mixed), True, run_of)
    if runs < 0:
        runs = _runs(key, mixed, np.lexsort(key.T[::-1]), False, run_of)
    first, cls = np.empty(runs, np.int64), np.empty(n, np.int64)
    _number_by_first(run_of, first, cls)
    return first, cls


@njit(nogil=True, cache=True)
def _runs(key, mixed, order, by_mix, run_of):  # type: ignore[no-untyped-def]  # pragma: no cover - see _classes
    """Number the runs of equal keys along `order` into run_of (by row); how many runs, or -1 where sorting by
    the mix (`by_mix`) put two different keys that mix alike next to each other."""
    run = -1
    for j in range(len(order)):
        row = order[j]
        new = j == 0
        if not new:
            before = order[j - 1]
            for w in range(key.shape[1]):
                if key[row, w] != key[before, w]:
                    new = True
                    break
            if new and by_mix and mixed[row] == mixed[before]:
                return -1
        if new:
            run += 1
        run_of[row] = run
    return run + 1


@njit(nogil=True, cache=True)
def _number_by_first(run_of, first, cls):  # type: ignore[no-untyped-def]  # pragma: no cover - see _classes
    """Classes numbered in the order of their first row: each row's class, and each class's first row."""
    number = np.full(len(first), -1, np.int64)
    made = 0
    for row in range(len(run_of)):
        run = run_of[row]
        if number[run] < 0:
            number[run] = made
            first[made] = row
            made += 1
        cls[row] = number[run]


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-by-row dot products of unit rows, summed in float32 whether they are held as float16 or float32."""
    out: np.ndarray = np.einsum("ij,ij->i", a.astype(np.float32, copy=False), b.astype(np.float32, copy=False))
    return out


def _rows(x: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """x[ids], without a copy when ids is every row in order (embeddings are large)."""
    if len(ids) == len(x) and (len(ids) == 0 or (ids[0] == 0 and bool((np.diff(ids) == 1).all()))):
        return x
    out: np.ndarray = x[ids]
    return out


def _digest_words(vectors: np.ndarray) -> np.ndarray:
    """Two 64-bit words per row naming its exact values: identical embeddings form one class."""
    rows = np.ascontiguousarray(vectors).view(np.uint8).reshape(len(vectors), -1)
    digests = b"".join(hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows)
    return np.frombuffer(digests, np.uint64).reshape(len(vectors), 2)


@dataclass(frozen=True)
class _Views:
    """Which other views of each representative a rule's joins search: its mirrored and rotated pHashes
    (`phash_dihedral`) and its windows' (`phash_windows`)."""

    orientations: bool
    windows: bool


def _joins(
    images: Images, rule: Rule, reps: np.ndarray, reference_class: np.ndarray,
    rep_words: tuple[np.ndarray, ...], views: _Views, fresh: np.ndarray | None = None,
) -> tuple[AnyJoin, ...]:
    """The searches between representatives: within the matched datasets, from them to the reference
    datasets, and from their other `views` to every class. With `fresh` (a mask of classes), only pairs
    with a fresh class: each join is run from the fresh classes of one side against all of the other, and
    from all of the first against the fresh of the other."""
    first = rule.conditions[0]
    words = rep_words[0]
    normal = np.flatnonzero(~reference_class)
    ref = np.flatnonzero(reference_class)
    new_normal = normal if fresh is None else normal[fresh[normal]]
    new_ref = ref if fresh is None else ref[fresh[ref]]
    # (from, to) pairs of class sets for the joins across sets
    across = ((new_normal, ref), (normal, new_ref)) if fresh is not None else ((normal, ref),)
    if first.cosine:
        return _cosine_joins(words, normal, new_normal, across, first.min_similarity, fresh is None)
    threshold = first.max_distance
    if fresh is not None:
        return _fresh_joins(images, rule, reps, words, normal, ref, fresh, views)
    joins: list[AnyJoin] = []
    if len(normal) > 1:
        plan = plan_search(threshold, words[normal])
        joins.append(_Join(HammingIndex.build(words[normal], plan), None, _Rows(normal), normal))
    joins += [_across(threshold, words[a], _Rows(a), words[b], b) for a, b in across if len(a) and len(b)]
    everything = np.arange(len(reps))
    for column, margin, sides in _view_searches(views, normal, ref, everything, ref):
        for viewed, against in sides:
            found = _variants(images, reps, viewed, column) if len(viewed) and len(against) else None
            if found is not None:
                variants, side = found
                joins.append(_across(max(0, threshold - margin), variants, side, words[against], against))
    return tuple(joins)


def _view_searches(views: _Views, normal: np.ndarray, ref: np.ndarray, others: np.ndarray, reference: np.ndarray
                   ) -> list[tuple[str, int, tuple[tuple[np.ndarray, np.ndarray], ...]]]:
    """Per view column, its margin and the (classes viewed, classes their views are searched against).
    A mirror image matches both ways, so the matched classes' (`normal`) orientations against every class
    suffice; a crop lies inside its original, so the reference classes' (`ref`) windows are searched
    against the matched ones too (`others`: the classes to search against, every class in a full run;
    `reference`: every reference class, never paired with another)."""
    searches: list[tuple[str, int, tuple[tuple[np.ndarray, np.ndarray], ...]]] = []
    if views.orientations:
        searches.append(("phash_dihedral", ORIENTATION_MARGIN, ((normal, others),)))
    if views.windows:
        searches.append(("phash_windows", WINDOW_MARGIN,
                         ((normal, others), (ref, others[~np.isin(others, reference)]))))
    return searches


def _fresh_joins(images: Images, rule: Rule, reps: np.ndarray, words: np.ndarray, normal: np.ndarray,
                 ref: np.ndarray, fresh: np.ndarray, views: _Views) -> tuple[AnyJoin, ...]:
    """The joins of an incremental run: every pair with a new class, as bucket joins across two sides, so
    that each bucket pair is visited once (one new row in a bucket against a thousand others), never once
    a row: the new classes (and their views) against every class, and every class's views against the new
    classes. Plain joins are symmetric (no view), so which side is the query does not matter: the new side
    queries, and an index over a whole side is made once and shared by the joins that search it."""
    threshold = rule.conditions[0].max_distance
    new_normal, new_ref = normal[fresh[normal]], ref[fresh[ref]]
    everything, indexed = np.arange(len(reps)), np.flatnonzero(fresh)
    if len(ref) == 0:
        normal = everything  # one array: the joins against every class share its index
    indexes: dict[int, HammingIndex] = {}

    def across(limit: int, queries: np.ndarray, query: _Rows, against: np.ndarray) -> _Join:
        built = indexes.get(id(against))  # `against` arrays live as long as this call: their ids are stable
        join = _across(limit, queries, query, words[against] if built is None else built.words, against, built)
        indexes.setdefault(id(against), join.index)
        return join

    joins: list[AnyJoin] = []
    others = ((new_normal, normal if len(normal) > 1 else normal[:0]), (new_normal, ref), (new_ref, normal))
    joins += [across(threshold, words[new], _Rows(new), other) for new, other in others if len(new) and len(other)]
    new_views = _view_searches(views, new_normal, new_ref, everything, ref)
    all_views = _view_searches(views, normal, ref, indexed, ref)
    for (column, margin, new_sides), (_, _, all_sides) in zip(new_views, all_views, strict=True):
        limit = max(0, threshold - margin)
        for viewed, against in (*new_sides, *all_sides):
            found = _variants(images, reps, viewed, column) if len(viewed) and len(against) else None
            if found is not None:
                joins.append(across(limit, *found, against))
    return tuple(joins)


def _cosine_joins(words: np.ndarray, normal: np.ndarray, new_normal: np.ndarray,
                  across: tuple[tuple[np.ndarray, np.ndarray], ...], threshold: float, full: bool
                  ) -> tuple[AnyJoin, ...]:
    found: list[AnyJoin] = []
    if full and len(normal) > 1:
        found.append(_CosineJoin(_rows(words, normal), None, normal, normal, threshold))
    elif not full and len(new_normal) and len(normal) > 1:
        found.append(_CosineJoin(words[new_normal], _rows(words, normal), new_normal, normal, threshold))
    found += [_CosineJoin(_rows(words, a), words[b], a, b, threshold) for a, b in across if len(a) and len(b)]
    return tuple(found)


def _variants(images: Images, reps: np.ndarray, classes: np.ndarray, column: str) -> tuple[np.ndarray, _Rows] | None:
    """The other views' pHashes (`column`: phash_dihedral or phash_windows) of these classes'
    representatives, view by view, and what each row is. Classes whose representative lacks them (a
    dataset encoded before the encoder existed) have none."""
    codes = _VIEW_CODES[column]
    values = images.table[column]
    ids = reps[classes]
    has = values.is_valid().to_numpy(zero_copy_only=False)[ids]
    if not has.all():
        classes, ids = classes[has], ids[has]
    if len(classes) == 0:
        return None
    return _view_major(values, ids, len(codes)), _Rows(classes, codes)


def _view_major(values: pa.ChunkedArray, ids: np.ndarray, views: int) -> np.ndarray:
    """Rows `ids` of a column of `views` hashes a row as (views * len(ids), W) uint64 words, view by view:
    one copy, made chunk by chunk from the column's buffers (a take, a conversion and a transpose made
    three, 0.5 GB at 3M images' seven orientations)."""
    width = values.type.byte_width
    words = width // 8 // views
    out = np.empty((views, len(ids), words), np.uint64)
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    at = 0
    for chunk in values.chunks:
        lo, hi = np.searchsorted(ordered, [at, at + len(chunk)])
        if hi > lo:
            raw = np.frombuffer(chunk.buffers()[1], ">u8", count=len(chunk) * width // 8, offset=chunk.offset * width)
            rows = order[lo:hi]
            out[:, rows] = raw.reshape(len(chunk), views, words)[ids[rows] - at].transpose(1, 0, 2)
        at += len(chunk)
    return out.reshape(views * len(ids), words)


def _across(threshold: int, queries: np.ndarray, query: _Rows, index: np.ndarray, index_class: np.ndarray,
            built: HammingIndex | None = None) -> _Join:
    """A join from every query row to every index row within `threshold` bits; `built`: an index already made
    over the same `index` hashes, whose sorted chunks the join shares."""
    plan = plan_search(threshold, index, queries)
    made = built.with_plan(plan) if built is not None else HammingIndex.build(index, plan)
    return _Join(made, QueryRows.of(queries, plan), query, index_class)


def evidence_pairs(match: RuleMatch) -> tuple[np.ndarray, ...]:
    """Image-id pairs (a, b, distance, similarity, orientation) for pairs.parquet: members with their
    class's representative (not within reference datasets), and representatives of matching classes."""
    s = match.search
    mates = (s.member != s.reps[s.cls]) & ~s.reference_class[s.cls]
    a = np.concatenate([s.reps[s.cls[mates]], s.reps[match.pairs.c1]])
    b = np.concatenate([s.member[mates], s.reps[match.pairs.c2]])
    n_mates = int(mates.sum())
    mate_distance = -1 if s.rule.conditions[0].cosine else 0
    distance = np.concatenate([np.full(n_mates, mate_distance, np.int64), match.pairs.distance])
    similarity = np.concatenate([np.ones(n_mates), match.pairs.similarity])
    orientation = np.concatenate([np.full(n_mates, -1, np.int64), match.pairs.orientation])
    return a, b, distance, similarity, orientation
