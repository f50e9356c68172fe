"""From matches to decisions: pairs, groups with their keeper, per-image scores, the move manifest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dupflow.match.graph import components
from dupflow.match.keep import KeepPolicy
from dupflow.match.matching import VIEWS, Images, RuleMatch, evidence_pairs
from dupflow.match.rules import Rule
from dupflow.match.verify import LocalFeatures
from dupflow.schemas import GROUPS, MANIFEST, PAIRS, SCORES

__all__ = ["Decisions", "decide"]

_CHECK_ROUNDS = 8  # a group split this often is left as the last round made it
_MANIFEST_SLICE = 1_000_000  # manifest rows built at a time (~300 MB of reasons)

_WHY = {
    "dataset": "its dataset comes first in the keep priority",
    "resolution": "it has more pixels",
    "size": "it is a larger file",
    "oldest": "it is older",
    "newest": "it is newer",
    "shortest-path": "its path is shorter",
    "path": "its path sorts first",
}


@dataclass(frozen=True)
class Decisions:
    """What `dupflow match` decided: the arrays the summary needs, and the builders of the four output
    tables: written one at a time, they never all lie in memory together (at 3M images they were ~0.5 GB
    of the deciding worker's peak)."""

    pair_ids: tuple[np.ndarray, np.ndarray]  # image ids of every pairs.parquet row
    group_of: np.ndarray  # (N,) group id, -1 when the image matched nothing
    moved: np.ndarray  # (N,) bool: in the manifest
    leakage_groups: int  # groups with members in more than one dataset
    failed: int  # images that fail the rules (matched another)
    builders: tuple[Callable[[], pa.Table], ...]  # of pairs, groups, scores and manifest, in that order


@dataclass(frozen=True)
class _Best:
    similarity: np.ndarray  # (N,) best accepted similarity, -1 when none
    partner: np.ndarray  # (N,) image id of that match
    rule: np.ndarray  # (N,) index of the rule
    other: np.ndarray  # (N,) best similarity to an image that is not a byte-identical copy


def decide(
    images: Images, matches: list[RuleMatch], keep: KeepPolicy, duplicates_root: str, errors: pa.Table,
    min_shared: float | None = None, manifest_meta: dict[bytes, bytes] | None = None,
) -> Decisions:
    """Groups, keepers and scores, and the builders of the output tables; the same inputs always give the
    same tables. `errors` (uri, dataset, rel_path, error) are the files that could not be read: scored with
    status `error`. With `min_shared` and local features, groups are checked against their keepers
    (`_checked_groups`). `manifest_meta`: the manifest's schema metadata."""
    n = len(images)
    a, b, distance, similarity, orientation, rule_ix = _all_evidence(matches)
    group_of = components(n, a, b)
    keys = keep.sort_keys(images.table, list(images.datasets), images.reference, np.flatnonzero(group_of >= 0))
    if min_shared is not None and images.features is not None:
        group_of = _checked_groups(images.features, group_of, a, b, keys, min_shared)
    keeper = _keepers(group_of, keys)
    best = _best_matches(images, matches)
    is_keeper = np.zeros(n, bool)
    is_keeper[keeper] = True
    moved = (group_of >= 0) & ~images.reference & ~is_keeper
    labels = [m.search.rule for m in matches]
    label, method = [r.label for r in labels], [r.method for r in labels]  # each once: pairs are many

    def manifest() -> pa.Table:
        table = _manifest_table(images, group_of, keeper, best, moved, keep, keys, labels, duplicates_root)
        return table if manifest_meta is None else table.replace_schema_metadata(manifest_meta)

    spans = _spans(images, group_of, len(keeper))
    return Decisions(
        pair_ids=(a, b),
        group_of=group_of,
        moved=moved,
        leakage_groups=int(np.count_nonzero(spans > 1)),
        failed=int(np.count_nonzero(best.similarity >= 0)),
        builders=(
            partial(_pairs_table, images, a, b, distance, similarity, orientation, rule_ix, label, method),
            partial(_groups_table, images, group_of, keeper, spans),
            partial(_scores_table, images, group_of, is_keeper, best, label, errors),
            manifest,
        ),
    )


def _all_evidence(matches: list[RuleMatch]) -> tuple[np.ndarray, ...]:
    evidence = [evidence_pairs(m) for m in matches]
    parts = [(*e, np.full(len(e[0]), i, np.int64)) for i, e in enumerate(evidence)]
    if not parts:
        e = np.zeros(0, np.int64)
        return e, e, e, np.zeros(0), e, e
    cols = [np.concatenate([p[k] for p in parts]) for k in range(6)]
    order = np.lexsort((cols[5], cols[1], cols[0]))
    return tuple(c[order] for c in cols)


def _checked_groups(features: LocalFeatures, group_of: np.ndarray, a: np.ndarray, b: np.ndarray,
                    keys: list[np.ndarray], min_shared: float) -> np.ndarray:
    """Groups in which every member matched its keeper directly or is shown to share enough of it.

    Each other member is verified against its keeper. It leaves the group when verification shows it
    shares part of the keeper but less than `min_shared` (overlapping windows), or no part at all
    while no chain of pairs with a shown shared part links it to the keeper (a blurred copy of an
    upscaled keeper stays through the original; a picture joined only through a flat one, whose
    pairs verification cannot show, leaves). A member verification cannot tell about stays: one too
    flat to verify, or one whose small detail matches the keeper's while the thumbnails cannot show that
    the rest agrees; a little-detail member whose detail matches nothing of the keeper's is refuted,
    like any other. The pairs joining
    leavers to stayers are set aside and the groups rebuilt, until every group holds: so a chain of
    weak matches does not join pictures that share too little, or nothing, with the keeper."""
    n = len(group_of)
    edge = np.ones(len(a), bool)
    direct = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    shown = features.scores(a, b) > 0  # pairs whose shared part verification shows
    for _ in range(_CHECK_ROUNDS):
        keeper = _keepers(group_of, keys)
        members = np.flatnonzero(group_of >= 0)
        k = keeper[group_of[members]]
        pair = np.minimum(members, k) * n + np.maximum(members, k)
        need = (members != k) & ~np.isin(pair, direct)
        checked, shared = members[need], features.scores(members[need], k[need])
        refuted = np.zeros(n, bool)
        refuted[checked[shared == 0]] = True
        leaving = np.zeros(n, bool)
        leaving[checked[(shared > 0) & (shared < min_shared)]] = True
        linked = components(n, a[edge & shown], b[edge & shown])
        keeper_link = np.full(n, -2, np.int64)
        keeper_link[members] = linked[k]
        leaving |= refuted & ((linked < 0) | (linked != keeper_link))
        if not leaving.any():
            break
        edge &= leaving[a] == leaving[b]
        group_of = components(n, a[edge], b[edge])
    return group_of


def _keepers(group_of: np.ndarray, sort_keys: list[np.ndarray]) -> np.ndarray:
    """Image id of each group's keeper: the first member by the keep policy's sort keys."""
    groups = int(group_of.max()) + 1 if len(group_of) else 0
    members = np.flatnonzero(group_of >= 0)
    keys = [k[members] for k in sort_keys]
    order = members[np.lexsort((*reversed(keys), group_of[members]))]
    g = group_of[order]
    first = np.ones(len(order), bool)
    first[1:] = g[1:] != g[:-1]
    keeper = np.empty(groups, np.int64)
    keeper[g[first]] = order[first]
    return keeper


def _best_matches(images: Images, matches: list[RuleMatch]) -> _Best:
    """Per image: the best accepted similarity over all rules, its partner and rule, and the best
    similarity below 1 (a group's keeper is scored on that, so identical copies do not zero it)."""
    n = len(images)
    best = _Best(np.full(n, -1.0), np.full(n, -1, np.int64), np.full(n, -1, np.int64), np.full(n, -1.0))
    for r, match in enumerate(matches):
        s, pairs = match.search, match.pairs
        classes = len(s.reps)
        cls = np.concatenate([pairs.c1, pairs.c2])
        sim = np.concatenate([pairs.similarity, pairs.similarity])
        partner = np.concatenate([s.reps[pairs.c2], s.reps[pairs.c1]])
        class_sim, class_partner = _class_best(cls, sim, partner, classes)
        below = sim < 1.0
        class_other, _ = _class_best(cls[below], sim[below], partner[below], classes)
        # class mates (identical keys) in matched datasets: similarity 1, partner the representative
        # (the representative's partner: its first mate)
        size = np.bincount(s.cls, minlength=classes)
        mate = (size[s.cls] >= 2) & ~s.reference_class[s.cls]
        not_rep = s.member != s.reps[s.cls]
        first_mate = np.full(classes, -1, np.int64)
        mate_cls, first = np.unique(s.cls[not_rep], return_index=True)
        first_mate[mate_cls] = s.member[not_rep][first]
        msim = np.where(mate, 1.0, class_sim[s.cls])
        mpartner = np.where(mate, np.where(not_rep, s.reps[s.cls], first_mate[s.cls]), class_partner[s.cls])
        better = msim > best.similarity[s.member]
        ids = s.member[better]
        best.similarity[ids] = msim[better]
        best.partner[ids] = mpartner[better]
        best.rule[ids] = r
        best.other[s.member] = np.maximum(best.other[s.member], class_other[s.cls])
    return best


def _class_best(cls: np.ndarray, sim: np.ndarray, partner: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Highest similarity per class (-1: none) and its partner (lowest id on ties): two scatter passes, not
    a three-key sort (6.3 s against 0.4 s for 10M pairs)."""
    best_sim = np.full(classes, -1.0)
    np.maximum.at(best_sim, cls, sim)
    tied = sim == best_sim[cls]
    none = np.iinfo(np.int64).max
    best_partner = np.full(classes, none, np.int64)
    np.minimum.at(best_partner, cls[tied], partner[tied])
    best_partner[best_partner == none] = -1
    return best_sim, best_partner


def _uris(images: Images, ids: np.ndarray) -> pa.Array:
    return images.table["uri"].take(pa.array(ids, pa.int64()))


def _pairs_table(
    images: Images, a: np.ndarray, b: np.ndarray, distance: np.ndarray, similarity: np.ndarray,
    orientation: np.ndarray, rule_ix: np.ndarray, rules: list[str], methods: list[str],
) -> pa.Table:
    names = pa.array([*VIEWS, None], pa.string())  # -1, as stored: null
    datasets = images.table["dataset"]
    rule = pa.array(rule_ix, pa.int64())
    return pa.Table.from_arrays(
        [
            _uris(images, a), _uris(images, b),
            datasets.take(pa.array(a, pa.int64())), datasets.take(pa.array(b, pa.int64())),
            pa.array(rules, pa.string()).take(rule), pa.array(methods, pa.string()).take(rule),
            pa.array(distance, pa.int32(), mask=distance < 0), pa.array(np.round(similarity, 6), pa.float64()),
            names.take(pa.array(np.where(orientation < 0, len(VIEWS), orientation), pa.int64())),
        ],
        schema=PAIRS,
    )


def _spans(images: Images, group_of: np.ndarray, groups: int) -> np.ndarray:
    """(G,) how many datasets each group has members in."""
    members = np.flatnonzero(group_of >= 0)
    pairs = np.unique(np.stack([group_of[members], images.dataset_ix[members]], axis=1), axis=0)
    return np.bincount(pairs[:, 0], minlength=groups) if len(pairs) else np.zeros(groups, np.int64)


def _groups_table(images: Images, group_of: np.ndarray, keeper: np.ndarray, spans: np.ndarray) -> pa.Table:
    members = np.flatnonzero(group_of >= 0)
    members = members[np.lexsort((members, group_of[members]))]
    g = group_of[members]
    size = np.bincount(g, minlength=len(keeper))
    t = images.table
    take = pa.array(members, pa.int64())
    return pa.Table.from_arrays(
        [
            pa.array(g, pa.int64()), t["uri"].take(take), t["dataset"].take(take), t["rel_path"].take(take),
            pa.array(size[g], pa.int32()), pa.array(keeper[g] == members),
            _uris(images, keeper[g]), pa.array(images.reference[members]),
            pa.array(spans[g], pa.int32()), pa.array(spans[g] > 1),
        ],
        schema=GROUPS,
    )


def _scores_table(images: Images, group_of: np.ndarray, is_keeper: np.ndarray, best: _Best,
                  rules: list[str], errors: pa.Table) -> pa.Table:
    n = len(images)
    matched = best.similarity >= 0
    base = np.where(is_keeper, best.other, best.similarity)
    uniqueness = np.clip(np.where(base >= 0, 1.0 - base, 1.0), 0.0, 1.0)
    t = images.table
    # Arrow all the way: a NumPy string or object array per image would cost ~100 bytes an image more
    scored = pa.Table.from_arrays(
        [
            t["uri"], t["dataset"], t["rel_path"],
            pc.if_else(pa.array(matched), "fail", "pass"),
            pa.array(np.round(uniqueness, 6), pa.float64()),
            pa.array(np.round(best.similarity, 6), pa.float64(), mask=~matched),
            t["uri"].take(pa.array(best.partner, pa.int64(), mask=~matched)),
            pa.array(rules, pa.string()).take(pa.array(best.rule, pa.int64(), mask=best.rule < 0)),
            pa.array(group_of, pa.int64(), mask=group_of < 0),
            pa.array(is_keeper, pa.bool_(), mask=group_of < 0),
            pa.nulls(n, pa.string()),
        ],
        schema=SCORES,
    )
    failed = errors.take(pc.sort_indices(errors, [("dataset", "ascending"), ("uri", "ascending")]))
    m = failed.num_rows
    unread = pa.Table.from_arrays(
        [failed["uri"], failed["dataset"], failed["rel_path"], pa.array(["error"] * m, pa.string()),
         *(pa.nulls(m, SCORES.field(k).type) for k in ("uniqueness", "max_similarity", "nearest", "nearest_rule",
                                                        "group", "keeper")),
         failed["error"]],
        schema=SCORES,
    )
    return pa.concat_tables([scored, unread])


def _manifest_table(
    images: Images, group_of: np.ndarray, keeper: np.ndarray, best: _Best, moved: np.ndarray,
    keep: KeepPolicy, keys: list[np.ndarray], rules: list[Rule], duplicates_root: str,
) -> pa.Table:
    """The moved files in (group, id) order, built _MANIFEST_SLICE rows at a time: an Arrow string array
    holds at most 2 GiB, ~8M rows of reasons."""
    src = np.flatnonzero(moved)
    src = src[np.lexsort((src, group_of[src]))]
    slices = [src[lo:lo + _MANIFEST_SLICE] for lo in range(0, len(src), _MANIFEST_SLICE)] or [src]
    return pa.concat_tables([_manifest_rows(images, group_of, keeper, best, keep, keys, rules, duplicates_root, part)
                             for part in slices])


def _manifest_rows(
    images: Images, group_of: np.ndarray, keeper: np.ndarray, best: _Best, keep: KeepPolicy, keys: list[np.ndarray],
    rules: list[Rule], duplicates_root: str, src: np.ndarray,
) -> pa.Table:
    k = keeper[group_of[src]]
    names = ["reference", *keep.keys]
    differs = np.stack([key[src] != key[k] for key in keys], axis=0) if len(src) else np.zeros((len(keys), 0), bool)
    deciding = np.argmax(differs, axis=0)
    t = images.table
    take = pa.array(src, pa.int64())
    datasets, rel = t["dataset"].take(take), t["rel_path"].take(take)
    keeper_uris, matched = _uris(images, k), _uris(images, best.partner[src])
    rule = pa.array(best.rule[src], pa.int64())
    rule_labels = pa.array([r.label for r in rules], pa.string()).take(rule)
    whys = pa.array(["it is in a reference dataset" if name == "reference" else _WHY[name] for name in names])
    # Arrow all the way: a Python string per moved file for each column (~1 KB a row) was the decision's peak
    reasons = pc.binary_join_element_wise(
        rule_labels, ": similarity ", pa.array(np.char.mod("%.3f", best.similarity[src]), pa.string()), " to ", matched,
        "; keeping ", keeper_uris, " because ", whys.take(pa.array(deciding, pa.int64())), "")
    root = duplicates_root.rstrip("/")  # as `join(duplicates_root, dataset, rel_path)`
    destinations = pc.binary_join_element_wise(root, pc.utf8_trim(datasets, "/"), pc.utf8_trim(rel, "/"), "/")
    return pa.Table.from_arrays(
        [
            t["uri"].take(take), destinations, datasets, rel, t["size"].take(take), t["mtime"].take(take),
            t["etag"].take(take), _hex(t["exact"].take(take)), pa.array(group_of[src], pa.int64()),
            keeper_uris, rule_labels, pa.array([r.method for r in rules], pa.string()).take(rule),
            pa.array(np.round(best.similarity[src], 6), pa.float64()), matched, reasons,
        ],
        schema=MANIFEST,
    )


def _hex(digests: pa.ChunkedArray) -> pa.Array:
    """Fixed-size binary digests as lowercase hex strings (null stays null), without a Python object a row."""
    values = digests.combine_chunks()
    width = values.type.byte_width
    raw = np.frombuffer(values.buffers()[1], np.uint8, count=len(values) * width, offset=values.offset * width)
    offsets = np.arange(0, 2 * width * (len(values) + 1), 2 * width, dtype=np.int32)
    text = pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(raw.tobytes().hex().encode()))
    return pc.if_else(values.is_valid(), text, pa.scalar(None, pa.string()))
