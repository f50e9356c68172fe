"""The run's reports: the HTML page (and its report.json) in OUT, and a Markdown artifact with the summary next
to the flow run."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from dupflow.match.job import MatchReport
from dupflow.match.summary import summary_markdown
from dupflow.report import ReportSettings, write_report
from dupflow.tasks.policy import IO_RETRIES, NOT_CACHED

__all__ = ["publish_summary_task", "summary_key", "write_report_task"]


@task(name="write-report", **IO_RETRIES)
def write_report_task(out: str, settings: ReportSettings, store: str, storage_options: dict[str, Any]
                      ) -> dict[str, Any]:
    """Write OUT/report.html and its record OUT/report.json for the match run in OUT; returns
    `ReportResult.brief()`."""
    return write_report(out, settings, store, storage_options=storage_options).brief()


@task(name="publish-summary", **NOT_CACHED)
def publish_summary_task(report: MatchReport, applied: dict[str, Any] | None = None,
                         page: dict[str, Any] | None = None) -> str:
    """Attach the summary (what the apply step did, where the HTML report is) to the flow run (Artifacts
    tab); return the Markdown."""
    text = summary_markdown(report.summary, report.out, applied, page)
    create_markdown_artifact(text, key=summary_key(report.out), description=f"dupflow summary of {report.out}")
    return text


def summary_key(out: str) -> str:
    """The summary artifact's key, one per output folder (Prefect keeps each key's history):
    `dupflow-summary-<the folder's last parts>-<8 hex digits of the whole URL>`, in the lowercase letters,
    digits and dashes that Prefect allows."""
    tail = "-".join(out.rstrip("/").split("/")[-2:])
    slug = re.sub(r"[^a-z0-9]+", "-", tail.lower()).strip("-")[:60].strip("-")
    digest = hashlib.sha256(out.rstrip("/").encode()).hexdigest()[:8]
    return f"dupflow-summary-{slug}-{digest}" if slug else f"dupflow-summary-{digest}"
