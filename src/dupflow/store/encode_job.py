"""The encode job: list -> plan (reuse what is unchanged) -> encode shards -> commit.

Each step is a plain function so that the Prefect/Dask flow can run the same steps as tasks; this
module also runs them locally with a process pool, for the CLI (`run_encode`), which keeps the listing
in memory. The distributed run stages it in the store instead (`dupflow.store.listing_stage`): its
steps pass where the listing and the shards are and how many files they hold, never the files
(`stage_listing` -> `open_encode` -> `plan_staged` -> `encode_staged_shard` -> `commit_staged`). Both
share the deciding: `open_encode` (the store's record and encoders), `todo_mask` (what is reused),
`make_shards` (their order and keys), `auto_shard_size` and the commit.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dupflow.encode.cnn import check_device
from dupflow.encode.encoding import EncodeStats, Shard, encode_refs, make_shards
from dupflow.encode.settings import EncodeSettings
from dupflow.io.fs import is_local, open_fs
from dupflow.io.lifeline import lifeline_pool
from dupflow.io.listing import WHOLE, ImageRef, ListingPart, ListingStats, dataset_url, list_dataset
from dupflow.io.sources import DatasetSource
from dupflow.store.encodings import EncodingsStore, StoreRecord, row_keys
from dupflow.store.listing_stage import (
    StagedListing,
    StagedShards,
    clear_listings,
    merged_stats,
    read_listing,
    read_shard,
    refs_table,
    stage_shards,
)

__all__ = [
    "FLOW_SHARD_LEAST",
    "FLOW_SHARD_MOST",
    "EncodePlan",
    "EncodeReport",
    "EncodeRun",
    "StagedPlan",
    "auto_shard_size",
    "commit_encode",
    "commit_staged",
    "encode_shard",
    "encode_staged_shard",
    "list_source",
    "list_sources",
    "listing_parts",
    "open_encode",
    "plan_encode",
    "plan_staged",
    "prepare_encode",
    "refs_table",
    "run_encode",
    "todo_mask",
]

# The fewest and most files in one shard of a distributed run: each costs ~0.3 s of orchestration (Prefect
# on Dask, its API on the same cores), so its shards are larger than a local run's: worth at least that
# (128 files are 0.3-1.3 s of decoding) and at most 5-40 s of it (hashes only .. the default's local
# features), which is what a lost worker can lose.
FLOW_SHARD_LEAST = 128
FLOW_SHARD_MOST = 4096


@dataclass
class EncodeReport:
    """What an encode run did, for the CLI summary and the flow's logs."""

    store: str
    listed: int = 0
    encoded: int = 0
    reused: int = 0
    dropped: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # of the listed files, by kind
    new_errors: int = 0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    listing: ListingStats = field(default_factory=ListingStats)
    per_dataset: dict[str, int] = field(default_factory=dict)

    @property
    def decoded(self) -> int:
        return self.encoded + self.new_errors


def list_source(
    source: DatasetSource, storage_options: dict[str, Any] | None = None, sniff: bool = False,
    part: ListingPart = WHOLE,
) -> tuple[list[ImageRef], ListingStats]:
    """Every image of one source (or of one part of it), and what listing skipped: the unit of listing
    work. `sniff`: also the files without an image extension whose first bytes are an image's."""
    stats = ListingStats(unreadable_dirs=[])
    return list(list_dataset(source, storage_options, stats, sniff=sniff, part=part)), stats


def listing_parts(sources: Sequence[DatasetSource], parts: int, threads: int = 1
                  ) -> list[tuple[DatasetSource, ListingPart]]:
    """The units a listing of `sources` splits into: `parts` per folder or prefix (0: `threads` on an object
    store, where listing waits on requests; one for a local folder, whose walk is fast), one per file list."""
    def count(source: DatasetSource) -> int:
        if source.is_file_list:
            return 1
        if parts:
            return parts
        return 1 if is_local(open_fs(source.url)[0]) else max(1, threads)

    return [(source, ListingPart(k, of)) for source in sources for of in [count(source)] for k in range(of)]


def list_sources(
    sources: Sequence[DatasetSource], storage_options: dict[str, Any] | None = None, sniff: bool = False,
    parts: int = 1, threads: int = 1,
) -> tuple[list[ImageRef], ListingStats]:
    """Every image of every source, and what listing skipped; each folder listed in parts at once
    (`listing_parts`; threads: the time goes in waiting for the store's answers)."""
    units = listing_parts(sources, parts, threads)
    with ThreadPoolExecutor(max_workers=min(len(units), 32) or 1) as pool:
        listed = list(pool.map(lambda unit: list_source(unit[0], storage_options, sniff, unit[1]), units))
    return [ref for found, _ in listed for ref in found], ListingStats.merged(stats for _, stats in listed)


