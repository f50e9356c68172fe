"""Worker processes die with their parent: a SIGKILLed `dupflow encode` leaves no orphan encoding on."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

psutil = pytest.importorskip("psutil")  # a dependency of dask's distributed; no stubs installed here


def _images(root: Path, n: int) -> None:
    """`n` small, distinct JPEGs (random texture: quick to make, enough to decode)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / f"img_{i:04d}.jpg", quality=80)


def _wait_for(cond: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(poll)
    return cond()


def _alive(pids: list[int]) -> list[int]:
    """The pids that still run (a zombie awaiting its reaper counts as gone)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _workers(pid: int) -> list[int]:
    """The pids of the multiprocessing workers under `pid` (not its resource tracker)."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for kid in kids:
        try:
            if "spawn_main" in " ".join(kid.cmdline()):
                found.append(kid.pid)
        except psutil.Error:
            pass
    return found


def _kill_all(pids: list[int]) -> None:
    for pid in _alive(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _staged(staging: Path) -> int:
    return sum(1 for p in staging.iterdir() if p.name.startswith("shard-")) if staging.exists() else 0


@pytest.mark.slow
def test_sigkilled_encode_leaves_no_workers_running(tmp_path: Path) -> None:
    """SIGKILL `dupflow encode -j 3` mid-run: its two workers (and resource tracker) die too, staging stops."""
    data, store = tmp_path / "data", tmp_path / "store"
    _images(data, 240)
    staging = store / "_dupflow" / "staging"
    exe = str(Path(sys.executable).with_name("dupflow"))
    cmd = [exe, "encode", "-d", f"t={data}", "-s", str(store), "-j", "3", "--shard-size", "2", "-q"]
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    descendants: list[int] = []

    def at_work() -> bool:
        return proc.poll() is not None or (len(_workers(proc.pid)) >= 2 and _staged(staging) > 0)

    try:
        ready = _wait_for(at_work, 90)
        assert ready, f"no workers at work: {log.read_text(errors='replace')[-2000:]}"
        assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
        descendants = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert proc.poll() == -signal.SIGKILL, "the run finished before it could be killed"

        survivors_gone = _wait_for(lambda: not _alive(descendants), 5)
        assert survivors_gone, f"processes outlived the killed parent: {_alive(descendants)}"
        staged = _staged(staging)
        time.sleep(1.0)
        assert _staged(staging) == staged, "staging still grows after the parent died"
        assert staged < 120, "the workers went on to encode (nearly) everything"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_all(descendants)


_MIDDLE = """
import os, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
from dupflow.io.lifeline import watch_parent

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(2, mp_context=ctx, initializer=watch_parent, initargs=(os.getpid(), False, 0.05))
    assert all(f.result() == os.getpid() for f in [pool.submit(os.getppid) for _ in range(8)])
    futures = [pool.submit(time.sleep, 60) for _ in range(2)]
    print(" ".join(map(str, sorted(pool._processes))), flush=True)
    time.sleep(60)
"""


@pytest.mark.slow
def test_fallback_thread_ends_workers_without_the_death_signal(tmp_path: Path) -> None:
    """With prctl off (as on macOS), the watching thread alone ends workers, even mid-task."""
    script = tmp_path / "middle.py"
    script.write_text(textwrap.dedent(_MIDDLE))
    with (tmp_path / "stderr.txt").open("wb") as err:  # the killed parent's resource tracker warns there
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=err, text=True)
    workers: list[int] = []
    try:
        assert proc.stdout is not None
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert workers
        assert set(workers) <= {p.pid for p in psutil.Process(proc.pid).children()}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert _wait_for(lambda: not _alive(workers), 3), f"workers outlived their parent: {_alive(workers)}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_all(workers)

