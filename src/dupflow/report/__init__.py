"""The report: a self-contained interactive HTML page over a match run's outputs."""

from dupflow.report.build import REPORT_FILE, ReportResult, write_report
from dupflow.report.settings import ReportSettings

__all__ = ["REPORT_FILE", "ReportResult", "ReportSettings", "write_report"]
