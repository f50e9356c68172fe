"""`dupflow report`: the self-contained HTML report of a match run."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import click

from dupflow.cli_common import report_errors, storage_option
from dupflow.config import parse_storage_options
from dupflow.report import ReportResult, ReportSettings, write_report
from dupflow.summary import human_size

__all__ = ["print_report_result", "report_cmd", "report_options"]


def report_options(fn: Any) -> Any:
    """The report's settings, shared by `report` and `run`."""
    for option in reversed([
        click.option("--thumbnails", default=20_000, show_default=True, type=click.IntRange(min=0),
                     help="images that get an embedded thumbnail: duplicate groups first (largest first), then the "
                     "rest. Each costs about 3-6 KB of page."),
        click.option("--thumb-size", default=160, show_default=True, type=click.IntRange(16, 1024),
                     help="thumbnail size in pixels (long side)."),
        click.option("--thumb-format", type=click.Choice(["webp", "jpeg"]), default="webp", show_default=True),
        click.option("--plot-points", default=5_000, show_default=True, type=click.IntRange(min=0),
                     help="images in the 2-D embedding view (grouped ones first, then a sample)."),
        click.option("--extra-scores", default=None, metavar="FILE",
                     help="your per-image scores (Parquet or CSV with a `uri` column, or `rel_path` [+ `dataset`]) "
                     "shown beside similarity, e.g. a model's confidence."),
        click.option("--extra-score-cols", default="", metavar="A,B",
                     help="columns of --extra-scores to show (default: all but the key)."),
        click.option("--originals", type=click.Choice(["auto", "none", "presign"]), default="auto", show_default=True,
                     help="links to the original files: auto links local files (file://); presign also puts "
                     "presigned S3 links in the page (anyone with the page can then fetch those files)."),
        click.option("--presign-seconds", default=3600, show_default=True, type=click.IntRange(1, 604800),
                     help="how long --originals presign links work."),
    ]):
        fn = option(fn)
    return fn


def settings_from(flags: dict[str, Any]) -> ReportSettings:
    """ReportSettings from the report options (they are removed from `flags`)."""
    cols = flags.pop("extra_score_cols")
    return ReportSettings(
        thumbnails=flags.pop("thumbnails"), thumb_size=flags.pop("thumb_size"), thumb_format=flags.pop("thumb_format"),
        plot_points=flags.pop("plot_points"), extra_scores=flags.pop("extra_scores"),
        extra_score_cols=tuple(c.strip() for c in cols.split(",") if c.strip()),
        originals=flags.pop("originals"), presign_seconds=flags.pop("presign_seconds"))


@click.command("report")
@click.option("--out", required=True, metavar="URL", help="where report.html goes (and the match outputs, by default).")
@click.option("--store", "-s", default=None, metavar="URL",
              help="the encodings store that was matched (default: the one summary.json names).")
@click.option("--matches", default=None, metavar="URL",
              help="the `dupflow match --out` folder to report on, when it is not --out.")
@report_options
@click.option("--threads", default=8, show_default=True, type=click.IntRange(min=1), help="thumbnail readers.")
@storage_option
def report_cmd(out: str, store: str | None, matches: str | None, threads: int, storage_options: tuple[str, ...],
               **flags: Any) -> None:
    """Write OUT/report.html: one self-contained page (thumbnails inside, nothing fetched) to review a match
    run's groups, pairs, every image's status and uniqueness, leakage across datasets, errors and plots."""

    def go() -> None:
        settings = settings_from(flags)
        result = write_report(out, replace(settings, threads=threads), store, matches,
                              parse_storage_options(list(storage_options)))
        print_report_result(result)

    report_errors(go)


def print_report_result(result: ReportResult) -> None:
    """What the report holds and where it is."""
    click.echo(f"report: {result.path} ({human_size(result.bytes)}): {result.images:,} images, {result.pairs:,} pairs, "
               f"{result.groups:,} groups; {result.thumbnails:,} thumbnails ({human_size(result.thumbnail_bytes)})"
               + (f", {result.thumbnail_failures:,} could not be drawn" if result.thumbnail_failures else ""))
    click.echo("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.seconds.items()))
