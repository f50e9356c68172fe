"""Checks a run makes before it starts anything costly (the Prefect API, a cluster): every dataset is
a folder or prefix that exists, and the storage it names answers with the credentials at hand. Each
problem is one clear error within seconds, not a failed task after retries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dupflow.io.fs import open_fs, storage_error
from dupflow.io.listing import check_source
from dupflow.io.sources import DatasetSource

__all__ = ["check_sources", "check_storage", "fail_fast"]

# For the checks only: one connection attempt with short timeouts, so that an unreachable endpoint or
# missing credentials is reported at once instead of after botocore's retries.
_S3_FAST = {"connect_timeout": 5, "read_timeout": 15, "retries": {"max_attempts": 1, "mode": "standard"}}


def fail_fast(url: str, storage_options: dict[str, Any]) -> dict[str, Any]:
    """`storage_options` for a quick check of `url`: on S3, short timeouts and no retries."""
    if not url.startswith(("s3://", "s3a://")):
        return dict(storage_options)
    kwargs = {**_S3_FAST, **storage_options.get("config_kwargs", {})}
    return {**storage_options, "config_kwargs": kwargs, "skip_instance_cache": True}


def check_sources(sources: Iterable[DatasetSource], storage_options: dict[str, Any]) -> None:
    """Every dataset is a folder or prefix (or a file list) that exists and can be read."""
    for source in sources:
        check_source(source, fail_fast(source.url, storage_options))


def check_storage(url: str, storage_options: dict[str, Any], what: str) -> None:
    """The storage holding `url` (its bucket, for object stores) answers with the credentials at hand;
    the location itself need not exist yet."""
    if "://" not in url:
        return  # a local folder is created when first written
    fs, path = open_fs(url, fail_fast(url, storage_options))
    bucket = path.split("/", 1)[0]
    try:
        fs.ls(bucket, detail=False)
    except Exception as exc:
        raise storage_error(exc, url, f"reach the {what} at") from exc
