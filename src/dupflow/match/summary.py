"""summary.json: the data-quality view of one match run, per dataset and per pair of datasets."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from dupflow.match.decisions import Decisions
from dupflow.match.graph import components, group_lists
from dupflow.match.matching import Images
from dupflow.schemas import SCHEMA_VERSION
from dupflow.units import human_size

__all__ = ["MEMBERS_LISTED", "build_summary", "summary_markdown"]

# members listed of each listed group (its first, by uri order within a dataset): a group that chaining made
# huge (2.7M images in one synthetic 10M run) otherwise made summary.json 287 MB; groups.parquet has them all
MEMBERS_LISTED = 100


def build_summary(
    images: Images, decisions: Decisions, errors: pa.Table, settings: dict[str, Any], examples: int
) -> dict[str, Any]:
    """Counts per dataset (images, groups inside it, files that could go), the groups shared by
    every pair of datasets (train/val leakage, ingest vs corpus), and errors by kind. At most
    `examples` groups are listed per section, each with at most MEMBERS_LISTED members (per dataset
    across datasets); groups.parquet has them all."""
    uris = images.table["uri"]
    sizes = np.asarray(images.table["size"].fill_null(0).to_numpy(zero_copy_only=False), np.int64)
    error_kinds = Counter(zip(errors["dataset"].to_pylist(), errors["error"].to_pylist(), strict=True))
    a, b = decisions.pair_ids
    per_dataset: dict[str, Any] = {}
    for d, name in enumerate(images.datasets):
        mine = images.dataset_ix == d
        groups = _Groups(mine, a, b)
        moved = decisions.moved & mine
        per_dataset[name] = {
            "images": int(mine.sum()) + sum(n for (ds, _), n in error_kinds.items() if ds == name),
            "encoded": int(mine.sum()),
            "errors": {kind: n for (ds, kind), n in sorted(error_kinds.items()) if ds == name},
            "reference": bool(np.any(images.reference[mine])),
            "duplicate_groups": groups.count,
            "appearances": int(groups.size.sum()),
            "redundant_files": int(groups.size.sum()) - groups.count,
            "group_sizes": {str(k): int(v) for k, v in enumerate(np.bincount(groups.size)) if v},
            "to_move": int(moved.sum()),
            "bytes_to_move": int(sizes[moved].sum()),
            "groups_listed": min(examples, groups.count),
            "members_listed": MEMBERS_LISTED,
            "groups": _named(uris, groups.members(np.arange(min(examples, groups.count)))),
        }
    intersections: dict[str, Any] = {}
    for d1, d2 in itertools.combinations(range(len(images.datasets)), 2):
        n1, n2 = images.datasets[d1], images.datasets[d2]
        groups = _Groups((images.dataset_ix == d1) | (images.dataset_ix == d2), a, b)
        on_1 = groups.count_where(images.dataset_ix == d1)
        on_2 = groups.size - on_1
        shared = np.flatnonzero((on_1 > 0) & (on_2 > 0))
        listed = shared[:examples]
        sides = ((n1, d1), (n2, d2))
        intersections[f"{n1} & {n2}"] = {
            "datasets": [n1, n2],
            "shared_groups": len(shared),
            "images": {n1: int(on_1[shared].sum()), n2: int(on_2[shared].sum())},
            "groups_listed": len(listed),
            "members_listed": MEMBERS_LISTED,
            "groups": [dict(zip((n1, n2), named, strict=True)) for named in zip(*(
                _named(uris, groups.members(listed, images.dataset_ix == d)) for _, d in sides), strict=True)],
        }
    group_of = decisions.group_of
    return {
        "schema": "dupflow.summary",
        "schema_version": SCHEMA_VERSION,
        "settings": settings,
        "totals": {
            "images": len(images) + errors.num_rows,
            "encoded": len(images),
            "errors": dict(sorted(Counter(errors["error"].to_pylist()).items())),
            "pairs": len(decisions.pair_ids[0]),
            "groups": int(group_of.max()) + 1 if len(group_of) else 0,
            "leakage_groups": decisions.leakage_groups,
            "to_move": int(decisions.moved.sum()),
            "bytes_to_move": int(sizes[decisions.moved].sum()),
            "failed": decisions.failed,
        },
        "datasets": per_dataset,
        "intersections": intersections,
    }


def _named(uris: pa.ChunkedArray, groups: list[list[int]]) -> list[list[str]]:
    """The uris of these groups' image ids, taken in one call (a take from a column of many chunks costs a
    pass over all of them; the whole column is never turned into Python strings)."""
    names = uris.take(pa.array([i for g in groups for i in g], pa.int64())).to_pylist()
    bounds = np.cumsum([0, *(len(g) for g in groups)]).tolist()
    return [[str(u) for u in names[lo:hi]] for lo, hi in itertools.pairwise(bounds)]


class _Groups:
    """The connected groups over the pairs inside `mask`, numbered by their first image id, as arrays: a
    Python list per group would cost seconds at a million groups."""

    def __init__(self, mask: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        inside = mask[a] & mask[b]
        self.group_of = components(len(mask), a[inside], b[inside])
        self.ids = np.flatnonzero(self.group_of >= 0)
        self.count = int(self.group_of.max()) + 1 if len(self.ids) else 0
        self.size = np.bincount(self.group_of[self.ids], minlength=self.count)

    def count_where(self, which: np.ndarray) -> np.ndarray:
        """(G,) how many of each group's members `which` holds."""
        held = self.ids[which[self.ids]]
        return np.bincount(self.group_of[held], minlength=self.count)

    def members(self, groups: np.ndarray, which: np.ndarray | None = None) -> list[list[int]]:
        """The first MEMBERS_LISTED members (ascending) of these groups (ascending numbers), only those `which`
        holds if given."""
        chosen = np.full(len(self.group_of), -1, np.int64)
        ids = self.ids[np.isin(self.group_of[self.ids], groups)]
        if which is not None:
            ids = ids[which[ids]]
        chosen[ids] = np.searchsorted(groups, self.group_of[ids])
        lists = group_lists(chosen)
        present = np.unique(chosen[ids])  # a group with no member `which` holds still gets its (empty) list
        out: list[list[int]] = [[] for _ in groups]
        for k, members in zip(present.tolist(), lists, strict=True):
            out[k] = members[:MEMBERS_LISTED]
        return out


