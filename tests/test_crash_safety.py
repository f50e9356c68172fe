"""A run killed mid-way leaves no store that reads as complete; re-running finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from dupflow.errors import StoreError
from dupflow.store import EncodingsStore
from imagegen import dataset

pytestmark = pytest.mark.slow


def _encode_cmd(data: Path, store: Path) -> list[str]:
    exe = str(Path(sys.executable).with_name("dupflow"))
    return [exe, "encode", "-d", f"train={data}", "-s", str(store), "-j", "1", "--shard-size", "4", "-q"]


def _kill_after_first_shard(data: Path, store: Path) -> None:
    """Start an encode and SIGKILL it as soon as its first shard is staged."""
    proc = subprocess.Popen(_encode_cmd(data, store), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    staging = store / "_dupflow" / "staging"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if staging.exists() and any(p.suffix == ".parquet" for p in staging.iterdir()):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def _rows(store: Path) -> pa.Table:
    return EncodingsStore(str(store)).read().sort_by("uri")


def test_killed_first_run_is_incomplete_and_rerun_completes_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dataset(data, 160, size=(640, 480))
    store = tmp_path / "store"
    _kill_after_first_shard(data, store)

    with pytest.raises(StoreError, match="did not finish"):
        EncodingsStore(str(store)).read()
    assert not list((store / "encodings").rglob("*.parquet")) if (store / "encodings").exists() else True

    rerun = subprocess.run(_encode_cmd(data, store), capture_output=True, text=True, check=True)
    assert "reused" in rerun.stdout
    reused = int(rerun.stdout.split(" encoded, ")[1].split(" reused")[0].replace(",", ""))
    assert reused >= 4  # the staged shard of the killed run was not decoded again

    subprocess.run(_encode_cmd(data, tmp_path / "clean"), check=True, capture_output=True)
    assert _rows(store).drop_columns(["mtime"]).equals(_rows(tmp_path / "clean").drop_columns(["mtime"]))
    assert not (store / "_dupflow" / "staging").exists() or not list((store / "_dupflow" / "staging").iterdir())


def test_killed_incremental_run_keeps_old_files_and_rerun_finishes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dataset(data, 8, size=(320, 240))
    store = tmp_path / "store"
    subprocess.run(_encode_cmd(data, store), check=True, capture_output=True)
    before = _rows(store)
    dataset(data / "new", 160, seed=9, size=(640, 480))
    _kill_after_first_shard(data, store)

    with pytest.raises(StoreError, match="did not finish"):
        EncodingsStore(str(store)).read()
    subprocess.run(_encode_cmd(data, store), check=True, capture_output=True)
    after = _rows(store)
    assert after.num_rows == 168
    old = after.filter(pa.compute.is_in(after["uri"], value_set=before["uri"]))
    assert old.equals(before)
    files = list((store / "encodings").rglob("*.parquet"))
    assert len(files) == 1  # no half-written or stale part files left behind
