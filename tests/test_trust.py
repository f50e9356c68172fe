"""Trust under faults, at the run's entry: no credential reaches Prefect's database, logs or outputs;
relative paths mean the caller's folders even on a cluster whose workers run elsewhere; a bad setting
fails in seconds with one line, before the Prefect API or a cluster starts; only what can heal is
retried."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import free_port, run_cli, stop, wait_for_workers
from dupflow.config import validate_config
from dupflow.errors import ConfigError, StorageError
from imagegen import natural, write

DUPFLOW = str(Path(sys.executable).with_name("dupflow"))
KEY, SECRET = "AKIAPLANTED7Q3Z9X2W", "planted-secret-4b1d5e2f9a"


def _images(folder: Path, n: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write(folder / f"img{i:02d}.jpg", natural(seed + i, 96, 72))
    write(folder / "copy.jpg", natural(seed, 96, 72))  # one exact duplicate


def _run(args: list[str], cwd: Path, home: Path, extra_env: dict[str, str] | None = None,
         timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_HOME": str(home), **(extra_env or {})}
    return subprocess.run([DUPFLOW, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def _files_holding(root: Path, needles: tuple[str, ...]) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and any(n.encode() in p.read_bytes() for n in needles)]


@pytest.mark.slow
@pytest.mark.s3
def test_credentials_given_to_run_never_reach_prefects_database_logs_or_outputs(
        tmp_path: Path, bucket: str, s3_endpoint: str) -> None:
    import s3fs

    _images(tmp_path / "images", 6, seed=10)
    s3fs.S3FileSystem().put(str(tmp_path / "images"), f"{bucket}/train", recursive=True)
    home = tmp_path / "prefect-home"
    loud = {"PREFECT_LOGGING_TO_API_ENABLED": "true", "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "true",
            "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "true"}
    done = _run(["run", "-d", f"train=s3://{bucket}/train", "--store", f"s3://{bucket}/store", "--out",
                 f"s3://{bucket}/out", "--workers", "1", "-o", f"endpoint_url={s3_endpoint}", "-o", f"key={KEY}",
                 "-o", f"secret={SECRET}", "--apply"], tmp_path, home, loud)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 groups" in done.stdout
    assert list(home.rglob("*.db")), "the run recorded nothing in Prefect's database"
    assert _files_holding(home, (KEY, SECRET)) == []
    assert KEY not in done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr
    fs = s3fs.S3FileSystem()
    written = [p for p in fs.find(bucket) if not p.startswith(f"{bucket}/train")]
    assert written
    assert [p for p in written if KEY.encode() in fs.cat_file(p) or SECRET.encode() in fs.cat_file(p)] \
        == []


def test_credentials_in_a_config_are_refused_with_the_safe_ways() -> None:
    body = {"datasets": [{"name": "a", "url": "s3://b/a"}], "store": "s3://b/s", "out": "s3://b/o"}
    for options in ({"key": KEY, "secret": SECRET}, {"client_kwargs": {"aws_secret_access_key": SECRET}},
                    ["token=abc", "endpoint_url=http://127.0.0.1:9"]):
        with pytest.raises(ConfigError, match=r"must never be a flow parameter.*AWS_ACCESS_KEY_ID.*storage_secret"):
            validate_config({**body, "storage_options": options})
    assert validate_config({**body, "storage_options": {"endpoint_url": "http://x", "profile": "p"}})


@pytest.fixture
def cluster_elsewhere(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A scheduler and two worker processes started in their own folder, which holds its own
    data/train: the folder a relative path would wrongly resolve in."""
    elsewhere = tmp_path / "workers-cwd"
    _images(elsewhere / "data" / "train", 9, seed=500)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).with_name("dask"))
    log = (tmp_path / "dask.log").open("w")
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", "127.0.0.1:0"], cwd=elsewhere, stdout=log, stderr=log)
    workers = subprocess.Popen([dask, "worker", address, "--host", "127.0.0.1", "--nworkers", "2", "--nthreads", "1",
                                "--memory-limit", "2GiB"], cwd=elsewhere, stdout=log, stderr=log)
    try:
        wait_for_workers(address, 2)
        yield address, elsewhere
    finally:
        stop(workers, scheduler)
        log.close()


