"""summary.json's per-dataset and per-pair-of-datasets groups, against groups found the slow, plain way."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from dupflow.match.decisions import Decisions
from dupflow.match.graph import components
from dupflow.match.matching import Images
from dupflow.match.summary import MEMBERS_LISTED, build_summary
from dupflow.schemas import SCORES


def _plain_groups(ids: set[int], pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Connected groups of two or more among `ids` over the pairs inside them, by union-find, by first id."""
    parent = {i: i for i in ids}

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for x, y in pairs:
        if x in ids and y in ids:
            parent[root(x)] = root(y)
    found: dict[int, list[int]] = {}
    for i in sorted(ids):
        found.setdefault(root(i), []).append(i)
    return sorted((g for g in found.values() if len(g) > 1), key=lambda g: g[0])


def test_summary_groups_per_dataset_and_across_agree_with_union_find() -> None:
    rng = np.random.default_rng(7)
    n, names = 400, ("train", "val", "test")
    dataset_ix = np.sort(rng.integers(0, 3, n))
    a = rng.integers(0, n, 260)
    b = rng.integers(0, n, 260)
    keep = a != b
    a, b = np.minimum(a, b)[keep], np.maximum(a, b)[keep]
    uris = [f"s3://b/{names[d]}/{i:04d}.jpg" for i, d in enumerate(dataset_ix)]
    images = Images(pa.table({"uri": uris, "size": np.full(n, 10)}), names, dataset_ix, np.zeros(n, bool))
    decisions = Decisions((a, b), np.full(n, -1), np.zeros(n, bool), 0, 0, ())
    errors = pa.table({k: pa.array([], SCORES.field(k).type) for k in ("uri", "dataset", "rel_path", "error")})
    summary = build_summary(images, decisions, errors, {}, examples=3)
    pairs = list(zip(a.tolist(), b.tolist(), strict=True))
    for d, name in enumerate(names):
        groups = _plain_groups({i for i in range(n) if dataset_ix[i] == d}, pairs)
        got = summary["datasets"][name]
        assert got["duplicate_groups"] == len(groups) > 3
        assert got["appearances"] == sum(map(len, groups))
        assert got["redundant_files"] == sum(len(g) - 1 for g in groups)
        assert got["group_sizes"] == {str(k): v for k, v in sorted(Counter(map(len, groups)).items())}
        assert got["groups"] == [[uris[i] for i in g] for g in groups[:3]]
    for d1, d2 in ((0, 1), (0, 2), (1, 2)):
        groups = _plain_groups({i for i in range(n) if dataset_ix[i] in (d1, d2)}, pairs)
        shared = [g for g in groups if {dataset_ix[i] for i in g} == {d1, d2}]
        got = summary["intersections"][f"{names[d1]} & {names[d2]}"]
        assert got["shared_groups"] == len(shared) > 3
        assert got["images"] == {names[d]: sum(int(dataset_ix[i] == d) for g in shared for i in g) for d in (d1, d2)}
        assert got["groups"] == [{names[d]: [uris[i] for i in g if dataset_ix[i] == d] for d in (d1, d2)}
                                 for g in shared[:3]]


def test_components_number_groups_by_first_image_and_leave_unpaired_and_self_paired_images_out() -> None:
    rng = np.random.default_rng(11)
    n = 5_000
    a = rng.integers(0, n, 900)
    b = np.where(rng.random(900) < 0.1, a, rng.integers(0, n, 900))  # some self-pairs: never a group alone
    group_of = components(n, a, b)
    groups = _plain_groups(set(range(n)), [(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True) if x != y])
    expected = np.full(n, -1)
    for k, members in enumerate(groups):
        expected[members] = k
    assert len(groups) > 100
    assert np.array_equal(group_of, expected)


def test_a_huge_group_is_listed_by_its_first_members_and_counted_whole() -> None:
    n, names = 1_000, ("train", "val")
    dataset_ix = (np.arange(n) >= 600).astype(np.int64)
    chain = np.arange(0, 900)  # one chain through both datasets: 900 images in one group
    a, b = chain[:-1], chain[1:]
    uris = [f"s3://b/{names[d]}/{i:04d}.jpg" for i, d in enumerate(dataset_ix)]
    images = Images(pa.table({"uri": uris, "size": np.full(n, 10)}), names, dataset_ix, np.zeros(n, bool))
    decisions = Decisions((a, b), np.full(n, -1), np.zeros(n, bool), 0, 0, ())
    errors = pa.table({k: pa.array([], SCORES.field(k).type) for k in ("uri", "dataset", "rel_path", "error")})
    summary = build_summary(images, decisions, errors, {}, examples=3)
    train = summary["datasets"]["train"]
    assert train["group_sizes"] == {"600": 1}
    assert train["groups"] == [uris[:MEMBERS_LISTED]]
    shared = summary["intersections"]["train & val"]
    assert shared["images"] == {"train": 600, "val": 300}
    assert shared["groups"] == [{"train": uris[:MEMBERS_LISTED], "val": uris[600:600 + MEMBERS_LISTED]}]