def todo_mask(store: EncodingsStore, rec: StoreRecord, listed: pa.Table) -> pa.Array:
    """Per row of `listed` (a `refs_table`): whether it must be decoded, i.e. has no reusable row in the
    store (or staging): one of the unchanged file with every encoder's value at this release's version or
    an error not retried."""
    if not listed.num_rows:
        return pa.array([], pa.bool_())
    datasets = sorted(pc.unique(listed["dataset"]).to_pylist())
    cached = store.cache_keys(rec.encoders, datasets)
    return pc.invert(pc.is_in(row_keys(listed), value_set=cached))


def plan_encode(store: EncodingsStore, rec: StoreRecord, refs: Sequence[ImageRef]) -> list[ImageRef]:
    """The refs that must be decoded (`todo_mask`)."""
    if not refs:
        return []
    todo = todo_mask(store, rec, refs_table(refs)).to_pylist()
    return [r for r, t in zip(refs, todo, strict=True) if t]


def auto_shard_size(n_files: int, workers: int, most: int = 256, least: int = 16) -> int:
    """Enough shards to balance the workers (4 per worker), each `least`..`most` files."""
    return min(most, max(least, math.ceil(n_files / max(1, 4 * workers))))


def encode_shard(store_url: str, shard: Shard, settings: EncodeSettings) -> EncodeStats:
    """Encode one shard and stage its rows in the store: the unit of work on any worker."""
    table, stats = encode_refs(shard.refs, settings)
    EncodingsStore(store_url, settings.storage_options).stage(shard.key, table)
    return stats


@dataclass(frozen=True)
class EncodeRun:
    """An encode run under way: the store's record (marked as being written) and the settings its shards
    are encoded with (every encoder the store keeps)."""

    store_url: str
    record: StoreRecord
    settings: EncodeSettings


