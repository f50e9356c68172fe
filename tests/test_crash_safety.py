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
from dupflow.store.encodings import EncodingsStore
from imagegen import dataset

pytestmark = pytest.mark.slow


def _encode_cmd(data: Path, store: Path) -> list[str]:
    exe = str(Path(sys.executable).with_name("dupflow"))
    return [exe, "encode", "-d", f"train={data}", "-s", str(store), "-j", "1", "--shard-size", "4", "-q"]


def _kill_after_first_shard(data: Path, store: Path, whole: bool) -> None:
    """Start an encode and SIGKILL it once a shard is staged (`whole`) or as soon as anything
    appears in staging, which is often in the middle of writing a file."""
    proc = subprocess.Popen(_encode_cmd(data, store), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    staging = store / "_dupflow" / "staging"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        names = [p.name for p in staging.iterdir()] if staging.exists() else []
        if any(n.startswith("shard-") for n in names) if whole else names:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


def _encode(data: Path, store: Path) -> str:
    proc = subprocess.run(_encode_cmd(data, store), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _rows(store: Path) -> pa.Table:
    return EncodingsStore(str(store)).read().sort_by("uri")


def test_killed_first_run_is_incomplete_and_rerun_completes_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dataset(data, 160, size=(640, 480))
    store = tmp_path / "store"
    _kill_after_first_shard(data, store, whole=True)

    with pytest.raises(StoreError, match="did not finish"):
        EncodingsStore(str(store)).read()
    assert not list((store / "encodings").rglob("*.parquet")) if (store / "encodings").exists() else True

    rerun = _encode(data, store)
    reused = int(rerun.split(" encoded, ")[1].split(" reused")[0].replace(",", ""))
    assert reused >= 4  # the shard staged by the killed run was not decoded again

    _encode(data, tmp_path / "clean")
    assert _rows(store).drop_columns(["mtime"]).equals(_rows(tmp_path / "clean").drop_columns(["mtime"]))
    assert not (store / "_dupflow" / "staging").exists() or not list((store / "_dupflow" / "staging").iterdir())


def test_killed_incremental_run_keeps_old_files_and_rerun_finishes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dataset(data, 8, size=(320, 240))
    store = tmp_path / "store"
    _encode(data, store)
    before = _rows(store)
    dataset(data / "new", 160, seed=9, size=(640, 480))
    _kill_after_first_shard(data, store, whole=False)

    with pytest.raises(StoreError, match="did not finish"):
        EncodingsStore(str(store)).read()
    _encode(data, store)
    after = _rows(store)
    assert after.num_rows == 168
    old = after.filter(pa.compute.is_in(after["uri"], value_set=before["uri"]))
    assert old.equals(before)
    files = list((store / "encodings").rglob("*.parquet"))
    assert len(files) == 1  # no stale part files left behind
    assert not [p for p in store.rglob(".tmp-*")]  # nor temporaries of the killed write
