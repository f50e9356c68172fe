"""`dupflow apply`, `undo` and `export`: the commands that act on a reviewed manifest."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from dupflow.apply.settings import ApplyOptions, default_journal
from dupflow.cli.common import report_errors, say, storage_option
from dupflow.cli.options import build, options
from dupflow.errors import ConfigError
from dupflow.io.fs import atomic_write, open_fs, parse_storage_options, read_json
from dupflow.units import human_size

if TYPE_CHECKING:
    import pyarrow as pa

    from dupflow.apply.runner import ApplyReport

__all__ = ["apply_cmd", "export_cmd", "print_apply_brief", "print_apply_report", "undo_cmd"]

execute_option = click.option("--execute", is_flag=True,
                              help="move the files (without it: a dry run, nothing changes).")
resume_option = click.option("--resume", is_flag=True, help="first finish a run of this journal that was killed.")
show_option = click.option("--show", default=20, show_default=True, type=click.IntRange(min=0),
                           help="files listed on the terminal (the results table lists all).")


@click.command("apply")
@click.argument("manifest", required=False)
@click.option("--journal", "-j", metavar="URL",
              help="journal folder, local or s3:// (default: apply-journal beside the manifest).")
@execute_option
@resume_option
@options("apply", ApplyOptions)
@show_option
@storage_option
def apply_cmd(manifest: str | None, journal: str | None, execute: bool, resume: bool, show: int,
              storage_options: tuple[str, ...], **flags: Any) -> None:
    """Move the files of a reviewed manifest (OUT/manifest.parquet). A dry run unless --execute:
    prints and writes what would move. Every move is journaled; `dupflow undo JOURNAL` reverses them."""

    def go() -> None:
        from dupflow.apply.runner import apply_manifest

        if journal is None and manifest is None:
            raise ConfigError("name the manifest, or the --journal of the run to resume")
        options = build("apply", ApplyOptions, flags)
        report = apply_manifest(manifest, journal or default_journal(manifest or ""), options,
                                execute=execute, resume=resume,
                                storage_options=parse_storage_options(list(storage_options)))
        print_apply_report(report, show)

    report_errors(go)


@click.command("undo")
@click.argument("journal")
@execute_option
@resume_option
@options("apply", ApplyOptions, only=("threads",))
@show_option
@storage_option
def undo_cmd(journal: str, execute: bool, resume: bool, show: int, storage_options: tuple[str, ...],
             **flags: Any) -> None:
    """Put every file an apply journal moved back where it was (a dry run unless --execute)."""

    def go() -> None:
        from dupflow.apply.runner import undo_journal

        threads = build("apply", ApplyOptions, flags).threads
        report = undo_journal(journal, execute=execute, resume=resume, threads=threads,
                              storage_options=parse_storage_options(list(storage_options)))
        print_apply_report(report, show)

    report_errors(go)


def print_apply_report(report: ApplyReport, show: int) -> None:
    """Counts per outcome, the first files, where the full table is, and what to do next."""
    verb = "apply" if report.mode == "apply" else "undo"
    if report.note:  # nothing ran (e.g. --resume with nothing to resume): why, and what to run instead
        say(report.note)
        return
    if report.resumed:
        say(f"resumed run {report.run}")
    if report.unfinished:
        say(f"note: the journal holds run {report.unfinished}, which did not finish; "
                   f"`--execute --resume` finishes it first")
    say(f"{verb} {'run ' + report.run if report.executed else 'dry run: nothing was changed'}")
    for outcome, n in report.counts.items():
        say(f"  {outcome:<17}{n:>9,}")
    say(f"  {'bytes':<17}{human_size(report.bytes_moved):>9}")
    for row in report.results.slice(0, show).to_pylist():
        why = f"  ({row['reason']})" if row["reason"] else ""
        say(f"{row['outcome']:<17}{row['source']} -> {row['destination']}{why}")
    if report.results.num_rows > show:
        say(f"... {report.results.num_rows - show:,} more")
    say(f"every file: {report.results_url}")
    if not report.executed and report.results.num_rows:
        say(f"add --execute to {'move' if verb == 'apply' else 'restore'} them (journal: {report.journal})")
    if report.failed:
        say(f"{report.failed} files failed and stayed where they were: fix the cause and run the same "
                   f"command again", err=True)
        sys.exit(3)


def print_apply_brief(brief: dict[str, Any]) -> None:
    """One line for the apply step of `dupflow run`."""
    counts = ", ".join(f"{k} {v:,}" for k, v in brief["counts"].items()) or "nothing to do"
    what = f"apply run {brief['run']}" if brief["executed"] else "apply dry run (nothing moved)"
    say(f"{what}: {counts}, {human_size(brief['bytes'])}; every file: {brief['results']}")
    if brief["counts"].get("failed"):
        say(f"{brief['counts']['failed']} files failed to move: run again to retry them", err=True)
        sys.exit(3)


@click.command("export")
@click.option("--out", required=True, help="the match output folder (scores.parquet, manifest.parquet).")
@click.option("--manifest", default=None, metavar="URL", help="the manifest applied (default OUT/manifest.parquet).")
@click.option("--journal", "-j", default=None, metavar="URL",
              help="count as removed only what this apply journal actually moved (and no undo restored).")
@click.option("--kept", default=None, metavar="FILE.csv|FILE.parquet", help="write the kept files here.")
@click.option("--coco", default=None, metavar="FILE", help="a COCO annotation JSON to filter to the kept images.")
@click.option("--coco-dataset", default=None, metavar="NAME", help="the dataset the COCO file describes.")
@click.option("--coco-prefix", default="", metavar="DIR",
              help="the folder, inside the dataset, that COCO file_names are relative to.")
@click.option("--coco-out", default=None, metavar="FILE", help="where the filtered COCO JSON goes.")
@storage_option
def export_cmd(out: str, manifest: str | None, journal: str | None, kept: str | None, coco: str | None,
               coco_dataset: str | None, coco_prefix: str, coco_out: str | None,
               storage_options: tuple[str, ...]) -> None:
    """Export what stays after removing duplicates: the kept files, and a filtered COCO file."""

    def go() -> None:
        from dupflow.apply.exports import kept_files, removed_sources, write_table

        if not kept and not coco:
            raise ConfigError("nothing to export: give --kept FILE and/or --coco FILE --coco-out FILE")
        if coco and not (coco_out and coco_dataset):
            raise ConfigError("--coco needs --coco-dataset (the dataset it describes) and --coco-out")
        options = parse_storage_options(list(storage_options))
        removed = removed_sources(manifest or f"{out.rstrip('/')}/manifest.parquet", journal, options)
        table = kept_files(out, removed, options)
        if kept:
            write_table(table, kept, options)
            say(f"{table.num_rows:,} kept files -> {kept} ({len(removed):,} removed)")
        if coco and coco_out and coco_dataset:
            _export_coco(table, removed, coco, coco_dataset, coco_prefix, coco_out, options)

    report_errors(go)


def _export_coco(kept: pa.Table, removed: set[str], coco: str, dataset: str, prefix: str, coco_out: str,
                 options: dict[str, Any]) -> None:
    from dupflow.apply.exports import coco_for_dataset

    body = read_json(coco, options, "COCO file")
    filtered, counts = coco_for_dataset(body, kept, removed, dataset, prefix)
    ofs, opath = open_fs(coco_out, options)
    atomic_write(ofs, opath, json.dumps(filtered).encode())
    say(f"COCO: {counts.images - counts.removed_images:,} of {counts.images:,} images and "
               f"{counts.annotations - counts.removed_annotations:,} of {counts.annotations:,} annotations kept "
               f"-> {coco_out}")
    if counts.unmatched_images:
        say(f"warning: {counts.unmatched_images:,} COCO images match no file of {dataset} (kept); "
                   f"check --coco-prefix", err=True)
