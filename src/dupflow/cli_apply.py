"""`dupflow apply`, `undo` and `export`: the commands that act on a reviewed manifest."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import pyarrow as pa

from dupflow.apply import ApplyOptions, ApplyReport, apply_manifest, undo_journal
from dupflow.apply.paths import parent
from dupflow.cli_common import report_errors, storage_option
from dupflow.config import parse_storage_options
from dupflow.errors import ConfigError
from dupflow.exports import coco_for_dataset, kept_files, removed_sources, write_table
from dupflow.fs import atomic_write, open_fs, read_json
from dupflow.summary import human_size

__all__ = ["apply_cmd", "export_cmd", "print_apply_brief", "print_apply_report", "undo_cmd"]

execute_option = click.option("--execute", is_flag=True,
                              help="move the files (without it: a dry run, nothing changes).")
resume_option = click.option("--resume", is_flag=True, help="first finish a run of this journal that was killed.")
threads_option = click.option("--threads", default=8, show_default=True, type=click.IntRange(min=1),
                              help="files moved at once (object stores gain most).")
show_option = click.option("--show", default=20, show_default=True, type=click.IntRange(min=0),
                           help="files listed on the terminal (the results table lists all).")


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise ConfigError(f"{what} takes NAME=URL, not {item!r}")
        out[name] = url
    return out


@click.command("apply")
@click.argument("manifest", required=False)
@click.option("--journal", "-j", metavar="URL",
              help="journal folder, local or s3:// (default: apply-journal beside the manifest).")
@execute_option
@resume_option
@click.option("--sidecars", default="", metavar=".txt,.json",
              help="files beside an image with these extensions (a.txt or a.jpg.txt for a.jpg) move with it.")
@click.option("--annotations", multiple=True, metavar="DATASET=URL",
              help="a folder laid out like the dataset whose annotation files (--sidecars, default .txt,.json,"
              ".xml) move with their image (repeatable).")
@click.option("--on-conflict", type=click.Choice(["skip", "suffix"]), default="skip", show_default=True,
              help="when a destination exists: leave the file, or move it to stem.dupN.ext.")
@click.option("--duplicates-root", default=None, metavar="URL",
              help="where duplicates may go (default: the root the manifest was planned with).")
@threads_option
@show_option
@storage_option
def apply_cmd(manifest: str | None, journal: str | None, execute: bool, resume: bool, sidecars: str,
              annotations: tuple[str, ...], on_conflict: str, duplicates_root: str | None, threads: int, show: int,
              storage_options: tuple[str, ...]) -> None:
    """Move the files of a reviewed manifest (OUT/manifest.parquet). A dry run unless --execute:
    prints and writes what would move. Every move is journaled; `dupflow undo JOURNAL` reverses them."""

    def go() -> None:
        if journal is None and manifest is None:
            raise ConfigError("name the manifest, or the --journal of the run to resume")
        options = ApplyOptions(
            sidecars=tuple(s.strip() for s in sidecars.split(",") if s.strip()),
            annotations=_pairs(annotations, "--annotations"), on_conflict=on_conflict,  # type: ignore[arg-type]
            duplicates_root=duplicates_root, threads=threads,
        )
        report = apply_manifest(manifest, journal or f"{parent(manifest or '')}/apply-journal", options,
                                execute=execute, resume=resume,
                                storage_options=parse_storage_options(list(storage_options)))
        print_apply_report(report, show)

    report_errors(go)


@click.command("undo")
@click.argument("journal")
@execute_option
@resume_option
@threads_option
@show_option
@storage_option
def undo_cmd(journal: str, execute: bool, resume: bool, threads: int, show: int,
             storage_options: tuple[str, ...]) -> None:
    """Put every file an apply journal moved back where it was (a dry run unless --execute)."""

    def go() -> None:
        report = undo_journal(journal, execute=execute, resume=resume, threads=threads,
                              storage_options=parse_storage_options(list(storage_options)))
        print_apply_report(report, show)

    report_errors(go)


def print_apply_report(report: ApplyReport, show: int) -> None:
    """Counts per outcome, the first files, where the full table is, and what to do next."""
    verb = "apply" if report.mode == "apply" else "undo"
    if report.resumed:
        click.echo(f"resumed run {report.run}")
    if report.unfinished:
        click.echo(f"note: the journal holds run {report.unfinished}, which did not finish; "
                   f"`--execute --resume` finishes it first")
    click.echo(f"{verb} {'run ' + report.run if report.executed else 'dry run: nothing was changed'}")
    for outcome, n in report.counts.items():
        click.echo(f"  {outcome:<17}{n:>9,}")
    click.echo(f"  {'bytes':<17}{human_size(report.bytes_moved):>9}")
    for row in report.results.slice(0, show).to_pylist():
        why = f"  ({row['reason']})" if row["reason"] else ""
        click.echo(f"{row['outcome']:<17}{row['source']} -> {row['destination']}{why}")
    if report.results.num_rows > show:
        click.echo(f"... {report.results.num_rows - show:,} more")
    click.echo(f"every file: {report.results_url}")
    if not report.executed and report.results.num_rows:
        click.echo(f"add --execute to {'move' if verb == 'apply' else 'restore'} them (journal: {report.journal})")
    if report.failed:
        click.echo(f"{report.failed} files failed and stayed where they were: fix the cause and run the same "
                   f"command again", err=True)
        sys.exit(3)


def print_apply_brief(brief: dict[str, Any]) -> None:
    """One line for the apply step of `dupflow run`."""
    counts = ", ".join(f"{k} {v:,}" for k, v in brief["counts"].items()) or "nothing to do"
    what = f"apply run {brief['run']}" if brief["executed"] else "apply dry run (nothing moved)"
    click.echo(f"{what}: {counts}, {human_size(brief['bytes'])}; every file: {brief['results']}")
    if brief["counts"].get("failed"):
        click.echo(f"{brief['counts']['failed']} files failed to move: run again to retry them", err=True)
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
        if not kept and not coco:
            raise ConfigError("nothing to export: give --kept FILE and/or --coco FILE --coco-out FILE")
        if coco and not (coco_out and coco_dataset):
            raise ConfigError("--coco needs --coco-dataset (the dataset it describes) and --coco-out")
        options = parse_storage_options(list(storage_options))
        removed = removed_sources(manifest or f"{out.rstrip('/')}/manifest.parquet", journal, options)
        table = kept_files(out, removed, options)
        if kept:
            write_table(table, kept, options)
            click.echo(f"{table.num_rows:,} kept files -> {kept} ({len(removed):,} removed)")
        if coco and coco_out and coco_dataset:
            _export_coco(table, removed, coco, coco_dataset, coco_prefix, coco_out, options)

    report_errors(go)


def _export_coco(kept: pa.Table, removed: set[str], coco: str, dataset: str, prefix: str, coco_out: str,
                 options: dict[str, Any]) -> None:
    body = read_json(coco, options, "COCO file")
    filtered, counts = coco_for_dataset(body, kept, removed, dataset, prefix)
    ofs, opath = open_fs(coco_out, options)
    atomic_write(ofs, opath, json.dumps(filtered).encode())
    click.echo(f"COCO: {counts.images - counts.removed_images:,} of {counts.images:,} images and "
               f"{counts.annotations - counts.removed_annotations:,} of {counts.annotations:,} annotations kept "
               f"-> {coco_out}")
    if counts.unmatched_images:
        click.echo(f"warning: {counts.unmatched_images:,} COCO images match no file of {dataset} (kept); "
                   f"check --coco-prefix", err=True)
