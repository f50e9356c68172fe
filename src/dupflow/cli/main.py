"""The `dupflow` command line: a thin layer over the library and its validated settings.

Building the commands needs only the settings models; each command imports the library parts it runs
(numpy, pyarrow, fsspec, Pillow, the encoders) when it is called, so `--help` and `info` start quickly."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from dupflow.cli.apply import apply_cmd, export_cmd, undo_cmd
from dupflow.cli.common import long_storage_option, report_errors, say, storage_option
from dupflow.cli.options import build, options
from dupflow.cli.report import report_cmd
from dupflow.encode.settings import EncodeSettings
from dupflow.io.fs import parse_storage_options
from dupflow.io.sources import parse_datasets
from dupflow.match.settings import MatchSettings
from dupflow.units import human_size

if TYPE_CHECKING:
    from dupflow.match.job import MatchReport
    from dupflow.store.encode_job import EncodeReport

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="dupflow", prog_name="dupflow")  # the metadata is read only when asked
def main() -> None:
    """Find exact and near-duplicate images within and across datasets."""


main.add_command(apply_cmd)
main.add_command(undo_cmd)
main.add_command(export_cmd)
main.add_command(report_cmd)


def dataset_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--dataset NAME=URL (repeatable) and --root DIR --dirs a b, shared by `encode` and `run`."""
    for option in reversed([
        click.option("--dataset", "-d", "datasets", multiple=True, metavar="NAME=URL",
                     help="A dataset: local folder, s3://bucket/prefix or fsspec URL (repeatable)."),
        click.option("--root", "-r", metavar="DIR", help="A root folder; with --dirs, each sub-folder is a dataset."),
        click.option("--dirs", multiple=True, metavar="DIR", help="Sub-folders of --root (each becomes a dataset)."),
    ]):
        fn = option(fn)
    return fn


@main.command()
@dataset_options
@click.option("--store", "-s", required=True, metavar="STORE", help="Encodings store: a local folder or S3 prefix.")
@options("encode", EncodeSettings)
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Encoding processes, this one included [default: CPU count].")
@storage_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.argument("more_dirs", nargs=-1, metavar="[DIR]...")
def encode(more_dirs: tuple[str, ...], datasets: tuple[str, ...], root: str | None, dirs: tuple[str, ...], store: str,
           workers: int | None, storage_options: tuple[str, ...], quiet: bool, **flags: Any) -> None:
    """Encode images into a Parquet encodings store, incrementally.

    \b
    dupflow encode --dataset train=./data/train --dataset val=s3://bucket/val --store ./dupflow-store
    dupflow encode --root ~/dataset --dirs dir_1 dir_2 --store ./dupflow-store --encoders phash,dhash
    """

    def go() -> None:
        from dupflow.encode.cnn import check_device
        from dupflow.store.encode_job import run_encode
        from dupflow.store.lease import StoreLease

        if more_dirs and not dirs:
            raise click.UsageError(f"unexpected argument(s) {' '.join(more_dirs)}: datasets go in --dataset NAME=URL")
        sources = parse_datasets(list(datasets), root, [*dirs, *more_dirs])
        settings = build("encode", EncodeSettings, flags, storage_options=parse_storage_options(list(storage_options)))
        bar: Any = None

        def listed(total: int, todo: int) -> None:
            nonlocal bar
            say(
                f"listed {total:,} images in {len(sources)} dataset(s); {todo:,} to decode, {total - todo:,} unchanged",
                err=True,
            )
            if not quiet and todo:
                bar = click.progressbar(length=todo, label="encoding", file=sys.stderr, show_pos=True, show_eta=True)
                bar.__enter__()

        try:
            check_device(settings)  # before the store is touched
            with StoreLease(store, settings.storage_options):  # one writer per store, across machines
                report = run_encode(
                    sources,
                    store,
                    settings,
                    workers=workers or os.cpu_count() or 1,
                    on_listed=listed,
                    on_progress=(lambda n: bar.update(n)) if not quiet else None,
                )
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
        print_encode_report(report)

    report_errors(go)


