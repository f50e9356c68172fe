"""The run's report in Prefect: a Markdown artifact with the summary, next to the flow run."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from dupflow.match_job import MatchReport
from dupflow.summary import summary_markdown
from tasks.policy import NOT_CACHED

__all__ = ["publish_summary_task"]


@task(name="publish-summary", **NOT_CACHED)
def publish_summary_task(report: MatchReport, applied: dict[str, Any] | None = None) -> str:
    """Attach the summary (and what the apply step did) to the flow run (Artifacts tab); return the Markdown."""
    text = summary_markdown(report.summary, report.out, applied)
    create_markdown_artifact(text, key="dupflow-summary", description=f"dupflow summary of {report.out}")
    return text
