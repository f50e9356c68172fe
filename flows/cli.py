"""The `dupflow` command: the core commands plus `run` (the whole flow on Dask) and `deploy`.

Prefect is imported only when `run` or `deploy` is called, so `dupflow encode` and `match` stay quick.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from dupflow.cli import (
    dataset_options,
    encode_options,
    main,
    match_options,
    parse_encoders,
    print_encode_report,
    print_match_summary,
)
from dupflow.cli_apply import print_apply_brief
from dupflow.cli_common import report_errors, storage_option
from dupflow.config import parse_datasets, parse_storage_options
from dupflow.errors import ConfigError
from dupflow.run_config import DedupConfig, load_config, validate_config
from dupflow.summary import human_size

__all__ = ["main"]


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def config_from_flags(ctx: click.Context, config_file: str | None, flags: dict[str, Any]) -> DedupConfig:
    """The run's DedupConfig: `--config FILE` as the base, flags given on the command line on top."""
    body: dict[str, Any] = {}
    if flags["datasets"] or flags["root"]:
        sources = parse_datasets(list(flags["datasets"]), flags["root"], list(flags["dirs"]))
        body["datasets"] = [{"name": s.name, "url": s.url} for s in sources]
    for key in ("store", "out", "max_pixels", "shard_size", "orientations", "duplicates_root", "examples",
                "match_blocks", "cnn_model", "embeddings", "embed_col_name",
                "allow_missing_embeddings"):  # flags named as the config's keys
        if _given(ctx, key) or (config_file is None and flags[key] is not None):
            body[key] = flags[key]
    if _given(ctx, "hash_size") or config_file is None:
        body["hash_size"] = int(flags["hash_size"])
    if flags["encoders"] or config_file is None:
        body["encoders"] = list(parse_encoders(flags["encoders"]))
    for key in ("rules", "keep", "reference"):
        if flags[key]:
            body[key] = list(flags[key])
    if flags["storage_options"]:
        body["storage_options"] = parse_storage_options(list(flags["storage_options"]))
    if flags["apply"] or flags["execute"]:  # replaces the config file's apply section
        body["apply"] = {"execute": flags["execute"], "on_conflict": flags["on_conflict"],
                         "sidecars": [x.strip() for x in flags["sidecars"].split(",") if x.strip()]}
        if flags["journal"]:
            body["apply"]["journal"] = flags["journal"]
    if flags["no_report"]:
        body["report"] = None
    elif flags["thumbnails"] is not None:
        body["report"] = {"thumbnails": flags["thumbnails"]}
    cluster = {k: v for k, v in (("address", flags["address"]), ("workers", flags["workers"])) if v}
    if cluster:
        body["cluster"] = cluster
    if config_file:
        return load_config(config_file, body)
    if "datasets" not in body:
        raise ConfigError("no dataset given: add --dataset NAME=URL (repeatable), --root DIR, or --config dupflow.yaml")
    return validate_config(body, "the command line")


@main.command()
@click.option("--config", "-c", "config_file", metavar="FILE",
              help="dupflow.yaml with every setting (local or s3://); flags given here override it.")
@dataset_options
@click.option("--store", "-s", metavar="STORE", help="Encodings store: a local folder or S3 prefix.")
@click.option("--out", metavar="OUT", help="Folder or prefix for pairs, groups, scores, manifest and summary.")
@encode_options
@match_options
@click.option("--match-blocks", type=click.IntRange(min=0), default=None,
              help="Match tasks per rule [default: two per worker thread].")
@click.option("--address", metavar="tcp://HOST:8786",
              help="Run on this Dask scheduler (default: $DUPFLOW_DASK_ADDRESS, else a local cluster).")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Local cluster worker processes [default: CPU count].")