def print_encode_report(r: EncodeReport) -> None:
    """What an encode run did, in a few lines."""
    rate = r.decoded / r.wall_seconds if r.wall_seconds else 0.0
    cpu = r.decoded / r.cpu_seconds if r.cpu_seconds else 0.0
    say(f"store      {r.store}  (encodings: {r.store.rstrip('/')}/encodings)")
    say(
        f"files      {r.listed:,} listed: {r.encoded:,} encoded, {r.reused:,} reused, "
        f"{r.new_errors:,} failed now, {r.dropped:,} dropped (gone)"
    )
    for name, n in sorted(r.per_dataset.items()):
        say(f"dataset    {name}: {n:,} files")
    if r.errors:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(r.errors.items()))
        say(f"errors     {sum(r.errors.values()):,} files without encodings ({kinds})")
    skipped = r.listing
    if skipped.skipped_extension or skipped.skipped_hidden or skipped.skipped_links or skipped.skipped_loops:
        say(
            f"skipped    {skipped.skipped_extension} non-image, {skipped.skipped_hidden} hidden, "
            f"{skipped.skipped_links} links leaving the root, {skipped.skipped_loops} link loops"
        )
    if skipped.sniffed or skipped.missing or skipped.repeated:
        say(
            f"found      {skipped.sniffed} by their first bytes (no image extension), {skipped.missing} listed "
            f"but missing (error rows), {skipped.repeated} listed twice (encoded once)"
        )
    for d in skipped.unreadable_dirs or []:
        say(f"warning    folder not listed: {d}", err=True)
    say(f"speed      {r.wall_seconds:.2f} s wall, {rate:,.0f} images/s, {cpu:,.0f} images per CPU-second")


@main.command()
@click.option("--store", "-s", required=True, help="the encodings store to read.")
@click.option("--out", required=True, help="folder or prefix for pairs, groups, scores, manifest and summary.")
@options("match", MatchSettings)
@storage_option
def match(store: str, out: str, storage_options: tuple[str, ...], **flags: Any) -> None:
    """Match a store's encodings; write pairs.parquet, groups.parquet, scores.parquet,
    manifest.parquet and summary.json into OUT. Nothing is moved."""

    def go() -> None:
        from dupflow.match.job import match_store  # the matcher's imports (numba, scipy): only when matching
        from dupflow.store.lease import StoreLease

        settings = build("match", MatchSettings, flags)
        options = parse_storage_options(storage_options)
        with StoreLease(store, options):  # the store cannot change while it is matched
            report = match_store(store, out, settings, options)
        print_match_summary(report)

    report_errors(go)