def open_encode(store_url: str, settings: EncodeSettings, *, workers: int = 1) -> EncodeRun:
    """Open the store for writing (`EncodingsStore.begin`: this process is the run's recorded writer)."""
    store = EncodingsStore(store_url, settings.storage_options)
    rec = store.begin(settings)
    # the store keeps every encoder (and its cnn model); processes share the cores the network would each take
    settings = settings.model_copy(update={
        "encoders": tuple(rec.encoders), "cnn_model": settings.cnn_model or rec.settings.get("cnn_model"),
        "cnn_threads": settings.cnn_threads or max(1, (os.cpu_count() or 1) // max(1, workers))})
    return EncodeRun(store_url, rec, settings)


@dataclass(frozen=True)
class EncodePlan:
    """What an encode run will do: the opened store record, the settings (with every encoder the store
    keeps), the shards to encode and how many listed files are reused unchanged."""

    store_url: str
    record: StoreRecord
    settings: EncodeSettings
    shards: tuple[Shard, ...]
    listed: int
    reused: int


def prepare_encode(
    store_url: str, settings: EncodeSettings, refs: Sequence[ImageRef], *, workers: int = 1,
) -> EncodePlan:
    """Open the store for writing and split the files that need decoding into shards."""
    run = open_encode(store_url, settings, workers=workers)
    todo = plan_encode(EncodingsStore(store_url, run.settings.storage_options), run.record, refs)
    shards = make_shards(todo, run.settings.shard_size or auto_shard_size(len(todo), workers))
    return EncodePlan(store_url, run.record, run.settings, tuple(shards), len(refs), len(refs) - len(todo))


def commit_encode(
    plan: EncodePlan, sources: Sequence[DatasetSource], refs: Sequence[ImageRef], totals: EncodeStats
) -> EncodeReport:
    """Commit the staged shards (dropping files that are gone) and report what the store now holds."""
    urls = {s.name: dataset_url(s, refs, plan.settings.storage_options) for s in sources}
    run = EncodeRun(plan.store_url, plan.record, plan.settings)
    return _commit(run, refs_table(refs), urls, totals, plan.listed, plan.reused)


def _commit(run: EncodeRun, listed: pa.Table, urls: dict[str, str], totals: EncodeStats, n_listed: int,
            reused: int) -> EncodeReport:
    """Rewrite the listed datasets to exactly their `listed` files, remove the run's staged listings, and
    report what the store now holds."""
    store = EncodingsStore(run.store_url, run.settings.storage_options)
    report = EncodeReport(store=run.store_url, listed=n_listed, reused=reused)
    report.encoded, report.cpu_seconds = totals.encoded, totals.cpu_seconds
    report.new_errors = sum(totals.errors.values())
    dropped = store.commit(run.record, listed, urls)
    report.dropped = sum(dropped.values())
    clear_listings(store)  # this run's staged listing, and any a killed run left
    errors = store.read(["error", "dataset"], datasets=sorted(urls))
    report.errors = Counter(e for e in errors["error"].to_pylist() if e)
    report.per_dataset = dict(Counter(errors["dataset"].to_pylist()))
    return report


# -- the distributed run: the listing and the shards are staged in the store -----------------------
@dataclass(frozen=True)
class StagedPlan:
    """What a distributed encode run will do, small whatever the number of files: the run, its staged
    listings, its staged shards, and how many listed files are reused unchanged."""

    run: EncodeRun
    listings: tuple[StagedListing, ...]
    shards: StagedShards
    listed: int
    reused: int

    @property
    def store_url(self) -> str:
        return self.run.store_url

    @property
    def settings(self) -> EncodeSettings:
        return self.run.settings


def plan_staged(run: EncodeRun, listings: Sequence[StagedListing], stage: str, *, workers: int = 1,
                most: int = FLOW_SHARD_MOST, least: int = FLOW_SHARD_LEAST) -> StagedPlan:
    """Read the staged listings, decide what must be decoded, and stage it in shards (as `prepare_encode`
    does in memory: the same shards, given the same size); shards hold `least`..`most` files unless the
    settings fix their size."""
    store = EncodingsStore(run.store_url, run.settings.storage_options)
    listed = read_listing(store, listings)
    todo = listed.filter(todo_mask(store, run.record, listed))
    todo = todo.sort_by([("dataset", "ascending"), ("uri", "ascending")])  # make_shards' order
    size = run.settings.shard_size or auto_shard_size(todo.num_rows, workers, most, least)
    shards = stage_shards(store, stage, todo, size)
    return StagedPlan(run, tuple(listings), shards, listed.num_rows, listed.num_rows - todo.num_rows)


def encode_staged_shard(store_url: str, shards: StagedShards, index: int, settings: EncodeSettings) -> EncodeStats:
    """Read staged shard `index` and encode it (`encode_shard`, under the key `make_shards` gives it)."""
    refs = read_shard(EncodingsStore(store_url, settings.storage_options), shards, index)
    (shard,) = make_shards(refs, len(refs))
    return encode_shard(store_url, shard, settings)


def commit_staged(plan: StagedPlan, totals: EncodeStats) -> EncodeReport:
    """`commit_encode` from the staged listings; removes them once the store is committed."""
    store = EncodingsStore(plan.store_url, plan.settings.storage_options)
    urls = {staged.dataset: staged.url for staged in plan.listings}
    report = _commit(plan.run, read_listing(store, plan.listings), urls, totals, plan.listed, plan.reused)
    report.listing = merged_stats(plan.listings)
    return report


def run_encode(
    sources: Sequence[DatasetSource],
    store_url: str,
    settings: EncodeSettings,
    *,
    workers: int = 1,
    on_listed: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> EncodeReport:
    """List, plan, encode in `workers` local processes (this one included), commit; returns what happened."""
    start = time.perf_counter()
    refs, listing = list_sources(sources, settings.storage_options, settings.sniff_content,
                                 settings.listing_tasks, workers)
    plan = prepare_encode(store_url, settings, refs, workers=workers)
    check_device(plan.settings)  # the store's own encoders may include cnn
    if on_listed:
        on_listed(plan.listed, plan.listed - plan.reused)
    totals = EncodeStats()
    if workers <= 1 or len(plan.shards) <= 1:
        for shard in plan.shards:
            totals.add(encode_shard(store_url, shard, plan.settings))
            if on_progress:
                on_progress(len(shard.refs))
    else:
        # spawn, no fork: s3fs and pyarrow hold threads; the workers die with this process (even on SIGKILL),
        # so this thread, which starts them on submit, keeps the pool to itself. This process is one of the
        # `workers`: it takes shards from the back of the queue while the pool takes them from the front,
        # which saves a worker's start (~0.8 CPU-s of imports) and starts work before any worker is up.
        with lifeline_pool(workers - 1, "spawn") as pool:
            futures = {pool.submit(encode_shard, store_url, s, plan.settings): s for s in plan.shards}
            for fut in reversed(list(futures)):
                if not fut.cancel():  # the pool has started it: every shard before it is taken too
                    break
                shard = futures.pop(fut)
                totals.add(encode_shard(store_url, shard, plan.settings))
                if on_progress:
                    on_progress(len(shard.refs))
            for fut in as_completed(futures):
                totals.add(fut.result())
                if on_progress:
                    on_progress(len(futures[fut].refs))
    report = commit_encode(plan, sources, refs, totals)
    report.listing = listing
    report.wall_seconds = time.perf_counter() - start
    return report
