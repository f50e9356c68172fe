"""The encode job: list -> plan (reuse what is unchanged) -> encode shards -> commit.

Each step is a plain function so that the Prefect/Dask flow can run the same steps as tasks; this
module also runs them locally with a process pool, for the CLI.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dupflow.encode.cnn import check_device
from dupflow.encode.encoding import EncodeStats, Shard, encode_refs, make_shards
from dupflow.encode.settings import EncodeSettings
from dupflow.io.lifeline import lifeline_pool
from dupflow.io.listing import ImageRef, ListingStats, dataset_url, list_dataset
from dupflow.io.sources import DatasetSource
from dupflow.store.encodings import EncodingsStore, StoreRecord, row_keys

__all__ = [
    "EncodePlan",
    "EncodeReport",
    "auto_shard_size",
    "commit_encode",
    "encode_shard",
    "list_source",
    "list_sources",
    "plan_encode",
    "prepare_encode",
    "refs_table",
    "run_encode",
]


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
    source: DatasetSource, storage_options: dict[str, Any] | None = None, sniff: bool = False
) -> tuple[list[ImageRef], ListingStats]:
    """Every image of one source, and what listing skipped: the unit of listing work. `sniff`: also the
    files without an image extension whose first bytes are an image's."""
    stats = ListingStats(unreadable_dirs=[])
    return list(list_dataset(source, storage_options, stats, sniff=sniff)), stats


def list_sources(
    sources: Sequence[DatasetSource], storage_options: dict[str, Any] | None = None, sniff: bool = False
) -> tuple[list[ImageRef], ListingStats]:
    """Every image of every source, and what listing skipped."""
    listed = [list_source(source, storage_options, sniff) for source in sources]
    return [ref for found, _ in listed for ref in found], ListingStats.merged(stats for _, stats in listed)


def refs_table(refs: Sequence[ImageRef]) -> pa.Table:
    """The key columns of listed refs (and where each sits in its dataset), typed like the encodings so keys
    compare equal."""
    return pa.table(
        {
            "uri": pa.array([r.uri for r in refs], pa.string()),
            "rel_path": pa.array([r.rel_path for r in refs], pa.string()),
            "size": pa.array([r.size for r in refs], pa.int64()),
            "mtime": pa.array([r.mtime_ns for r in refs], pa.timestamp("ns", tz="UTC")),
            "etag": pa.array([r.etag for r in refs], pa.string()),
            "dataset": pa.array([r.dataset for r in refs], pa.string()),
        }
    )


def plan_encode(store: EncodingsStore, rec: StoreRecord, refs: Sequence[ImageRef]) -> list[ImageRef]:
    """The refs that must be decoded: those with no reusable row in the store (or staging), i.e. one of
    the unchanged file with every encoder's value at this release's version or an error not retried."""
    if not refs:
        return []
    datasets = sorted({r.dataset for r in refs})
    cached = store.cache_keys(rec.encoders, datasets)
    hit = pc.is_in(row_keys(refs_table(refs)), value_set=cached).to_pylist()
    return [r for r, h in zip(refs, hit, strict=True) if not h]


def auto_shard_size(n_files: int, workers: int) -> int:
    """Enough shards to balance the workers (4 per worker), each 16..256 files."""
    return min(256, max(16, math.ceil(n_files / max(1, 4 * workers))))


def encode_shard(store_url: str, shard: Shard, settings: EncodeSettings) -> EncodeStats:
    """Encode one shard and stage its rows in the store: the unit of work on any worker."""
    table, stats = encode_refs(shard.refs, settings)
    EncodingsStore(store_url, settings.storage_options).stage(shard.key, table)
    return stats


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
    store = EncodingsStore(store_url, settings.storage_options)
    rec = store.begin(settings)
    # the store keeps every encoder (and its cnn model); processes share the cores the network would each take
    settings = settings.model_copy(update={
        "encoders": tuple(rec.encoders), "cnn_model": settings.cnn_model or rec.settings.get("cnn_model"),
        "cnn_threads": settings.cnn_threads or max(1, (os.cpu_count() or 1) // max(1, workers))})
    todo = plan_encode(store, rec, refs)
    shards = make_shards(todo, settings.shard_size or auto_shard_size(len(todo), workers))
    return EncodePlan(store_url, rec, settings, tuple(shards), len(refs), len(refs) - len(todo))


def commit_encode(
    plan: EncodePlan, sources: Sequence[DatasetSource], refs: Sequence[ImageRef], totals: EncodeStats
) -> EncodeReport:
    """Commit the staged shards (dropping files that are gone) and report what the store now holds."""
    store = EncodingsStore(plan.store_url, plan.settings.storage_options)
    report = EncodeReport(store=plan.store_url, listed=plan.listed, reused=plan.reused)
    report.encoded, report.cpu_seconds = totals.encoded, totals.cpu_seconds
    report.new_errors = sum(totals.errors.values())
    urls = {s.name: dataset_url(s, refs, plan.settings.storage_options) for s in sources}
    dropped = store.commit(plan.record, refs_table(refs), urls)
    report.dropped = sum(dropped.values())
    errors = store.read(["error", "dataset"], datasets=sorted(urls))
    report.errors = Counter(e for e in errors["error"].to_pylist() if e)
    report.per_dataset = dict(Counter(errors["dataset"].to_pylist()))
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
    refs, listing = list_sources(sources, settings.storage_options, settings.sniff_content)
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
