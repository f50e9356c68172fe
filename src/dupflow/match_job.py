"""`dupflow match`: read the encodings store, match, decide, and write the five output files."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dupflow.decisions import Decisions, decide
from dupflow.errors import ConfigError
from dupflow.fs import atomic_write, join, open_fs, storage_error, to_uri
from dupflow.keep import KeepPolicy
from dupflow.matching import Images, RuleMatch, RuleSearch, prepare_search, run_blocks
from dupflow.rules import Rule, parse_rules
from dupflow.schemas import parquet_bytes
from dupflow.store import EncodingsStore
from dupflow.summary import build_summary

__all__ = ["OUTPUT_FILES", "MatchReport", "MatchSettings", "load_images", "match_store", "plan_rules", "write_outputs"]

OUTPUT_FILES = ("pairs.parquet", "groups.parquet", "scores.parquet", "manifest.parquet", "summary.json")
_BASE_COLUMNS = ["uri", "rel_path", "size", "mtime", "width", "height", "error", "dataset", "exact"]


@dataclass(frozen=True)
class MatchSettings:
    """How to match: rules (any of), keep policy, which datasets, which are reference-only."""

    rules: tuple[str, ...] = ()  # rule texts; empty: DEFAULT_RULES
    keep: tuple[str, ...] = ()  # keep keys in order; empty: DEFAULT_KEEP
    datasets: tuple[str, ...] = ()  # empty: every dataset in the store, alphabetically
    reference: tuple[str, ...] = ()  # matched against, never against themselves, never moved
    orientations: bool = False  # also match flipped and rotated copies (pHash rules)
    duplicates_root: str | None = None  # default OUT/duplicates
    examples: int = 1000  # groups listed per section of summary.json
    threads: int = 0  # 0: every CPU
    blocks: int = 0  # per rule; 0: four per thread

    def __post_init__(self) -> None:
        unknown = set(self.reference) - set(self.datasets) if self.datasets else set()
        if unknown:
            raise ConfigError(f"reference datasets {sorted(unknown)} are not among --datasets")
        if self.examples < 0:
            raise ConfigError("examples must be 0 or more")
        self.keep_policy()

    def keep_policy(self) -> KeepPolicy:
        return KeepPolicy.parse(self.keep)

    def parsed_rules(self, hash_size: int) -> tuple[Rule, ...]:
        return parse_rules(self.rules, hash_size)

    def describe(self, hash_size: int) -> dict[str, Any]:
        return {
            "rules": [r.label for r in self.parsed_rules(hash_size)],
            "keep": self.keep_policy().label,
            "reference": list(self.reference),
            "orientations": self.orientations,
            "hash_size": hash_size,
        }


@dataclass
class MatchReport:
    """What a match run wrote and found."""

    out: str
    summary: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def load_images(store: EncodingsStore, settings: MatchSettings) -> tuple[Images, pa.Table, int]:
    """The valid images to match (sorted by dataset priority, then uri), the error rows, and the
    store's hash size. Refuses rules whose encodings the store lacks, naming the encode command."""
    rec = store.complete_record()
    hash_size = int(rec.settings.get("hash_size", 8))
    names = list(settings.datasets) or sorted(rec.datasets)
    missing = [d for d in [*names, *settings.reference] if d not in rec.datasets]
    if missing:
        raise ConfigError(f"the store has no dataset {', '.join(sorted(set(missing)))}; it has: "
                          f"{', '.join(sorted(rec.datasets)) or 'none'}")
    wanted = [m for r in settings.parsed_rules(hash_size) for m in (c.metric for c in r.conditions)]
    if settings.orientations:
        wanted.append("phash_dihedral")
    lacking = sorted({m for m in wanted if m != "exact" and m not in rec.encoders})
    if lacking:
        have = ",".join(rec.encoders)
        raise ConfigError(
            f"the store has no {', '.join(lacking)} encodings: re-run `dupflow encode ... --encoders "
            f"{','.join(dict.fromkeys([*rec.encoders, *lacking]))}` (only the new encoders are computed"
            f" for files already encoded with {have})"
        )
    columns = list(dict.fromkeys([*_BASE_COLUMNS, *(m for m in wanted if m != "exact")]))
    table = store.read(columns, names)
    failed = pc.is_valid(table["error"])
    errors = table.filter(failed).select(["uri", "dataset", "rel_path", "error"])
    valid = table.filter(pc.invert(failed))
    rank = {d: i for i, d in enumerate(names)}
    dataset_ix = np.array([rank[d] for d in valid["dataset"].to_pylist()], np.int64)
    order = np.lexsort((pc.sort_indices(valid["uri"]).to_numpy().argsort(), dataset_ix))
    valid = valid.take(pa.array(order, pa.int64()))
    dataset_ix = dataset_ix[order]
    reference = np.isin(dataset_ix, [rank[d] for d in settings.reference])
    images = Images(valid, tuple(names), dataset_ix, reference)
    return images, errors, hash_size


def plan_rules(images: Images, settings: MatchSettings, hash_size: int) -> list[RuleSearch]:
    """One search per rule, ready to run block by block."""
    return [prepare_search(images, rule, orientations=settings.orientations)
            for rule in settings.parsed_rules(hash_size)]


def match_store(store_url: str, out_url: str, settings: MatchSettings,
                storage_options: dict[str, Any] | None = None) -> MatchReport:
    """Match a store's encodings and write the outputs into `out_url`."""
    clock = {"start": time.perf_counter()}
    store = EncodingsStore(store_url, storage_options)
    images, errors, hash_size = load_images(store, settings)
    clock["loaded"] = time.perf_counter()
    threads = settings.threads or os.cpu_count() or 1
    matches: list[RuleMatch] = [run_blocks(search, settings.blocks or 4 * threads, threads)
                                for search in plan_rules(images, settings, hash_size)]
    clock["matched"] = time.perf_counter()
    duplicates_root = _absolute(settings.duplicates_root or join(out_url, "duplicates"), storage_options)
    decisions = decide(images, matches, settings.keep_policy(), duplicates_root, errors)
    described = {"store": store.url, **settings.describe(hash_size), "duplicates_root": duplicates_root}
    summary = build_summary(images, decisions, errors, described, settings.examples)
    clock["decided"] = time.perf_counter()
    write_outputs(out_url, decisions, summary, storage_options)
    clock["written"] = time.perf_counter()
    steps = list(clock.items())
    seconds = {name: round(t - steps[i - 1][1], 3) for i, (name, t) in enumerate(steps) if i}
    return MatchReport(out_url, summary, seconds)


def _absolute(url: str, storage_options: dict[str, Any] | None) -> str:
    fs, path = open_fs(url, storage_options)
    return to_uri(fs, path)


def write_outputs(out_url: str, decisions: Decisions, summary: dict[str, Any],
                  storage_options: dict[str, Any] | None = None) -> None:
    """Write the four tables, then summary.json last: its presence marks a finished run."""
    fs, root = open_fs(out_url, storage_options)
    tables = (decisions.pairs, decisions.groups, decisions.scores, decisions.manifest)
    try:
        fs.makedirs(root, exist_ok=True)
        if fs.exists(join(root, "summary.json")):  # a crash below must not leave an old summary beside new tables
            fs.rm(join(root, "summary.json"))
        for name, table in zip(OUTPUT_FILES, tables, strict=False):
            atomic_write(fs, join(root, name), parquet_bytes(table))
        atomic_write(fs, join(root, "summary.json"), json.dumps(summary, indent=2).encode() + b"\n")
    except OSError as exc:
        raise storage_error(exc, out_url, "write the match outputs to") from exc
