"""The `dupflow` command: the core commands plus `run` (the whole flow on Dask) and `deploy`.

Prefect is imported only when `run` or `deploy` is called, so `dupflow encode` and `match` stay quick;
like the core commands', the library parts `run` needs are imported when it is called.
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
from pydantic import BaseModel

from dupflow.cli.apply import print_apply_brief
from dupflow.cli.common import report_errors, say, storage_option
from dupflow.cli.main import dataset_options, main, print_encode_report, print_match_summary
from dupflow.cli.options import given, options
from dupflow.config import ApplyStep, DedupConfig, load_config, merged, validate_config
from dupflow.encode.settings import EncodeSettings
from dupflow.errors import ConfigError
from dupflow.io.fs import parse_storage_options
from dupflow.io.secrets import split_secrets
from dupflow.io.sources import parse_datasets
from dupflow.match.settings import MatchSettings
from dupflow.report.settings import ReportSettings
from dupflow.units import human_size

__all__ = ["main"]


# The stages' settings that `run` takes as flags; each comes from its stage's settings model.
RUN_SECTIONS: dict[str, tuple[type[BaseModel], tuple[str, ...]]] = {
    "encode": (EncodeSettings, ()),
    "match": (MatchSettings, ("datasets", "threads", "preset")),  # encode's --preset names the run's preset
    "apply": (ApplyStep, ("duplicates_root", "threads")),
    "report": (ReportSettings, ("threads",)),
}


def config_from_flags(config_file: str | None, flags: dict[str, Any]) -> tuple[DedupConfig, dict[str, Any]]:
    """The run's DedupConfig (`--config FILE` as the base, flags given on the command line on top), and
    the credentials among the `-o` storage options, which never go into the config."""
    body: dict[str, Any] = {}
    public, credentials = split_secrets(parse_storage_options(list(flags["storage_options"])))
    if flags["datasets"] or flags["root"]:
        sources = parse_datasets(list(flags["datasets"]), flags["root"], list(flags["dirs"]))
        body["datasets"] = [{"name": s.name, "url": s.url} for s in sources]
    body.update({key: flags[key] for key in ("store", "out") if flags[key]})
    sections = {name: given(name, model, flags) for name, (model, _) in RUN_SECTIONS.items()}
    if "preset" in sections["encode"]:  # one --preset for the encode and match stages
        body["preset"] = sections["encode"].pop("preset")
    body.update({name: values for name, values in sections.items() if values and name != "apply"})
    if public:
        body["storage_options"] = public
    if flags["apply"] or sections["apply"].get("execute"):
        body["apply"] = sections["apply"]
    elif sections["apply"]:
        raise ConfigError(f"{', '.join(sorted(sections['apply']))} set how the apply step runs: add --apply")
    if flags["no_report"]:
        body["report"] = None
    cluster = {k: v for k, v in (("address", flags["address"]), ("workers", flags["workers"])) if v}
    if cluster:
        body["cluster"] = cluster
    if config_file:
        return load_config(config_file, body), credentials
    if "datasets" not in body:
        raise ConfigError("no dataset given: add --dataset NAME=URL (repeatable), --root DIR, or --config dupflow.yaml")
    return validate_config(body, "the command line"), credentials


def preflight(config: DedupConfig, credentials: dict[str, Any]) -> None:
    """Fail in seconds, before the Prefect API and the cluster start, on a dataset that does not exist or
    storage that does not answer (endpoint, credentials). With a Secret block the credentials are only
    known inside the flow run, which then reports these problems itself. A GPU asked for on a local
    cluster is checked here too (a remote cluster's workers are checked by the flow)."""
    from dupflow.encode.cnn import check_device
    from dupflow.io.preflight import check_sources, check_storage

    if not config.cluster.address:
        check_device(config.encode_settings())
    if config.storage_secret:
        return
    options = merged(config.storage_options, credentials)
    check_sources(config.sources(), options)
    check_storage(config.store, options, "store")
    check_storage(config.out, options, "output folder")


def _run_options(fn: Any) -> Any:
    for name, (model, exclude) in reversed(RUN_SECTIONS.items()):
        fn = options(name, model, exclude=exclude)(fn)
    return fn


@main.command()
@click.option("--config", "-c", "config_file", metavar="FILE",
              help="dupflow.yaml with every setting (local or s3://); flags given here override it.")
@dataset_options
@click.option("--store", "-s", metavar="STORE", help="Encodings store: a local folder or S3 prefix.")
@click.option("--out", metavar="OUT", help="Folder or prefix for pairs, groups, scores, manifest and summary.")
@_run_options
@click.option("--address", metavar="tcp://HOST:8786",
              help="Run on this Dask scheduler (default: $DUPFLOW_DASK_ADDRESS, else a local cluster).")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Local cluster worker processes [default: CPU count].")
@click.option("--apply", is_flag=True, help="End with an apply step over the manifest (a dry run unless --execute).")
@click.option("--no-report", is_flag=True,
              help="Skip OUT/report.html (the HTML report; `dupflow report` can write it later).")
@storage_option
def run(config_file: str | None, **flags: Any) -> None:
    """Encode and match in one Prefect flow on Dask; writes the same files into OUT as `match`.

    \b
    dupflow run --dataset train=./data/train --dataset val=./data/val --store ./store --out ./out
    dupflow run --config dupflow.yaml
    dupflow run --config dupflow.yaml --address tcp://scheduler:8786

    Dataset order is keep priority (the first dataset's copy is kept). Without a PREFECT_API_URL
    (environment, Prefect profile or prefect.toml) the flow runs against an embedded Prefect API,
    started beside the local cluster (no server needed). Nothing moves unless --execute.
    Relative local paths are made absolute here, before any worker sees them. Credentials given with
    -o (key, secret, token, ...) go to the run directly, never into its parameters.
    """

    def go() -> None:
        config, credentials = config_from_flags(config_file, flags)
        relative = config.relative_paths()
        if relative:  # workers of a cluster elsewhere would resolve them in their own folder
            config = config.with_absolute_paths()
            say(f"local paths made absolute against {os.getcwd()}: "
                       + ", ".join(r.split("=", 1)[0] for r in relative), err=True)
        preflight(config, credentials)
        quiet_dask = "DASK_LOGGING__DISTRIBUTED" not in os.environ
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # for the worker processes
        from dupflow.flows.embedded_api import API_URL_ENV, EmbeddedApi

        # the embedded API starts first (6-16 s), beside Prefect's imports here and the cluster's start
        api = None if os.environ.get(API_URL_ENV) else EmbeddedApi.start()
        try:
            from dupflow.flows.dedup import dedup
            from dupflow.flows.runtime import local_runtime
            from dupflow.flows.secrets import storage_credentials

            if quiet_dask:  # Prefect's logging set-up brings back Dask's per-worker INFO lines
                logging.getLogger("distributed").setLevel(logging.WARNING)
            with local_runtime(config, api) as config, storage_credentials(credentials):
                result = dedup(config)
        finally:
            if api is not None:
                api.stop()
        print_encode_report(result.encode)
        print_match_summary(result.match)
        if result.apply is not None:
            print_apply_brief(result.apply)
        if result.report is not None:
            say(f"report: {result.report['path']} ({human_size(result.report['bytes'])}, "
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
        say(f"deployed to {PREFECT_API_URL.value()}; start a worker: prefect worker start --pool {pool}")

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
            say(f"created process work pool {name!r}")
