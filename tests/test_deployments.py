"""The project's prefect.yaml on a real Prefect server: deploy, a process worker, an ad hoc run with
--param, and the ingest event trigger, on a real Dask cluster and the loopback S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
import s3fs

from conftest import free_port, run_cli, stop
from dupflow.match.job import OUTPUT_FILES
from dupflow.match.state import STATE_FOLDER
from imagegen import dataset

pytestmark = [pytest.mark.slow, pytest.mark.s3]

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _wait_for(check: object, what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def server_env(tmp_path: Path, s3_endpoint: str, dask_processes: str) -> Iterator[dict[str, str]]:  # noqa: ARG001 - s3_endpoint exports the server to the env
    """`prefect server start` on loopback (SQLite in a temporary home); the env for its clients."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_LOGGING_LEVEL": "INFO", "DUPFLOW_DASK_ADDRESS": dask_processes}
    for key in ("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED", "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED"):
        env.pop(key)  # the real server runs every service: triggers need the event persister's peers
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=log)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        _wait_for(healthy, "the Prefect server", 90)
        yield env
    finally:
        stop(server)
        log.close()


@pytest.fixture
def images(s3_endpoint: str, tmp_path: Path) -> s3fs.S3FileSystem:
    """s3://images/{train,corpus,ingest/batch1} with copies of corpus pictures in the ingest, and an
    empty s3://dupflow bucket, as prefect.yaml expects."""
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    fs = s3fs.S3FileSystem()
    for name in ("images", "dupflow"):
        if fs.exists(name):
            fs.rm(name, recursive=True)
        client.create_bucket(Bucket=name)
    corpus = dataset(tmp_path / "corpus", 12, seed=7)
    dataset(tmp_path / "train", 6, seed=8)
    batch = tmp_path / "batch1"
    dataset(batch, 4, seed=9)
    for path in corpus[:3]:  # the ingest brings three pictures the corpus already has
        (batch / f"again_{path.name}").write_bytes(path.read_bytes())
    for local, key in ((tmp_path / "corpus", "corpus"), (tmp_path / "train", "train"), (batch, "ingest/batch1")):
        fs.put(str(local), f"images/{key}", recursive=True)
    return fs


def _assert_one_flow_run_per_deployment_run(env: dict[str, str], adhoc_out: str) -> None:
    """Every run is one flow run (none nested) holding its task runs; the ad hoc run's summary artifact is
    on it, under its output's key."""
    code = f"""
import json
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
from dupflow.tasks.report import summary_key
with get_client(sync_client=True) as client:
    ran = [r for r in client.read_flow_runs() if r.state_name != "Scheduled"]  # not the nightly's next runs
    runs = [r for r in ran if r.deployment_id]
    tasks = {{str(r.id): [t.name for t in client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id])))] for r in runs}}
    key = summary_key({adhoc_out!r})
    art = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    print(json.dumps({{"runs": len(ran), "deployed": len(runs), "tasks": tasks,
                      "artifact_runs": [str(a.flow_run_id) for a in art]}}))
"""
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["runs"] == seen["deployed"] == 3  # ad hoc, ingest from S3, ingest from local folders
    for names in seen["tasks"].values():
        for kind in ("list ", "encode shard ", "match block ", "decide-and-write", "publish-summary"):
            assert any(name.startswith(kind) for name in names), (kind, names)
    assert len(seen["artifact_runs"]) == 1
    assert seen["artifact_runs"][0] in seen["tasks"]


def test_deployments_run_ad_hoc_and_on_the_ingest_event(server_env: dict[str, str], images: s3fs.S3FileSystem,
                                                        tmp_path: Path) -> None:
    deployed = run_cli("deploy", "--prefect-file", str(PROJECT / "prefect.yaml"), env=server_env)
    assert "deployed" in deployed.stdout
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "dupflow"], env=server_env,
                              stdout=log, stderr=log, cwd=tmp_path)
    try:
        config = {"datasets": [{"name": "train", "url": "s3://images/train"},
                               {"name": "corpus", "url": "s3://images/corpus"}],
                  "store": "s3://dupflow/store", "out": "s3://dupflow/runs/adhoc-test"}
        run = subprocess.run([str(BIN / "prefect"), "deployment", "run", "dupflow-dedup/adhoc",
                              "--param", f"config={json.dumps(config)}", "--watch", "--watch-timeout", "300"],
                             env=server_env, capture_output=True, text=True, timeout=360)
        assert run.returncode == 0, run.stdout + run.stderr
        written = sorted(Path(p).name for p in images.ls("dupflow/runs/adhoc-test"))
        assert written == sorted([*OUTPUT_FILES, STATE_FOLDER, "report.html", "report.json"])

        subprocess.run([sys.executable, "-c", "from dupflow.flows.ingest import announce_ingest; "
                        "announce_ingest('batch1', 's3://images/ingest/batch1')"], env=server_env, check=True,
                       timeout=60)
        summary = "dupflow/runs/ingest/batch1/summary.json"
        _wait_for(lambda: images.exists(summary), "the run triggered by ingest.completed", 240)
        with images.open("dupflow/runs/ingest/batch1/manifest.parquet") as f:
            manifest = pq.read_table(f).to_pylist()
        # the three re-ingested pictures move; the corpus (reference) keeps its copies
        assert sorted((r["dataset"], r["rel_path"]) for r in manifest) == [
            ("batch1", f"again_img_{i:04d}.jpg") for i in range(3)]

        # a trial on local folders: the event names the corpus, the store and the output
        local_out = tmp_path / "runs" / "local-batch"
        subprocess.run([sys.executable, "-c", "from dupflow.flows.ingest import announce_ingest; "
                        f"announce_ingest('local-batch', {str(tmp_path / 'batch1')!r}, "
                        f"corpus={str(tmp_path / 'corpus')!r}, store={str(tmp_path / 'store')!r}, "
                        f"out={str(local_out)!r})"], env=server_env, check=True, timeout=60)
        _wait_for(lambda: (local_out / "summary.json").exists(), "the local run triggered by ingest.completed", 240)
        local = pq.read_table(local_out / "manifest.parquet").to_pylist()
        assert sorted(r["rel_path"] for r in local) == [f"again_img_{i:04d}.jpg" for i in range(3)]
        _assert_one_flow_run_per_deployment_run(server_env, "s3://dupflow/runs/adhoc-test")
    finally:
        stop(worker)
        log.close()
