"""`dupflow report`: the self-contained HTML report of a match run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from dupflow.cli.common import report_errors, say, storage_option
from dupflow.cli.options import build, options
from dupflow.io.fs import parse_storage_options
from dupflow.report.settings import ReportSettings
from dupflow.units import human_size

if TYPE_CHECKING:
    from dupflow.report.build import ReportResult

__all__ = ["print_report_result", "report_cmd"]


@click.command("report")
@click.option("--out", required=True, metavar="URL", help="where report.html goes (and the match outputs, by default).")
@click.option("--store", "-s", default=None, metavar="URL",
              help="the encodings store that was matched (default: the one summary.json names).")
@click.option("--matches", default=None, metavar="URL",
              help="the `dupflow match --out` folder to report on, when it is not --out.")
@options("report", ReportSettings)
@storage_option
def report_cmd(out: str, store: str | None, matches: str | None, storage_options: tuple[str, ...],
               **flags: Any) -> None:
    """Write OUT/report.html: one self-contained page (thumbnails inside, nothing fetched) to review a match
    run's groups, pairs, every image's status and uniqueness, leakage across datasets, errors and plots."""

    def go() -> None:
        from dupflow.report.build import write_report  # numpy, pyarrow, Pillow: only when writing one

        settings = build("report", ReportSettings, flags)
        result = write_report(out, settings, store, matches, parse_storage_options(list(storage_options)))
        print_report_result(result)

    report_errors(go)


def print_report_result(result: ReportResult) -> None:
    """What the report holds and where it is."""
    say(f"report: {result.path} ({human_size(result.bytes)}): {result.images:,} images, {result.pairs:,} pairs, "
               f"{result.groups:,} groups; {result.thumbnails:,} thumbnails ({human_size(result.thumbnail_bytes)})"
               + (f", {result.thumbnail_failures:,} could not be drawn" if result.thumbnail_failures else ""))
    say("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.seconds.items()))
