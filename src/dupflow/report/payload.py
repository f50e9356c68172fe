"""The report's data: compact columns the viewer reads, built from a match run and the store's facts."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dupflow.io.uris import redact
from dupflow.match.keep import KeepPolicy
from dupflow.match.rules import parse_rule
from dupflow.report.extra_scores import ExtraScores
from dupflow.report.outputs import MatchOutputs, StoreFacts

__all__ = ["build_payload", "duplication", "keep_ranks", "original_links", "projection", "rule_thresholds",
           "thumbnail_order"]


def build_payload(outputs: MatchOutputs, facts: StoreFacts, thumb_index: Sequence[int],
                  thumb_failures: dict[int, str], extra: ExtraScores | None, links: Sequence[str | None],
                  projected: dict[str, Any] | None, meta: dict[str, Any]) -> dict[str, Any]:
    """Everything the page shows, as columns indexed by image number (the scores' order)."""
    scores, pairs, summary = outputs.scores, outputs.pairs, outputs.summary
    datasets = list(summary["datasets"])
    ds_index = {name: i for i, name in enumerate(datasets)}
    uris = scores["uri"].to_pylist()
    at = {uri: i for i, uri in enumerate(uris)}
    methods = sorted(set(pairs["method"].to_pylist()))
    rules = list(summary["settings"]["rules"])
    rules += sorted(set(pairs["rule"].to_pylist()) - set(rules))
    orientations = sorted({o for o in pairs["orientation"].to_pylist() if o})
    f = facts.table
    images = {
        "uri": [redact(u) for u in uris],
        "name": [r if r is not None else u.rsplit("/", 1)[-1] for r, u in zip(scores["rel_path"].to_pylist(), uris,
                                                                               strict=True)],
        "ds": [ds_index[d] for d in scores["dataset"].to_pylist()],
        "w": f["width"].to_pylist(),
        "h": f["height"].to_pylist(),
        "size": f["size"].to_pylist(),
        "fmt": f["format"].to_pylist(),
        "status": scores["status"].to_pylist(),
        "uniq": _rounded(scores["uniqueness"].to_pylist(), 4),
        "group": scores["group"].to_pylist(),
        "rank": keep_ranks(outputs, facts).tolist(),
        "thumb": list(thumb_index),
        "err": [None if k is None else f"{k}: {m or ''}".rstrip(": ")
                for k, m in zip(scores["error"].to_pylist(), f["error_message"].to_pylist(), strict=True)],
        "link": list(links),
    }
    pair_cols = {
        "a": [at[u] for u in pairs["a"].to_pylist()],
        "b": [at[u] for u in pairs["b"].to_pylist()],
        "m": _codes(pairs["method"].to_pylist(), methods),
        "r": _codes(pairs["rule"].to_pylist(), rules),
        "s": _rounded(pairs["similarity"].to_pylist(), 6),
        "d": pairs["distance"].to_pylist(),
        "o": _codes(pairs["orientation"].to_pylist(), orientations),
    }
    return {
        "meta": meta,
        "summary": _summary_for_page(summary),
        "duplication": duplication(images["group"]),
        "datasets": datasets,
        "reference": [name for name, d in summary["datasets"].items() if d.get("reference")],
        "methods": methods,
        "rules": rule_thresholds(rules, facts.hash_size),
        "orientations": orientations,
        "images": images,
        "pairs": pair_cols,
        "thumb_failures": {str(k): v for k, v in sorted(thumb_failures.items())},
        "extra": None if extra is None else {**extra.describe(), "values": extra.columns},
        "projection": projected,
    }


def duplication(groups: Sequence[int | None]) -> dict[str, Any]:
    """How much of the data the run found duplicated, from each image's group (None: in none).

    `images`: the duplicated images, i.e. the distinct pictures that appear more than once, one per
    duplicate group. `files`: how many times they appear, every file of those groups, the kept one
    included; `files - images` of them are copies of another. `sizes`: [members, groups] for each group
    size, smallest first (the page's group-size plot). Like summary.json's `duplicate_groups` and
    `appearances` ("35 duplicated images appearing 72 times"), over every dataset at once."""
    members = {g: n for g, n in Counter(g for g in groups if g is not None).items() if n > 1}
    sizes = Counter(members.values())
    return {"images": len(members), "files": sum(members.values()), "sizes": [[n, c] for n, c in sorted(sizes.items())]}


def keep_ranks(outputs: MatchOutputs, facts: StoreFacts) -> np.ndarray:
    """Each image's place in the run's keep policy (0 is kept first), so that a group the viewer's
    threshold splits still gets the keeper the policy would pick. Unreadable images rank last."""
    settings = outputs.summary["settings"]
    policy = KeepPolicy.parse(settings["keep"].split(" > "))
    table = pa.table({"uri": outputs.scores["uri"], "dataset": outputs.scores["dataset"],
                      "width": facts.table["width"], "height": facts.table["height"],
                      "size": facts.table["size"], "mtime": facts.table["mtime"]})
    reference = np.isin(table["dataset"].to_numpy(zero_copy_only=False), list(settings.get("reference", [])))
    keys = policy.sort_keys(table, list(outputs.summary["datasets"]), reference)
    failed = pc.equal(outputs.scores["status"], "error").to_numpy(zero_copy_only=False)
    order = np.lexsort([*reversed(keys), failed.astype(np.int64)])
    ranks = np.empty(len(table), np.int64)
    ranks[order] = np.arange(len(table))
    return ranks


def rule_thresholds(labels: Sequence[str], hash_size: int) -> list[dict[str, Any]]:
    """Each rule with its method and the least similarity it accepts (the histogram marks it)."""
    out = []
    for label in labels:
        rule = parse_rule(label, hash_size)
        least = min(c.min_similarity if c.scored else 1.0 - c.max_distance / c.bits for c in rule.conditions)
        out.append({"label": label, "method": rule.method, "min_similarity": round(least, 6)})
    return out


def thumbnail_order(outputs: MatchOutputs) -> list[int]:
    """Images in the order they deserve a thumbnail: members of groups (largest first), then the rest."""
    scores = outputs.scores
    group = scores["group"].to_pylist()
    status = scores["status"].to_pylist()
    sizes: dict[int, int] = {}
    for g in group:
        if g is not None:
            sizes[g] = sizes.get(g, 0) + 1
    grouped = sorted((i for i, g in enumerate(group) if g is not None), key=lambda i: (-sizes[group[i]], group[i], i))
    rest = [i for i, g in enumerate(group) if g is None and status[i] != "error"]
    return grouped + rest


def projection(facts: StoreFacts, outputs: MatchOutputs, points: int, seed: int = 0) -> dict[str, Any] | None:
    """A 2-D PCA of the vectors (every grouped image, then a sample of the rest, `points` in all)."""
    if facts.vectors is None or len(facts.vector_rows) < 3 or points < 3:
        return None
    grouped = pc.is_valid(outputs.scores["group"]).to_numpy(zero_copy_only=False)[facts.vector_rows]
    first = np.flatnonzero(grouped)[:points]
    rest = np.flatnonzero(~grouped)
    take = min(len(rest), points - len(first))
    chosen = np.sort(np.concatenate([first, np.random.default_rng(seed).choice(rest, take, replace=False)]))
    from sklearn.decomposition import PCA  # ~2 CPU-seconds of imports, paid only by a report with a map

    xy = PCA(n_components=2, random_state=seed).fit_transform(facts.matrix(chosen).astype(np.float64))
    span = np.maximum(xy.max(axis=0) - xy.min(axis=0), 1e-12)
    xy = (xy - xy.min(axis=0)) / span
    return {"source": facts.vector_source, "img": facts.vector_rows[chosen].tolist(),
            "x": _rounded(xy[:, 0].tolist(), 4), "y": _rounded(xy[:, 1].tolist(), 4),
            "of": len(facts.vector_rows)}


def original_links(uris: Sequence[str], mode: str, sign: Any = None) -> list[str | None]:
    """Where the page links each original: `file://` for local files (mode auto), a presigned URL
    from `sign(uri)` (mode presign), or nothing."""
    out: list[str | None] = []
    for uri in uris:
        if mode == "presign" and "://" in uri:
            link = str(sign(uri))
            out.append(link if link.startswith(("https://", "http://")) else None)
        elif mode in ("auto", "presign") and uri.startswith("/"):
            out.append("file://" + quote(uri))
        else:
            out.append(None)
    return out


def _summary_for_page(summary: dict[str, Any]) -> dict[str, Any]:
    """summary.json without the example lists (the page has every group) and with URLs redacted."""
    settings = {k: redact(v) if isinstance(v, str) and k in ("store", "duplicates_root") else v
                for k, v in summary["settings"].items()}
    datasets = {name: {k: v for k, v in d.items() if k != "groups"} for name, d in summary["datasets"].items()}
    crossings = {name: {k: v for k, v in x.items() if k != "groups"} for name, x in summary["intersections"].items()}
    return {"settings": settings, "totals": summary["totals"], "datasets": datasets, "intersections": crossings}


def _codes(values: Sequence[str | None], names: Sequence[str]) -> list[int | None]:
    """Each value's position in `names` (null stays null): the page stores names once."""
    code = {name: i for i, name in enumerate(names)}
    return [None if v is None else code[v] for v in values]


def _rounded(values: Sequence[float | None], digits: int) -> list[float | None]:
    return [None if v is None or not math.isfinite(v) else round(v, digits) for v in values]
