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

__all__ = ["build_summary", "summary_markdown"]


def build_summary(
    images: Images, decisions: Decisions, errors: pa.Table, settings: dict[str, Any], examples: int
) -> dict[str, Any]:
    """Counts per dataset (images, groups inside it, files that could go), the groups shared by
    every pair of datasets (train/val leakage, ingest vs corpus), and errors by kind. At most
    `examples` groups are listed per section; groups.parquet has them all."""
    uris = images.table["uri"]
    sizes = np.asarray(images.table["size"].fill_null(0).to_numpy(zero_copy_only=False), np.int64)
    error_kinds = Counter(zip(errors["dataset"].to_pylist(), errors["error"].to_pylist(), strict=True))
    a, b = decisions.pair_ids
    per_dataset: dict[str, Any] = {}
    for d, name in enumerate(images.datasets):
        mine = images.dataset_ix == d
        groups = _groups(mine, a, b, len(images))
        moved = decisions.moved & mine
        per_dataset[name] = {
            "images": int(mine.sum()) + sum(n for (ds, _), n in error_kinds.items() if ds == name),
            "encoded": int(mine.sum()),
            "errors": {kind: n for (ds, kind), n in sorted(error_kinds.items()) if ds == name},
            "reference": bool(np.any(images.reference[mine])),
            "duplicate_groups": len(groups),
            "appearances": sum(len(g) for g in groups),
            "redundant_files": sum(len(g) - 1 for g in groups),
            "group_sizes": {str(k): v for k, v in sorted(Counter(len(g) for g in groups).items())},
            "to_move": int(moved.sum()),
            "bytes_to_move": int(sizes[moved].sum()),
            "groups_listed": min(examples, len(groups)),
            "groups": _named(uris, groups[:examples]),
        }
    intersections: dict[str, Any] = {}
    for d1, d2 in itertools.combinations(range(len(images.datasets)), 2):
        n1, n2 = images.datasets[d1], images.datasets[d2]
        both = (images.dataset_ix == d1) | (images.dataset_ix == d2)
        shared = [g for g in _groups(both, a, b, len(images))
                  if len(set(images.dataset_ix[g].tolist())) == 2]
        sides = ((n1, d1), (n2, d2))
        intersections[f"{n1} & {n2}"] = {
            "datasets": [n1, n2],
            "shared_groups": len(shared),
            "images": {n: sum(int(np.sum(images.dataset_ix[g] == d)) for g in shared) for n, d in sides},
            "groups_listed": min(examples, len(shared)),
            "groups": [dict(zip((n1, n2), named, strict=True)) for named in zip(*(
                _named(uris, [[i for i in g if images.dataset_ix[i] == d] for g in shared[:examples]])
                for _, d in sides), strict=True)],
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


def _groups(mask: np.ndarray, a: np.ndarray, b: np.ndarray, n: int) -> list[list[int]]:
    """Connected groups (image ids, ascending; groups by first id) over the pairs inside `mask`."""
    inside = mask[a] & mask[b]
    return group_lists(components(n, a[inside], b[inside]))


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