@click.option("--apply", is_flag=True, help="End with an apply step over the manifest (a dry run unless --execute).")
@click.option("--execute", is_flag=True, help="Apply for real: move the files (implies --apply).")
@click.option("--sidecars", default="", metavar=".txt,.json", help="With --apply: files that move with their image.")
@click.option("--on-conflict", type=click.Choice(["skip", "suffix"]), default="skip",
              help="With --apply: what happens when a destination exists.")
@click.option("--journal", default=None, metavar="URL", help="With --apply: the journal [default: OUT/apply-journal].")
@click.option("--no-report", is_flag=True,
              help="Skip OUT/report.html (the HTML report; `dupflow report` can write it later).")
@click.option("--thumbnails", type=click.IntRange(min=0), default=None,
              help="Images with a thumbnail in the report [default: 20000].")
@storage_option
@click.pass_context
def run(ctx: click.Context, /, config_file: str | None, **flags: Any) -> None:
    """Encode and match in one Prefect flow on Dask; writes the same files into OUT as `match`.

    \b
    dupflow run --dataset train=./data/train --dataset val=./data/val --store ./store --out ./out
    dupflow run --config dupflow.yaml
    dupflow run --config dupflow.yaml --address tcp://scheduler:8786

    Dataset order is keep priority (the first dataset's copy is kept). Without PREFECT_API_URL the
    flow runs against an embedded Prefect API (no server needed). Nothing moves unless --execute.
    """

    def go() -> None:
        config = config_from_flags(ctx, config_file, flags)
        quiet_dask = "DASK_LOGGING__DISTRIBUTED" not in os.environ
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # for the worker processes
        from flows.dedup import dedup
        from flows.runtime import prefect_api

        if quiet_dask:  # Prefect's logging set-up brings back Dask's per-worker INFO lines
            logging.getLogger("distributed").setLevel(logging.WARNING)

        with prefect_api():
            result = dedup(config)
        print_encode_report(result.encode)
        print_match_summary(result.match)
        if result.apply is not None:
            print_apply_brief(result.apply)
        if result.report is not None:
            click.echo(f"report: {result.report['path']} ({human_size(result.report['bytes'])}, "
                       f"{result.report['thumbnails']:,} thumbnails)")

    report_errors(go)


@main.command()
@click.option("--name", "names", multiple=True, metavar="DEPLOYMENT",
              help="Deploy only these (e.g. nightly, adhoc, on-ingest); default: every deployment in the file.")
@click.option("--prefect-file", default="prefect.yaml", show_default=True, type=click.Path(dir_okay=False),
              help="The deployments file; its folder is the project root the entrypoints are relative to.")
@click.option("--pool", default="dupflow", show_default=True, help="Work pool (created as a process pool if missing).")
def deploy(names: tuple[str, ...], prefect_file: str, pool: str) -> None:
    """Register dupflow's deployments (nightly, adhoc, on-ingest) with the Prefect server at
    PREFECT_API_URL, creating the work pool first. Then: prefect worker start --pool dupflow."""

    def go() -> None:
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            raise ConfigError("dupflow deploy needs a Prefect server: export PREFECT_API_URL=http://HOST:4200/api "
                              "(or run `prefect server start` first)")
        path = Path(prefect_file).resolve()
        if not path.is_file():
            raise ConfigError(f"{prefect_file} not found: run from the dupflow project folder or pass --prefect-file")
        ensure_work_pool(pool)
        prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
        which = [arg for n in names for arg in ("--name", n)] or ["--all"]
        command = [prefect, "--no-prompt", "deploy", *which, "--prefect-file", str(path)]
        done = subprocess.run(command, cwd=path.parent, env=os.environ.copy(), check=False)
        if done.returncode:
            raise ConfigError(f"prefect deploy failed (exit {done.returncode}); its output is above")
        click.echo(f"deployed to {PREFECT_API_URL.value()}; start a worker: prefect worker start --pool {pool}")

    report_errors(go)


def ensure_work_pool(name: str) -> None:
    """Create a process work pool called `name` unless the server has one."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            click.echo(f"created process work pool {name!r}")
