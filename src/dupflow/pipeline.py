"""The encode job: list -> plan (reuse what is unchanged) -> encode shards -> commit.

Each step is a plain function so that the Prefect/Dask flow can run the same steps as tasks; this
module also runs them locally with a process pool, for the CLI.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dupflow.config import DatasetSource, EncodeSettings
from dupflow.encoding import EncodeStats, Shard, encode_refs, make_shards
from dupflow.fs import open_fs, to_uri
from dupflow.listing import ImageRef, ListingStats, list_dataset
from dupflow.store import EncodingsStore, StoreRecord, row_keys

__all__ = [
    "EncodeReport",
    "auto_shard_size",
    "encode_shard",
    "list_sources",
    "plan_encode",
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


def list_sources(
    sources: Sequence[DatasetSource], storage_options: dict[str, Any] | None = None
) -> tuple[list[ImageRef], ListingStats]:
    """Every image of every source, and what listing skipped."""
    stats = ListingStats(unreadable_dirs=[])
    refs: list[ImageRef] = []
    for source in sources:
        refs.extend(list_dataset(source, storage_options, stats))
    return refs, stats


def refs_table(refs: Sequence[ImageRef]) -> pa.Table:
    """The key columns of listed refs, typed like the encodings so keys compare equal."""
    return pa.table(
        {
            "uri": pa.array([r.uri for r in refs], pa.string()),
            "size": pa.array([r.size for r in refs], pa.int64()),
            "mtime": pa.array([r.mtime_ns for r in refs], pa.timestamp("ns", tz="UTC")),
            "etag": pa.array([r.etag for r in refs], pa.string()),
            "dataset": pa.array([r.dataset for r in refs], pa.string()),
        }
    )


def plan_encode(store: EncodingsStore, rec: StoreRecord, refs: Sequence[ImageRef]) -> list[ImageRef]:
    """The refs that must be decoded: not in the store (or staging) unchanged with every encoder."""
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


def run_encode(
    sources: Sequence[DatasetSource],
    store_url: str,
    settings: EncodeSettings,
    *,
    workers: int = 1,
    shard_size: int | None = None,
    on_listed: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> EncodeReport:
    """List, plan, encode in `workers` local processes, commit; returns what happened."""
    start = time.perf_counter()
    report = EncodeReport(store=store_url)
    store = EncodingsStore(store_url, settings.storage_options)
    refs, report.listing = list_sources(sources, settings.storage_options)
    report.listed = len(refs)
    rec = store.begin(settings)
    settings = dataclasses.replace(settings, encoders=tuple(rec.encoders))  # the store keeps every encoder
    todo = plan_encode(store, rec, refs)
    report.reused = report.listed - len(todo)
    if on_listed:
        on_listed(report.listed, len(todo))
    shards = make_shards(todo, shard_size or auto_shard_size(len(todo), workers))
    totals = EncodeStats()
    if workers <= 1 or len(shards) <= 1:
        for shard in shards:
            totals.add(encode_shard(store_url, shard, settings))
            if on_progress:
                on_progress(len(shard.refs))
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork: s3fs and pyarrow hold threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(encode_shard, store_url, s, settings): s for s in shards}
            for fut in as_completed(futures):
                totals.add(fut.result())
                if on_progress:
                    on_progress(len(futures[fut].refs))
    report.encoded, report.cpu_seconds = totals.encoded, totals.cpu_seconds
    report.new_errors = sum(totals.errors.values())
    urls = {s.name: to_uri(*open_fs(s.url, settings.storage_options)) for s in sources}
    dropped = store.commit(rec, refs_table(refs), urls)
    report.dropped = sum(dropped.values())
    errors = store.read(["error", "dataset"], datasets=sorted(urls))
    report.errors = Counter(e for e in errors["error"].to_pylist() if e)
    report.per_dataset = dict(Counter(errors["dataset"].to_pylist()))
    report.wall_seconds = time.perf_counter() - start
    return report
