"""Prefect flows: the dedup flow (encode, match, report) composed from `tasks`, run on Dask."""

from flows.dedup import DedupResult, dedup, dedup_on_dask

__all__ = ["DedupResult", "dedup", "dedup_on_dask"]
