"""The report: a self-contained interactive HTML page over a match run's outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dupflow.lazy import lazy_exports

if TYPE_CHECKING:
    from dupflow.report.build import REPORT_FILE, ReportResult, write_report
    from dupflow.report.settings import ReportSettings

__all__ = ["REPORT_FILE", "ReportResult", "ReportSettings", "write_report"]

# Where each export lives, imported on first use (PEP 562): the settings then import without the
# builder's imports (numpy, pyarrow, Pillow).
_HOMES = {"REPORT_FILE": "dupflow.report.build", "ReportResult": "dupflow.report.build",
          "ReportSettings": "dupflow.report.settings", "write_report": "dupflow.report.build"}

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__ = lazy_exports(__name__, _HOMES)
