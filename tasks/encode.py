"""Encoding tasks: list a dataset into the store, open the store, plan the shards, encode one shard,
commit the store. The listing and the shards are staged in the store (`dupflow.store.listing_stage`):
the tasks pass where they are and how many files they hold, never the files, so what the flow holds and
what Prefect walks on each call stays the same size whatever the number of files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import task

from dupflow.encode.encoding import EncodeStats
from dupflow.encode.settings import EncodeSettings
from dupflow.io.listing import WHOLE, ListingPart
from dupflow.io.sources import DatasetSource
from dupflow.store.encode_job import (
    EncodeReport,
    EncodeRun,
    StagedPlan,
    commit_staged,
    encode_staged_shard,
    open_encode,
    plan_staged,
)
from dupflow.store.listing_stage import StagedListing, StagedShards, stage_listing
from dupflow.tasks.policy import IO_RETRIES, NOT_CACHED

__all__ = ["commit_encode_task", "encode_shard_task", "list_source_task", "open_encode_task", "prepare_encode_task"]


@task(name="list-dataset", task_run_name="list {source.name} {part.k}/{part.of}", **IO_RETRIES)
def list_source_task(source: DatasetSource, store_url: str, stage: str, storage_options: dict[str, Any],
                     sniff: bool = False, part: ListingPart = WHOLE) -> StagedListing:
    """Every image under one dataset's URL (or in its file list), or one part of them, staged in the store."""
    return stage_listing(store_url, stage, source, storage_options, sniff, part=part)


@task(name="open-store", **IO_RETRIES)
def open_encode_task(store_url: str, settings: EncodeSettings, workers: int) -> EncodeRun:
    """Mark the store as being written (call it in the flow's process: the store records it as its writer)."""
    return open_encode(store_url, settings, workers=workers)


@task(name="plan-encode", **IO_RETRIES)
def prepare_encode_task(run: EncodeRun, listings: Sequence[StagedListing], stage: str, workers: int) -> StagedPlan:
    """Read the staged listings; stage the files that are new or changed in shards."""
    return plan_staged(run, listings, stage, workers=workers)


@task(name="encode-shard", task_run_name="encode shard {index}", **IO_RETRIES)
def encode_shard_task(store_url: str, shards: StagedShards, index: int, settings: EncodeSettings) -> EncodeStats:
    """Decode and hash one staged shard's files on a worker and stage the rows in the store."""
    return encode_staged_shard(store_url, shards, index, settings)


@task(name="commit-encodings", **NOT_CACHED)
def commit_encode_task(plan: StagedPlan, totals: EncodeStats) -> EncodeReport:
    """Merge the staged shards into the store, mark it complete and remove the staged listings."""
    return commit_staged(plan, totals)