def summary_markdown(summary: dict[str, Any], out: str, applied: dict[str, Any] | None = None,
                     page: dict[str, Any] | None = None) -> str:
    """summary.json as a short Markdown report: per dataset, per pair of datasets, totals; what
    the apply step did (`ApplyReport.brief()`), if it ran; where the HTML report is (`ReportResult.brief()`)."""
    t, settings = summary["totals"], summary["settings"]
    lines = [
        f"# dupflow: {t['groups']:,} duplicate groups, {t['to_move']:,} files to move "
        f"({human_size(t['bytes_to_move'])})",
        "",
        f"Rules `{' | '.join(settings['rules'])}`, keep `{settings['keep']}`. Outputs in `{out}` "
        f"(pairs, groups, scores, manifest.parquet, summary.json); {_applied_line(applied)}",
        "",
        "| dataset | role | images | unreadable | duplicate groups | appearances | to move | bytes to move |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, d in summary["datasets"].items():
        role = "reference" if d["reference"] else "matched"
        lines.append(f"| {name} | {role} | {d['images']:,} | {d['images'] - d['encoded']:,} | "
                     f"{d['duplicate_groups']:,} | {d['appearances']:,} | {d['to_move']:,} | "
                     f"{human_size(d['bytes_to_move'])} |")
    if summary["intersections"]:
        lines += ["", "| datasets | shared groups | images on each side |", "|---|---:|---|"]
        for name, x in summary["intersections"].items():
            sides = ", ".join(f"{k}: {v:,}" for k, v in x["images"].items())
            lines.append(f"| {name} | {x['shared_groups']:,} | {sides} |")
    errors = ", ".join(f"{k} {v:,}" for k, v in t["errors"].items()) or "none"
    lines += ["", f"{t['images']:,} images, {t['pairs']:,} pairs, {t['leakage_groups']:,} groups across datasets, "
              f"{t['failed']:,} images fail the rules; unreadable: {errors}."]
    if page is not None:
        lines += ["", f"Review the groups in `{page['path']}` ({human_size(page['bytes'])}, {page['thumbnails']:,} "
                  "thumbnails; opens from disk, fetches nothing)."]
    return "\n".join(lines) + "\n"


def _applied_line(applied: dict[str, Any] | None) -> str:
    if applied is None:
        return "nothing was moved."
    counts = ", ".join(f"{k} {v:,}" for k, v in applied["counts"].items()) or "nothing to do"
    if not applied["executed"]:
        return f"apply dry run, nothing was moved: {counts} (every file: `{applied['results']}`)."
    return (f"apply run `{applied['run']}`: {counts}, {human_size(applied['bytes'])} (journal `{applied['journal']}`; "
            f"`dupflow undo` reverses it).")
