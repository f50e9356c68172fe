"""Matching in the flow on real Dask worker processes: nightly runs over a changing folder write what a
full match writes, and a worker killed while it matches changes nothing in the outputs."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from distributed import Client
from PIL import Image

from dupflow.config import DedupConfig, validate_config
from dupflow.encode.settings import EncodeSettings
from dupflow.flows.dedup import dedup
from dupflow.io.sources import DatasetSource
from dupflow.match.job import OUTPUT_FILES, match_store
from dupflow.match.settings import MatchSettings
from dupflow.store.encode_job import run_encode
from imagegen import dataset, detailed, write
from worlds import brighter

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def _config(root: Path, store: str, out: Path, address: str, **match: Any) -> DedupConfig:
    return validate_config({
        "datasets": [{"name": "train", "url": str(root / "train")}, {"name": "val", "url": str(root / "val")}],
        "store": store, "out": str(out), "cluster": {"address": address},
        "match": {"duplicates_root": str(root / "duplicates"), **match},
    })


def _full_match(root: Path, out: Path) -> dict[str, bytes]:
    """`dupflow encode` then `dupflow match --no-incremental` in this process."""
    sources = [DatasetSource("train", str(root / "train")), DatasetSource("val", str(root / "val"))]
    store = str(out.parent / f"{out.name}-store")
    run_encode(sources, store, EncodeSettings())
    match_store(store, str(out), MatchSettings(incremental=False, duplicates_root=str(root / "duplicates")))
    return {name: (out / name).read_bytes() for name in OUTPUT_FILES if name.endswith(".parquet")}


def _tables(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in OUTPUT_FILES if name.endswith(".parquet")}


def test_nightly_flow_runs_match_incrementally_and_write_what_a_full_match_writes(
        tmp_path: Path, dask_processes: str) -> None:
    root = tmp_path / "data"
    for name, seed in (("train", 0), ("val", 300)):
        dataset(root / name, 30, seed=seed, size=(200, 150))
    store, out = str(tmp_path / "store"), tmp_path / "out"
    modes = []
    for night in range(3):
        if night:  # new copies of old pictures, a removed file and a new picture each night
            train = sorted((root / "train").rglob("*.jpg"))
            write(root / "val" / f"night{night}-copy.jpg", brighter(Image.open(train[night])))
            shutil.copyfile(train[night + 5], train[night + 5].parent / f"0-night{night}.jpg")
            train[night + 10].unlink()
            write(root / "val" / f"night{night}-new.jpg", detailed(900 + night, 200, 150))
        result = dedup(_config(root, store, out, dask_processes))
        modes.append(result.match.search["mode"])
        assert _tables(out) == _full_match(root, tmp_path / f"full-{night}"), f"night {night}"
    assert modes == ["full", "incremental", "incremental"]


def test_a_worker_killed_while_matching_changes_no_output(tmp_path: Path, dask_processes: str) -> None:
    root = tmp_path / "data"
    for name, seed in (("train", 0), ("val", 500)):
        dataset(root / name, 60, seed=seed, size=(200, 150))
    expected = _full_match(root, tmp_path / "expected")
    with Client(dask_processes) as client:  # type: ignore[no-untyped-call]
        pids = client.run(os.getpid)
        killed: list[int] = []

        def kill_when_matching() -> None:  # the first worker seen running a match block dies
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not killed:
                for worker, keys in client.processing().items():
                    if any("match_block" in str(k) or "match-block" in str(k) for k in keys) and worker in pids:
                        os.kill(pids[worker], signal.SIGKILL)
                        killed.append(pids[worker])
                        return
                time.sleep(0.01)

        watcher = threading.Thread(target=kill_when_matching, daemon=True)
        watcher.start()
        dedup(_config(root, str(tmp_path / "store"), tmp_path / "out", dask_processes, blocks=24))
        watcher.join()
    assert killed, "no worker was killed while it matched"
    assert _tables(tmp_path / "out") == expected
