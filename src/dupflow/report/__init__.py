"""The report: a self-contained interactive HTML page over a match run's outputs."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dupflow.report.build import REPORT_FILE, ReportResult, write_report
    from dupflow.report.settings import ReportSettings

__all__ = ["REPORT_FILE", "ReportResult", "ReportSettings", "write_report"]

# Where each export lives, imported on first use (PEP 562): the settings then import without the
# builder's imports (numpy, pyarrow, Pillow).
_HOMES = {"REPORT_FILE": "build", "ReportResult": "build", "ReportSettings": "settings", "write_report": "build"}

if not TYPE_CHECKING:  # type checkers see the imports above

    def __getattr__(name: str) -> Any:
        """An export, imported from its module when first asked for."""
        if name not in _HOMES:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
        globals()[name] = value
        return value
