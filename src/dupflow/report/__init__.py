"""The report: a self-contained interactive HTML page over a match run's outputs."""

from dupflow.report.build import REPORT_FILE, ReportResult, ReportSettings, write_report

__all__ = ["REPORT_FILE", "ReportResult", "ReportSettings", "write_report"]
