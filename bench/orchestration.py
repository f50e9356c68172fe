"""Orchestration overhead: the Prefect/Dask dedup flow vs the same core functions in one process.

    .venv/bin/python bench/orchestration.py --images 2000 4000

For each size, on the same photographs (bench/photos.py), each from an empty store:
- `core`: `run_encode` (a process pool of `--workers`) + `match_store` in one process, no Prefect;
- `flow, running cluster`: the dedup flow on an already running Dask cluster (the production path:
  `cluster.address`), Prefect API already up;
- `flow, cold local cluster`: the same flow starting its own LocalCluster (what `dupflow run` does).
Overhead is the flow's wall time over core's; per-task overhead divides the difference by the
number of Prefect task runs. Throughput is images per second of each whole run; peak memory is the
largest resident set of one Dask worker process (the running cluster's, after its flow) and of the
core run (its process and its encode processes). `--small` makes 640x480 photographs, so that 20,000+
fit on a laptop disk (1.6 GB) and build in minutes. Results: bench/results/orchestration.{json,md}.

    .venv/bin/python bench/orchestration.py --images 20000 --small --repeat 3

`--preset` (default `fast`, hashes only, where the orchestration's share is largest) picks the encoders
and rules of both sides. These photographs are crops of a handful of pictures, so the default preset's
verified crop search would measure verification of nearly every pair, not the orchestration.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from photos import make

from dupflow.config import validate_config
from dupflow.encode.settings import EncodeSettings
from dupflow.flows.runtime import WORKER_CONFIG, WORKER_PRELOAD
from dupflow.io.sources import DatasetSource
from dupflow.match.job import MatchSettings, cluster_blocks, match_store
from dupflow.store.encode_job import FLOW_SHARD_LEAST, FLOW_SHARD_MOST, auto_shard_size, run_encode

RESULTS = Path(__file__).parent / "results"
# as dupflow's embedded API runs (flows/embedded_api.py): the server's telemetry heartbeat locks its SQLite file
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _peak_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def _core(data: Path, work: Path, workers: int, preset: str) -> tuple[float, float]:
    start = time.perf_counter()
    run_encode([DatasetSource("photos", str(data))], str(work / "core-store"), EncodeSettings(preset=preset),
               workers=workers)
    match_store(str(work / "core-store"), str(work / "core-out"), MatchSettings(preset=preset))
    return time.perf_counter() - start, max(_peak_mib(), _peak_mib(resource.RUSAGE_CHILDREN))


def _flow(data: Path, work: Path, name: str, cluster: dict[str, Any], threads: int, preset: str
          ) -> tuple[float, int]:
    from dupflow.flows.dedup import dedup

    config = validate_config({"datasets": [{"name": "photos", "url": str(data)}], "store": str(work / f"{name}-store"),
                              "out": str(work / f"{name}-out"), "cluster": cluster,
                              "preset": preset, "report": None})  # the same work as core: no HTML report
    start = time.perf_counter()
    result = dedup(config)
    seconds = time.perf_counter() - start
    size = auto_shard_size(result.encode.listed, threads, FLOW_SHARD_MOST, FLOW_SHARD_LEAST)
    shards = -(-result.encode.listed // size)
    blocks = cluster_blocks(result.encode.listed, threads)  # each searches every rule
    # list, open, plan, shards, commit, plan-match, blocks, decide, summary
    tasks = 1 + 1 + 1 + shards + 1 + 1 + blocks + 1 + 1
    return seconds, tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[2000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--small", action="store_true", help="640x480 photographs (for 20,000 and more)")
    parser.add_argument("--preset", default="fast", choices=["fast", "default"])
    parser.add_argument("--repeat", type=int, default=1, help="interleaved repetitions; medians are reported")
    args = parser.parse_args()

    import dask
    from distributed import Client, LocalCluster
    from prefect.testing.utilities import prefect_test_harness

    rows = []
    with prefect_test_harness(server_startup_timeout=120), dask.config.set(WORKER_CONFIG), \
            LocalCluster(n_workers=args.workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0",
                         preload=[WORKER_PRELOAD]) as cluster:  # as infra/ starts its workers
        for n in args.images:
            sizes = [(640, 480)] if args.small else None
            data = make(Path(__file__).parent / ".work" / f"photos-{n}{'-small' if args.small else ''}", n,
                        sizes=sizes)
            for photo in data.iterdir():  # every side reads them from the page cache, the first one too
                photo.read_bytes()
            seen: dict[str, list[float]] = {"core": [], "warm": [], "cold": []}
            tasks, core_mib, worker_mib = 0, 0.0, 0.0
            for _ in range(args.repeat):  # interleaved: a slow moment of the machine hits every side alike
                work = Path(tempfile.mkdtemp(prefix="dupflow-orch-"))
                try:
                    core, mib = _core(data, work, args.workers, args.preset)
                    seen["core"].append(core)
                    core_mib = max(core_mib, mib)
                    warm, tasks = _flow(data, work, "warm", {"address": cluster.scheduler_address}, args.workers,
                                        args.preset)
                    seen["warm"].append(warm)
                    with Client(cluster) as client:
                        worker_mib = max(worker_mib, *client.run(_peak_mib).values())
                    seen["cold"].append(_flow(data, work, "cold", {"workers": args.workers}, args.workers,
                                              args.preset)[0])
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                print(json.dumps({k: round(v[-1], 2) for k, v in seen.items()}), flush=True)
            core, warm, cold = (statistics.median(seen[k]) for k in ("core", "warm", "cold"))
            rows.append({"images": n, "preset": args.preset, "repeat": args.repeat, "core_s": round(core, 2),
                         "flow_running_cluster_s": round(warm, 2),
                         "flow_cold_local_cluster_s": round(cold, 2), "tasks": tasks,
                         "overhead_running_pct": round(100 * (warm - core) / core, 1),
                         "overhead_cold_pct": round(100 * (cold - core) / core, 1),
                         "per_task_ms": round(1000 * (warm - core) / tasks),
                         "images_per_s_core": round(n / core), "images_per_s_flow": round(n / warm),
                         "peak_core_mib": round(core_mib), "peak_worker_mib": round(worker_mib),
                         "all_s": {k: [round(x, 2) for x in v] for k, v in seen.items()}})
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "orchestration.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| images | preset | core, one process | flow, running cluster | overhead | flow, cold LocalCluster "
             "| overhead | Prefect task runs | overhead per task | images/s core / flow | peak MiB core / worker |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['images']:,} | {r['preset']} | {r['core_s']} s | {r['flow_running_cluster_s']} s | "
                     f"{r['overhead_running_pct']}% | {r['flow_cold_local_cluster_s']} s | {r['overhead_cold_pct']}% | "
                     f"{r['tasks']} | {r['per_task_ms']} ms | {r['images_per_s_core']} / {r['images_per_s_flow']} | "
                     f"{r['peak_core_mib']} / {r['peak_worker_mib']} |")
    (RESULTS / "orchestration.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
