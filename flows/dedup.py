"""The dedup flow: list (staged in the store) -> shard -> encode on Dask workers -> commit the store -> match
in blocks on the workers -> groups, scores, manifest, summary -> apply (only when configured; dry unless execute)
-> report."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from prefect import flow, get_run_logger, unmapped
from prefect.futures import as_completed
from prefect.utilities.annotations import quote

from dupflow.cli.common import shown
from dupflow.config import DedupConfig
from dupflow.encode.cnn import check_device
from dupflow.encode.encoding import EncodeStats
from dupflow.errors import ConfigError
from dupflow.flows.runtime import (
    ConfiguredDaskTaskRunner,
    cluster_threads,
    on_gpu_workers,
    require_gpu_workers,
    run_config,
    store_lock,
)
from dupflow.flows.secrets import run_storage_options
from dupflow.index.blocks import Block
from dupflow.match.job import BlockResult, MatchReport, cluster_blocks, rule_count
from dupflow.store.encode_job import EncodeReport, listing_parts
from dupflow.store.lease import StoreLease
from dupflow.store.listing_stage import new_stage_id
from dupflow.tasks import (
    apply_manifest_task,
    commit_encode_task,
    encode_shard_task,
    finish_match_task,
    list_source_task,
    match_block_task,
    open_encode_task,
    plan_match_task,
    prepare_encode_task,
    publish_summary_task,
    write_report_task,
)

__all__ = ["DedupResult", "dedup"]


@dataclass
class DedupResult:
    """What a dedup run encoded and what its match wrote."""

    encode: EncodeReport
    match: MatchReport
    apply: dict[str, Any] | None = None  # ApplyReport.brief() when config.apply is set
    report: dict[str, Any] | None = None  # ReportResult.brief() unless config.report is None


def _run_name() -> str:
    return run_config().run_name()


@flow(name="dupflow-dedup", flow_run_name=_run_name, persist_result=False, task_runner=ConfiguredDaskTaskRunner())  # type: ignore[arg-type]  # an unparametrised TaskRunner
def dedup(config: DedupConfig) -> DedupResult:
    """Encode the datasets into the store, match them, write pairs, groups, scores, manifest and
    summary to `out`. Runs its tasks on the Dask cluster that `config.cluster` names (or a local one,
    started when the first task is submitted)."""
    relative = config.relative_paths()
    if relative and config.cluster.address:
        raise ConfigError(f"relative local path(s) {', '.join(relative)} with the Dask cluster at "
                          f"{config.cluster.address}: its workers would resolve them in their own folder; give "
                          "absolute paths (dupflow run makes them absolute for you)")
    settings = config.encode_settings()
    if settings.uses_gpu and not config.cluster.address:  # a deployment's run (`dupflow run` checked it)
        check_device(settings)  # the local workers use this machine's device
    options = run_storage_options(config)  # credentials reach the tasks, never the flow's parameters
    with store_lock(config.store, options) as lease:
        return _dedup_steps(config, options, lease)


def _dedup_steps(config: DedupConfig, options: dict[str, Any], lease: StoreLease) -> DedupResult:
    log = get_run_logger()
    start = time.perf_counter()
    sources, settings = config.sources(), config.encode_settings(options)
    if settings.uses_gpu:
        require_gpu_workers()  # before the store is opened: a run that cannot encode changes nothing
    threads = cluster_threads()
    # The listing and the shards are staged in the store under a name of this run's: tasks pass where they
    # are and how many files they hold, never the files (what this process holds does not grow with them).
    stage = new_stage_id()
    units = listing_parts(sources, settings.listing_tasks, threads)
    listed = list_source_task.map([source for source, _ in units], unmapped(config.store), unmapped(stage),
                                  unmapped(settings.storage_options), unmapped(settings.sniff_content),
                                  [part for _, part in units]).result()
    run = open_encode_task(config.store, settings, threads)  # here: this process is the store's recorded writer
    plan = prepare_encode_task.submit(run, listed, stage, threads).result()
    log.info("listed %s images in %s dataset(s): %s to encode in %s shards, %s unchanged",
             f"{plan.listed:,}", len(sources), f"{plan.listed - plan.reused:,}", plan.shards.count,
             f"{plan.reused:,}")
    totals = EncodeStats()
    with on_gpu_workers(plan.settings.uses_gpu):
        shards = encode_shard_task.map(unmapped(config.store), unmapped(plan.shards), range(plan.shards.count),
                                       unmapped(plan.settings))
    for done, future in enumerate(as_completed(shards), start=1):
        totals.add(future.result())
        log.info("encoded %s/%s shards (%s files)", done, len(shards), f"{totals.files:,}")
    lease.check()  # never commit into a store another run has taken over
    encoded = commit_encode_task.submit(plan, totals).result()
    encoded.wall_seconds = time.perf_counter() - start

    job = plan_match_task(config.store, config.out, config.match_settings(), settings.storage_options)
    blocks = config.match.blocks or cluster_blocks(encoded.listed, threads)
    parts = [match_block_task.submit(job, Block(k, blocks)) for k in range(blocks)]
    log.info("matching: %s rule(s) in %s block(s) on %s worker thread(s)", rule_count(job), blocks, threads)
    # the futures resolve on the worker that decides: block results never pass through this process
    lease.check()
    report = finish_match_task.submit(job, cast(list[BlockResult], parts)).result()  # futures, resolved there
    totals_out = report.summary["totals"]
    log.info("%s groups, %s files to move; outputs in %s", f"{totals_out['groups']:,}",
             f"{totals_out['to_move']:,}", shown(report.out))
    applied = None
    if config.apply is not None:
        applied = apply_manifest_task.submit(f"{config.out.rstrip('/')}/manifest.parquet", config.journal(),
                                             config.apply.options(), config.apply.execute,
                                             settings.storage_options).result()
        log.info("apply %s: %s", "run" if applied["executed"] else "dry run",
                 ", ".join(f"{k} {v:,}" for k, v in applied["counts"].items()) or "nothing to do")
    page = None
    report_settings = config.report_settings()
    if report_settings is not None:
        page = write_report_task.submit(config.out, report_settings, config.store, settings.storage_options).result()
        log.info("report: %s (%s bytes, %s thumbnails)", shown(page["path"]), f"{page['bytes']:,}",
                 f"{page['thumbnails']:,}")
    # quoted: Prefect would walk the summary for futures, ~20k values at 20k photographs (~0.2 s)
    publish_summary_task(cast(MatchReport, quote(report)), applied, page)
    return DedupResult(encoded, report, applied, page)
