"""Where a flow runs: the Dask task runner from the config, and Prefect's API (a real server or an
embedded one that every local Dask worker shares)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask
from dask.base import annotate
from distributed import LocalCluster
from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, Settings, temporary_settings
from prefect.utilities.importtools import from_qualified_name
from prefect_dask.task_runners import DaskTaskRunner

from dupflow.config import ClusterConfig, DedupConfig, validate_config
from dupflow.errors import ConfigError
from dupflow.flows.embedded_api import API_URL_ENV, EmbeddedApi
from dupflow.store.lease import LeaseRecord, StoreLease

__all__ = ["GPU_RESOURCE", "ConfiguredDaskTaskRunner", "cluster_threads", "configured_api_url", "local_runtime",
           "on_gpu_workers", "require_gpu_workers", "run_config", "store_lock"]

# The Dask worker resource that marks a worker with a GPU: `dask worker ADDRESS --resources GPU=1`.
GPU_RESOURCE = "GPU"

# Imported by every local Dask worker as it starts (Dask's `preload`), while `dupflow run`'s API starts.
WORKER_PRELOAD = "dupflow.flows.warm"
# Dask configuration of dupflow's workers (infra/dask.yaml sets the same for a cluster's):
# - Dask starts its workers with glibc's MALLOC_TRIM_THRESHOLD_=65536; an explicit threshold stops malloc
#   adapting its mmap threshold, so every large numpy buffer is mapped and unmapped again: it doubled the
#   CPU of verifying pairs (2.3 -> 4.5 s on 2,682 photographs) and cost 6% of an encode.
# - Dask's statistical profiler samples every worker thread's stack every 10 ms (for the dashboard's Profile
#   page): it made a one-thread worker's encode of 1,500 photographs 7% slower (2.87 vs 2.67 s, 4 pairs).
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                 "distributed.worker.profile.enabled": False}


def _local_cluster(cluster: ClusterConfig, gpu: bool) -> dict[str, Any]:
    """LocalCluster arguments: worker processes on 127.0.0.1 that import the tasks as they start (each
    advertising the GPU resource when `gpu`: they share this machine's device)."""
    kwargs: dict[str, Any] = {
        "n_workers": cluster.workers or os.cpu_count() or 1,
        "threads_per_worker": cluster.threads_per_worker,
        "processes": True,
        "memory_limit": cluster.memory_limit,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
        "preload": [WORKER_PRELOAD],  # the workers import the tasks as they start, not on the first task
    }
    if gpu:
        kwargs["resources"] = {GPU_RESOURCE: 1}
    return kwargs


class ConfiguredDaskTaskRunner(DaskTaskRunner):
    """The dedup flow's task runner: the Dask cluster that the flow run's `config` parameter names (its
    `cluster` section; local workers advertise the GPU when the encode asks for one), chosen when the run
    first submits work. A deployment fixes a flow's task runner when it imports the flow, before any
    parameter is known; choosing it here keeps every run one flow run holding its own task runs."""

    @property
    def client(self) -> Any:
        if self._client is None and not self.address and not self.cluster_kwargs:
            self._choose(run_config())
        with dask.config.set(WORKER_CONFIG):  # a local cluster is started here
            return super().client

    def _choose(self, config: DedupConfig) -> None:
        if config.cluster.address:
            self.address = config.cluster.address
            return
        gpu = config.encode_settings().device == "cuda"
        self.cluster_class = "distributed.LocalCluster"
        self.resolved_cluster_class = from_qualified_name(self.cluster_class)
        self.cluster_kwargs = _local_cluster(config.cluster, gpu)


def run_config() -> DedupConfig:
    """The running dedup flow's config parameter, validated."""
    context = FlowRunContext.get()
    if context is None or not context.parameters or "config" not in context.parameters:
        raise RuntimeError("the dedup task runner runs inside a dedup flow run, whose `config` names its cluster")
    config = context.parameters["config"]
    return config if isinstance(config, DedupConfig) else validate_config(config)


def cluster_threads() -> int:
    """Worker threads of the running flow's Dask cluster (1 outside a Dask flow)."""
    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    if isinstance(runner, DaskTaskRunner):
        threads: dict[str, int] = runner.client.nthreads()  # type: ignore[no-untyped-call]
        return max(1, sum(threads.values()))
    return 1


def require_gpu_workers() -> None:
    """Raise a ConfigError when no worker of the flow's Dask cluster advertises a GPU: GPU tasks would
    wait for one forever."""
    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    if isinstance(runner, DaskTaskRunner):
        workers = runner.client.scheduler_info(n_workers=-1)["workers"]
        if not any(w.get("resources", {}).get(GPU_RESOURCE) for w in workers.values()):
            raise ConfigError(
                f"--device cuda: none of the Dask cluster's {len(workers)} worker(s) advertises a {GPU_RESOURCE} "
                f"resource; start one worker per GPU with `dask worker ADDRESS --resources {GPU_RESOURCE}=1`, or "
                "use --device cpu")


@contextmanager
def on_gpu_workers(needed: bool) -> Iterator[None]:
    """Tasks submitted inside run only on the workers of the flow's cluster that advertise a GPU (when
    `needed`), one task per GPU at a time."""
    if not needed:
        yield
        return
    require_gpu_workers()
    with annotate(resources={GPU_RESOURCE: 1}):
        yield


def configured_api_url(exported: str | None = None) -> str | None:
    """The Prefect API the user configured (environment, profile, prefect.toml, .env, in Prefect's order),
    leaving out `exported`: the URL of the embedded server that `dupflow run` exported before Prefect was
    imported."""
    hidden = exported is not None and os.environ.get(API_URL_ENV) == exported
    if hidden:
        os.environ.pop(API_URL_ENV)
    try:
        return Settings().api.url
    finally:
        if hidden:
            os.environ[API_URL_ENV] = str(exported)


@contextmanager
def local_runtime(config: DedupConfig, api: EmbeddedApi | None = None) -> Iterator[DedupConfig]:
    """What one `dupflow run` runs on, started side by side: the Prefect API (the one configured, else
    the embedded server `api`, started before Prefect was imported, which every local Dask worker
    shares, so that none starts its own on the same SQLite file) and, unless `config.cluster.address`
    names one, a local Dask cluster whose workers import the tasks while the API starts. Yields the
    config pointing at that cluster; on exit both stop, side by side (`api` included)."""
    cluster: LocalCluster | None = None
    before = os.environ.get(API_URL_ENV)
    restore = None if api is not None and before == api.url else before  # what the environment held before
    try:
        configured = configured_api_url(api.url if api is not None else None)
        if api is not None and configured:  # a profile or prefect.toml names a server: run there
            api.stop()
            api = None
            os.environ[API_URL_ENV] = configured  # for the local workers
        if api is None and not configured:
            api = EmbeddedApi.start()
        if not config.cluster.address:
            gpu = config.encode_settings().device == "cuda"
            with dask.config.set(WORKER_CONFIG):
                cluster = LocalCluster(**_local_cluster(config.cluster, gpu))  # type: ignore[no-untyped-call]
            local = ClusterConfig(address=cluster.scheduler_address,
                                  threads_per_worker=config.cluster.threads_per_worker)
            config = config.model_copy(update={"cluster": local})
        url = api.wait() if api is not None else configured
        with temporary_settings({PREFECT_API_URL: url}):
            yield config
            APILogWorker.instance().drain()  # send the last log lines while the server still listens
    finally:
        stopping = [threading.Thread(target=stop, daemon=True) for stop in
                    (cluster.close if cluster is not None else None, api.stop if api is not None else None) if stop]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()
        if restore is None:
            os.environ.pop(API_URL_ENV, None)
        else:
            os.environ[API_URL_ENV] = restore


@contextmanager
def store_lock(store_url: str, storage_options: dict[str, Any] | None = None, *,
               wait: float | None = None) -> Iterator[StoreLease]:
    """One dedup run at a time per store, across machines and Prefect APIs: the store's own lease
    (`STORE/_dupflow/lease.json`, see dupflow.store.lease), held and renewed for the whole run. A second
    run waits up to `wait` seconds (DUPFLOW_STORE_LEASE_WAIT_SECONDS, default 1 h) for it, then fails
    with a LeaseHeld naming the holder; the run fails with LeaseLost if its lease was lost meanwhile."""
    context = FlowRunContext.get()
    run = f"{context.flow_run.name} ({context.flow_run.id})" if context and context.flow_run else None

    def waiting(holder: LeaseRecord) -> None:
        lease_log().warning("waiting up to %g s for the store: %s", lease.wait, holder.describe(lease.store))

    lease = StoreLease(store_url, storage_options, run=run, wait=wait, on_wait=waiting)
    with lease:
        yield lease


def lease_log() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The flow run's logger inside a run, else this module's."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)
