"""Encoding tasks: list a dataset, plan the shards, encode one shard, commit the store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import task

from dupflow.encode.encoding import EncodeStats, Shard
from dupflow.encode.settings import EncodeSettings
from dupflow.io.listing import ImageRef, ListingStats
from dupflow.io.sources import DatasetSource
from dupflow.store.encode_job import EncodePlan, EncodeReport, commit_encode, encode_shard, list_source, prepare_encode
from dupflow.tasks.policy import IO_RETRIES, NOT_CACHED

__all__ = ["commit_encode_task", "encode_shard_task", "list_source_task", "prepare_encode_task"]


@task(name="list-dataset", task_run_name="list {source.name}", **IO_RETRIES)
def list_source_task(source: DatasetSource, storage_options: dict[str, Any], sniff: bool = False
                     ) -> tuple[list[ImageRef], ListingStats]:
    """Every image under one dataset's URL (or in its file list)."""
    return list_source(source, storage_options, sniff)


@task(name="plan-encode", **IO_RETRIES)
def prepare_encode_task(store_url: str, settings: EncodeSettings, refs: Sequence[ImageRef], workers: int) -> EncodePlan:
    """Open the store for writing; shard the files that are new or changed."""
    return prepare_encode(store_url, settings, refs, workers=workers)


@task(name="encode-shard", task_run_name="encode shard {shard.key}", **IO_RETRIES)
def encode_shard_task(store_url: str, shard: Shard, settings: EncodeSettings) -> EncodeStats:
    """Decode and hash one shard's files on a worker and stage the rows in the store."""
    return encode_shard(store_url, shard, settings)


@task(name="commit-encodings", **NOT_CACHED)
def commit_encode_task(plan: EncodePlan, sources: Sequence[DatasetSource], refs: Sequence[ImageRef],
                       totals: EncodeStats) -> EncodeReport:
    """Merge the staged shards into the store and mark it complete."""
    return commit_encode(plan, sources, refs, totals)
