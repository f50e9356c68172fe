"""The apply step: move the manifest's files (or dry-run them). A retry resumes the journaled run."""

from __future__ import annotations

from typing import Any

from prefect import task

from dupflow.apply import ApplyOptions, apply_manifest
from dupflow.tasks.policy import IO_RETRIES

__all__ = ["apply_manifest_task"]


@task(name="apply-manifest", **IO_RETRIES)
def apply_manifest_task(manifest_url: str, journal_url: str, options: ApplyOptions, execute: bool,
                        storage_options: dict[str, Any]) -> dict[str, Any]:
    """Apply the manifest; a retry (or the next run) finishes a run that was cut off, from its journal."""
    report = apply_manifest(manifest_url, journal_url, options, execute=execute, resume=True,
                            storage_options=storage_options)
    return report.brief()