def print_match_summary(report: MatchReport) -> None:
    """A readable digest of summary.json."""
    s = report.summary
    t = s["totals"]
    say(f"rules: {' | '.join(s['settings']['rules'])}; keep: {s['settings']['keep']}")
    say(f"{t['encoded']} images matched ({t['images'] - t['encoded']} could not be read), "
               f"{t['pairs']} pairs, {t['groups']} groups, {t['failed']} images fail the rules")
    for name, d in s["datasets"].items():
        role = " (reference)" if d["reference"] else ""
        say(f"  {name}{role}: {d['encoded']} images, {d['duplicate_groups']} duplicated pictures appearing "
                   f"{d['appearances']} times, {d['to_move']} files to move ({human_size(d['bytes_to_move'])})")
    for name, x in s["intersections"].items():
        counts = ", ".join(f"{k} {v}" for k, v in x["images"].items())
        say(f"  {name}: {x['shared_groups']} shared groups ({counts} images)")
    say(f"manifest: {t['to_move']} files to move, {human_size(t['bytes_to_move'])} "
               f"-> {report.out}/manifest.parquet (nothing moved)")
    search = report.search
    if search.get("mode") == "incremental":
        searched = sum(r["searched"] for r in search["rules"])
        classes = sum(r["classes"] for r in search["rules"])
        reused = sum(r["reused_pairs"] for r in search["rules"])
        say(f"search: incremental, {searched:,} new of {classes:,} classes searched, {reused:,} pairs reused "
            "from the previous match (--no-incremental searches all)")
    elif search:
        say(f"search: full ({search['why']})")
    say("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in report.seconds.items()))


@main.command()
@click.option("--store", "-s", required=True, help="Encodings store to describe.")
@storage_option
def info(store: str, storage_options: tuple[str, ...]) -> None:
    """Describe an encodings store: state, settings, datasets, rows and errors."""

    def go() -> None:
        from dupflow.store.record import StoreRoot  # the record only: no pyarrow

        s = StoreRoot(store, parse_storage_options(list(storage_options)))
        rec = s.record()
        if rec is None:
            raise click.ClickException(f"{store} is not an encodings store (no _dupflow/store.json)")
        say(f"store      {store}")
        say(f"state      {rec.state} (run {rec.run_id}, {rec.updated_at})")
        say(f"settings   {rec.settings}")
        say(f"encoders   exact,{','.join(rec.encoders)}")
        say(f"encodings  {s.encodings_uri}")
        for name, d in sorted(rec.datasets.items()):
            origin = f", imported: {d['origin']}" if d.get("origin") else ""
            say(f"dataset    {name}: {d['rows']:,} rows, {d['errors']:,} errors, from {d.get('url')}{origin}")

    report_errors(go)


@main.command()
@click.option(
    "--encodings-in",
    "-i",
    "inputs",
    multiple=True,
    required=True,
    metavar="STORE",
    help="A store to merge (repeatable); later ones win for the same file.",
)
@click.option(
    "--encodings", "-o", "out", required=True, metavar="STORE", help="The merged store (created or extended)."
)
@long_storage_option
def merge(inputs: tuple[str, ...], out: str, storage_options: tuple[str, ...]) -> None:
    """Merge encodings stores: dupflow merge -i a -i b -o merged."""
    from dupflow.store.merging import merge_stores

    def go() -> None:
        counts = merge_stores(list(inputs), out, parse_storage_options(list(storage_options)))
        for name, n in sorted(counts.items()):
            say(f"dataset    {name}: {n:,} rows")
        say(f"merged {len(inputs)} store(s) into {out}")

    report_errors(go)


@main.group()
def model() -> None:
    """The cnn encoder's networks: convert them for ONNX Runtime ahead of a run."""


@model.command("prepare")
@click.option("--cnn-model", "spec_text", default=None, metavar="SPEC",
              help="the model to prepare [default: efficientnet-lite0, the packaged weights].")
def model_prepare(spec_text: str | None) -> None:
    """Convert a packaged network to ONNX in this machine's model cache (DUPFLOW_MODEL_CACHE, else
    ~/.cache/dupflow/models) and print the file: copy it into the cache of machines without PyTorch."""
    from dupflow.encode.models import ModelSpec, model_identity
    from dupflow.encode.onnx_net import CACHE_ENV, converted_model

    def go() -> None:
        spec = ModelSpec.parse(spec_text)
        if not spec.convertible:
            raise click.ClickException(f"{spec.text} needs no preparing: dupflow runs it as it is")
        start = time.perf_counter()
        path = converted_model(spec)
        say(f"model      {spec.text} ({model_identity(spec)})")
        say(f"onnx       {path} ({human_size(path.stat().st_size)}, ready in {time.perf_counter() - start:.1f} s)")
        say(f"elsewhere  copy it into ${CACHE_ENV} (or ~/.cache/dupflow/models) of each machine that encodes")

    report_errors(go)


@main.command("import-imagededup")
@click.argument("json_file")
@click.option(
    "--method",
    required=True,
    type=click.Choice(["phash", "dhash", "ahash", "whash"]),
    help="The imagededup hash class that wrote the file.",
)
@click.option(
    "--dataset",
    "-d",
    "dataset",
    required=True,
    metavar="NAME=DIR",
    help="Dataset name and the image folder the file names are relative to.",
)
@click.option("--store", "-s", required=True)
@storage_option
def import_imagededup_cmd(
    json_file: str, method: str, dataset: str, store: str, storage_options: tuple[str, ...]
) -> None:
    """Import an imagededup encodings JSON file ({file: hex hash}) into a store."""
    from dupflow.io.sources import DatasetSource
    from dupflow.store.merging import import_imagededup

    def go() -> None:
        n = import_imagededup(
            json_file, method, DatasetSource.parse(dataset), store, parse_storage_options(list(storage_options))
        )
        say(f"imported {n:,} {method} encodings into {store}")

    report_errors(go)


@main.command("sample-data")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--images", default=40, show_default=True, type=click.IntRange(min=4), help="Base images to cut.")
def sample_data(out: str, images: int) -> None:
    """Write a small train/val sample set with planted duplicates, leaks and a corrupt file, and
    OUT/truth.csv: every file with its kind and planted group, to compare with what matching finds."""
    from dupflow.samples import SOURCES, TRUTH_FILE, write_sample_set

    sample = write_sample_set(out, images)
    counts = sample.counts()
    groups = sample.groups()
    grouped = sum(len(g) for g in groups)
    say(f"wrote {sum(counts.values())} files to {out}/train and {out}/val: "
        + ", ".join(f"{v} {k}" for k, v in counts.items()))
    say(f"planted {len(groups)} duplicate groups of {grouped} files ({grouped - len(groups)} duplicates of "
        f"{len(groups)} originals; every other picture is unique); truth: {out}/{TRUTH_FILE}")
    say(f"source: {SOURCES}")
