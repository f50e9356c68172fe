"""The store lease (STORE/_dupflow/lease.json): one run at a time per store, on local disks and on S3."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import pytest

from dupflow.store.lease import LEASE_PATH, LeaseHeld, LeaseLost, LeaseRecord, StoreLease, read_lease


def fast(store: str, *, run: str | None = None, wait: float = 0.0, poll: float | None = None,
         on_wait: Callable[[LeaseRecord], None] | None = None) -> StoreLease:
    """A lease of 2 s renewed every 0.5 s, refused at once unless `wait` is given."""
    return StoreLease(store, run=run, duration=2.0, renew_every=0.5, wait=wait, poll=poll, on_wait=on_wait)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL: a local folder, or a prefix in a fresh bucket on the loopback S3 server."""
    if request.param == "local":
        return str(tmp_path / "store")
    bucket: str = request.getfixturevalue("bucket")
    return f"s3://{bucket}/store"


def _lease_file(store: str) -> str:
    return f"{store}/{LEASE_PATH}"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _plant(store: str, *, expires_in: float, token: str = "crashed", pid: int | None = None) -> LeaseRecord:
    """Write a lease as another run would have left it."""
    now = time.time()
    record = LeaseRecord(token=token, host=socket.gethostname(), pid=pid or _dead_pid(), run="run-of-the-dead",
                         acquired_at=now - 600, expires_at=now + expires_in)
    fs, path = fsspec.core.url_to_fs(_lease_file(store))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, record.to_json())
    return record


@pytest.fixture
def held(store: str) -> Iterator[StoreLease]:
    with fast(store, run="first") as lease:
        yield lease


def test_a_second_acquire_while_held_is_refused_with_the_holder(store: str, held: StoreLease) -> None:
    with pytest.raises(LeaseHeld) as err:
        fast(store, run="second").acquire()
    message = str(err.value)
    assert message.startswith(f"another dupflow run holds the store {held.store} since ")
    assert f"(owner {socket.gethostname()} pid {os.getpid()}, run first); it expires at " in message
    assert f"or remove {held.store}/_dupflow/lease.json if you are sure no run is alive" in message
    assert err.value.holder.token == held.token


@pytest.mark.usefixtures("held")
def test_a_waiting_run_gives_up_after_its_timeout(store: str) -> None:
    start = time.monotonic()
    with pytest.raises(LeaseHeld, match="gave up after waiting 1 s"):
        fast(store, wait=1.0, poll=0.1).acquire()
    assert time.monotonic() - start >= 1.0


def test_a_waiting_run_gets_the_store_once_the_holder_releases(store: str) -> None:
    first = fast(store)
    first.acquire()
    told: list[LeaseRecord] = []
    threading.Timer(1.0, first.release).start()
    start = time.monotonic()
    with fast(store, wait=30.0, poll=0.1, on_wait=told.append) as second:
        assert 0.9 <= time.monotonic() - start < 10
        assert [r.token for r in told] == [first.token]
        current = read_lease(store)
        assert current is not None
        assert current.token == second.token


def test_release_lets_the_next_run_in(store: str) -> None:
    with fast(store) as first:
        assert read_lease(store) is not None
    assert read_lease(store) is None
    with fast(store) as second:
        current = read_lease(store)
        assert current is not None
        assert current.token == second.token != first.token


def test_an_expired_lease_of_a_dead_run_is_taken_over(store: str) -> None:
    _plant(store, expires_in=-5)
    with fast(store) as lease:
        current = read_lease(store)
        assert current is not None
        assert current.token == lease.token
        assert current.expires_at > time.time()


def test_a_live_lease_of_another_run_is_not_taken_over(store: str) -> None:
    planted = _plant(store, expires_in=30, pid=os.getpid())
    with pytest.raises(LeaseHeld):
        fast(store).acquire()
    current = read_lease(store)
    assert current is not None
    assert current.token == planted.token


def _contend(start: threading.Barrier, lease: StoreLease, results: dict[int, LeaseRecord | None], i: int) -> None:
    start.wait()
    results[i] = lease.try_acquire()