@pytest.mark.slow
def test_relative_paths_name_the_callers_folders_on_a_cluster_elsewhere(
        tmp_path: Path, cluster_elsewhere: tuple[str, Path]) -> None:
    address, elsewhere = cluster_elsewhere
    here = tmp_path / "caller"
    _images(here / "data" / "train", 4, seed=40)
    done = _run(["run", "-d", "train=./data/train", "--store", "./store", "--out", "./out", "--address", address,
                 "--no-report"], here, tmp_path / "home")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "made absolute" in done.stderr
    uris = pq.read_table(here / "out" / "scores.parquet").column("uri").to_pylist()
    assert len(uris) == 5
    assert all(u.startswith(str(here / "data" / "train")) for u in uris)
    assert (here / "store" / "_dupflow" / "store.json").is_file()
    assert not (elsewhere / "store").exists()


def test_the_flow_refuses_relative_paths_with_a_cluster_address() -> None:
    from dupflow.flows.dedup import dedup

    config = validate_config({"datasets": [{"name": "a", "url": "data/a"}], "store": "/abs/store", "out": "out",
                              "cluster": {"address": "tcp://127.0.0.1:1"}})
    with pytest.raises(ConfigError, match=r"relative local path\(s\) datasets\[0\]\.url=data/a, out=out"):
        dedup.fn(config)


NO_CREDENTIALS = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
                  "AWS_EC2_METADATA_DISABLED": "true", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}


@pytest.mark.parametrize(("args", "env", "message"), [
    (["-d", "a=/no/such/folder"], {}, "is not a folder or prefix that exists"),
    (["-d", "a=s3://bucket/x", "-o", "endpoint_url=http://127.0.0.1:9"],
     {"AWS_ACCESS_KEY_ID": "anyone", "AWS_SECRET_ACCESS_KEY": "anything"}, "the endpoint cannot be reached"),
    (["-d", "a=s3://bucket/x"], NO_CREDENTIALS, "no valid credentials"),
])
def test_a_bad_setting_fails_in_one_line_before_the_api_or_a_cluster_starts(
        tmp_path: Path, args: list[str], env: dict[str, str], message: str) -> None:
    base = {k: v for k, v in os.environ.items() if not (env and k.startswith("AWS_"))}  # no credentials at all
    home = tmp_path / "home"
    cmd = [DUPFLOW, "run", *args, "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o")]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
                          env={**base, "PREFECT_HOME": str(home), **env})
    assert done.returncode == 1, done.stdout + done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not list(home.rglob("*.db"))  # the embedded API never started


@pytest.mark.usefixtures("prefect_harness")
def test_only_what_can_heal_is_retried() -> None:
    from prefect import task

    from dupflow.tasks.policy import IO_RETRIES

    tries: list[str] = []

    @task(**{**IO_RETRIES, "retry_delay_seconds": 0})
    def fails(error: Exception) -> None:
        tries.append(type(error).__name__)
        raise error

    for error in (ConfigError("bad setting"), StorageError("no bucket", transient=False),
                  StorageError("connection reset")):
        fails(error, return_state=True)
    assert tries == ["ConfigError", "StorageError", *["StorageError"] * 4]


def test_file_names_reach_the_terminal_escaped(tmp_path: Path) -> None:
    data, store, out = tmp_path / "data", tmp_path / "store", tmp_path / "out"
    data.mkdir()
    hostile = "evil\n\x1b]0;pwned\x07link\u202egpj.jpg"  # a newline, an OSC title sequence, a bidi override
    write(data / "a.jpg", natural(3, 96, 72))
    (data / hostile).write_bytes((data / "a.jpg").read_bytes())
    printed = [run_cli("encode", "-d", f"d={data}", "--store", str(store), "-q"),
               run_cli("match", "--store", str(store), "--out", str(out)),
               run_cli("apply", str(out / "manifest.parquet"), "--journal", str(tmp_path / "journal"))]
    text = "".join(p.stdout + p.stderr for p in printed)
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "\u202e" not in text
    assert "evil\\n\\x1b]0;pwned\\x07link\\u202egpj.jpg" in printed[2].stdout
    assert not [line for line in printed[2].stdout.splitlines() if line.startswith("link")]  # no line was split