def test_of_contenders_for_one_expired_lease_exactly_one_wins(store: str) -> None:
    for round_ in range(5):
        _plant(store, expires_in=-1, token=f"dead-{round_}")
        contenders = [fast(store) for _ in range(6)]
        start = threading.Barrier(len(contenders))
        results: dict[int, LeaseRecord | None] = {}
        threads = [threading.Thread(target=_contend, args=(start, lease, results, i))
                   for i, lease in enumerate(contenders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        winners = [i for i, holder in results.items() if holder is None]
        assert len(results) == len(contenders), results
        assert len(winners) == 1, results
        current = read_lease(store)
        assert current is not None
        assert current.token == contenders[winners[0]].token
        assert all(holder is not None and holder.token == current.token for holder in results.values()
                   if holder is not None)
        contenders[winners[0]].release()


def test_the_heartbeat_keeps_extending_the_lease(store: str) -> None:
    with StoreLease(store, duration=1.5, renew_every=0.3, wait=0) as lease:
        first = read_lease(store)
        assert first is not None
        time.sleep(2.5)  # past the first expiry: only renewals keep it live
        later = read_lease(store)
        assert later is not None
        assert later.token == lease.token
        assert later.expires_at > first.expires_at + 1
        assert later.acquired_at == first.acquired_at
        with pytest.raises(LeaseHeld):
            fast(store).acquire()


def test_a_run_whose_lease_was_taken_over_fails_instead_of_finishing(store: str) -> None:
    lease = StoreLease(store, duration=5, renew_every=0.3, wait=0)
    with pytest.raises(LeaseLost, match="taken over or removed"), lease:  # noqa: PT012 - raised on leaving `lease`
        _plant(store, expires_in=60, token="usurper")
        time.sleep(1.0)
        assert lease.lost
    current = read_lease(store)
    assert current is not None
    assert current.token == "usurper"


def test_store_lock_refuses_a_second_run_with_the_message(tmp_path: Path) -> None:
    from dupflow.flows.runtime import store_lock

    store = str(tmp_path / "store")
    with store_lock(store, wait=0):
        with pytest.raises(LeaseHeld, match="another dupflow run holds the store"):  # noqa: SIM117
            with store_lock(store, wait=0):
                pass
        assert (tmp_path / "store" / "_dupflow" / "lease.json").is_file()
    assert not (tmp_path / "store" / "_dupflow" / "lease.json").exists()


@pytest.mark.slow
def _watch_holders(lease_file: Path, holders: dict[int, list[float]], stop: threading.Event) -> None:
    """Note, until `stop`, when each pid is first and last seen holding the lease."""
    while not stop.is_set():
        try:
            pid = json.loads(lease_file.read_bytes())["pid"]
        except (OSError, ValueError, KeyError):
            pid = None
        if pid is not None:
            holders.setdefault(pid, [time.time(), 0.0])[1] = time.time()
        time.sleep(0.02)


def test_two_dupflow_runs_with_their_own_prefect_apis_take_turns_on_one_store(tmp_path: Path) -> None:
    from worlds import plant_world

    world = plant_world(tmp_path / "data")
    store = tmp_path / "store"
    lease_file = store / "_dupflow" / "lease.json"
    holders: dict[int, list[float]] = {}  # pid -> [first seen, last seen] as lease holder
    watching = threading.Event()
    exe = str(Path(sys.executable).with_name("dupflow"))
    procs, homes = [], []
    watcher = threading.Thread(target=_watch_holders, args=(lease_file, holders, watching), daemon=True)
    watcher.start()
    for name in ("a", "b"):
        home = tempfile.mkdtemp(prefix=f"dupflow-prefect-{name}-", dir=tmp_path)
        homes.append(home)
        env = {**os.environ, "PREFECT_HOME": home, "DUPFLOW_STORE_LEASE_WAIT_SECONDS": "600"}
        env.pop("PREFECT_API_URL", None)
        procs.append(subprocess.Popen(
            [exe, "run", "-d", f"train={world.root / 'train'}", "-d", f"val={world.root / 'val'}", "--store",
             str(store), "--out", str(tmp_path / f"out-{name}"), "--workers", "1", "--no-report"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    try:
        outputs = [proc.communicate(timeout=400) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        watching.set()
        watcher.join()
    texts = [f"{out}\n{err}" for out, err in outputs]
    for text in texts:
        assert "re-encoded while matching" not in text, text
        assert "did not finish" not in text, text
    ok = [i for i, proc in enumerate(procs) if proc.returncode == 0]
    refused = [i for i, proc in enumerate(procs) if proc.returncode != 0]
    assert ok, texts
    for i in refused:
        assert "another dupflow run holds the store" in texts[i], texts[i]
    assert not lease_file.exists()  # both released
    runs = {procs[i].pid for i in ok}
    assert runs <= set(holders), (holders, texts)  # each run that finished held the lease
    if len(ok) == 2:  # the later holder took the lease only after the earlier one had written its outputs
        first, second = sorted(ok, key=lambda i: holders[procs[i].pid][0])
        done = (tmp_path / f"out-{'ab'[first]}" / "summary.json").stat().st_mtime
        assert holders[procs[second].pid][0] >= done - 0.05, (holders, done)
        assert holders[procs[first].pid][1] <= holders[procs[second].pid][0]
        a, b = (json.loads((tmp_path / f"out-{n}" / "summary.json").read_text())["totals"] for n in "ab")
        assert a == b
