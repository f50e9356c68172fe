"""One run at a time per store: a lease object inside the store itself, `STORE/_dupflow/lease.json`.

The lease names its owner (host, pid, run, a random token) and when it expires. Every change is a
compare-and-swap on the storage itself, so it works across machines and Prefect APIs:

    S3        create: PUT If-None-Match: *   renew/take over: PUT If-Match: ETAG   release: DELETE If-Match: ETAG
    local     the same operations under the OS's exclusive file lock on `lease.json.lock`
              (flock / Windows locking, released when the process dies); a new lease is linked into place,
              so it appears whole or not at all

A holder renews its lease from a heartbeat thread; a holder that died stops renewing, and once the lease
has expired the next run takes it over by a conditional replace of exactly the version it read, so
of two contenders taking over one expired lease only one can win. Expiry compares wall clocks: keep
the lease duration well above the clock skew between machines plus one renewal period. Other fsspec
stores get a best-effort lease (write, settle, read back), logged as such.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import fsspec
from filelock import FileLock, Timeout

from dupflow.errors import StorageError, StoreError
from dupflow.io.fs import atomic_write, durable_temp, fsync_dir, is_local, join, open_fs, storage_error, to_uri

__all__ = [
    "LEASE_PATH",
    "LeaseHeld",
    "LeaseLost",
    "LeaseRecord",
    "StoreLease",
    "lease_settings_from_env",
    "read_lease",
]

LEASE_PATH = "_dupflow/lease.json"
DURATION_ENV, RENEW_ENV, WAIT_ENV = "DUPFLOW_STORE_LEASE_SECONDS", "DUPFLOW_STORE_LEASE_RENEW_SECONDS", \
    "DUPFLOW_STORE_LEASE_WAIT_SECONDS"
DEFAULT_DURATION, DEFAULT_RENEW, DEFAULT_WAIT = 60.0, 15.0, 3600.0

log = logging.getLogger(__name__)


class LeaseHeld(StoreError):
    """Another live run holds the store's lease (and waiting for it timed out)."""

    def __init__(self, message: str, holder: LeaseRecord) -> None:
        super().__init__(message)
        self.holder = holder


class LeaseLost(StoreError):
    """This run's lease expired or was taken over while the run still held it."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class LeaseRecord:
    """The content of `lease.json`."""

    token: str
    host: str
    pid: int
    run: str
    acquired_at: float
    expires_at: float

    def to_json(self) -> bytes:
        body = {**asdict(self), "acquired_at": _iso_exact(self.acquired_at), "expires_at": _iso_exact(self.expires_at)}
        return json.dumps(body, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LeaseRecord:
        raw = json.loads(data)
        return cls(token=str(raw["token"]), host=str(raw["host"]), pid=int(raw["pid"]), run=str(raw["run"]),
                   acquired_at=_parse_ts(raw["acquired_at"]), expires_at=_parse_ts(raw["expires_at"]))

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def describe(self, store: str) -> str:
        """The refusal message for a run that finds this lease live."""
        lease = join(store, LEASE_PATH)
        return (f"another dupflow run holds the store {store} since {_iso(self.acquired_at)} (owner {self.host} "
                f"pid {self.pid}, run {self.run}); it expires at {_iso(self.expires_at)} if that run died — wait, "
                f"or remove {lease} if you are sure no run is alive")


def _iso_exact(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _parse_ts(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


def lease_settings_from_env() -> dict[str, float]:
    """`duration`, `renew_every` and `wait` (seconds) from DUPFLOW_STORE_LEASE_{SECONDS,RENEW_SECONDS,WAIT_SECONDS}."""
    def read(name: str, default: float) -> float:
        text = os.environ.get(name, "").strip()
        try:
            return float(text) if text else default
        except ValueError as exc:
            raise StoreError(f"{name}={text!r} is not a number of seconds") from exc

    return {"duration": read(DURATION_ENV, DEFAULT_DURATION), "renew_every": read(RENEW_ENV, DEFAULT_RENEW),
            "wait": read(WAIT_ENV, DEFAULT_WAIT)}


# -- compare-and-swap on one object ---------------------------------------------------------------
class _Cas(Protocol):
    """One object changed only by compare-and-swap. A version names one write of the content."""

    def read(self) -> tuple[bytes, str] | None: ...
    def create(self, data: bytes) -> str | None: ...  # None: it already exists
    def replace(self, data: bytes, version: str) -> str | None: ...  # None: it is not at `version` any more
    def delete(self, version: str) -> bool: ...  # False: it is not at `version` any more


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _LocalCas:
    """This machine's disk: every change under an exclusive OS file lock that dies with its process."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str) -> None:
        self.fs, self.path, self.folder = fs, path, path.rsplit("/", 1)[0]

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        os.makedirs(self.folder, exist_ok=True)
        lock = FileLock(self.path + ".lock", timeout=60, fallback_to_soft=False, preserve_lock_file=True,
                        thread_local=False)
        try:
            lock.acquire()
        except Timeout as exc:
            raise StorageError(f"cannot lock {self.path}.lock: another process kept it for 60 s") from exc
        try:
            yield
        finally:
            lock.release()

    def _read(self) -> tuple[bytes, str] | None:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        return data, _digest(data)

    def read(self) -> tuple[bytes, str] | None:
        return self._read()

    def create(self, data: bytes) -> str | None:
        with self._guard():
            tmp = durable_temp(self.path, data)
            try:
                os.link(tmp, self.path)  # atomic create-if-absent, whole content at once
            except FileExistsError:
                return None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            fsync_dir(self.folder)
            return _digest(data)

    def replace(self, data: bytes, version: str) -> str | None:
        with self._guard():
            current = self._read()
            if current is None or current[1] != version:
                return None
            atomic_write(self.fs, self.path, data)
            return _digest(data)

    def delete(self, version: str) -> bool:
        with self._guard():
            current = self._read()
            if current is None or current[1] != version:
                return False
            os.unlink(self.path)
            fsync_dir(self.folder)
            return True


def _s3_code(exc: BaseException) -> tuple[str, int]:
    """The S3 error code and HTTP status behind an exception s3fs raised ('', 0 if none)."""
    cur: BaseException | None = exc
    for _ in range(8):
        if cur is None:
            break
        response = getattr(cur, "response", None)
        if isinstance(response, dict):
            error = response.get("Error", {})
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return str(error.get("Code", "")), int(status or 0)
        cur = cur.__cause__ or cur.__context__
    return "", 0


_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "412", "409"}


def _conflict(exc: BaseException) -> bool:
    code, status = _s3_code(exc)
    return code in _CONFLICT_CODES or status in (404, 409, 412) or isinstance(exc, FileExistsError | FileNotFoundError)


class _S3Cas:
    """S3 (s3fs): conditional PUT and DELETE on the ETag; the server decides, so two writers never both win."""

    def __init__(self, fs: Any, path: str) -> None:
        self.fs = fs
        self.bucket, self.key, _ = fs.split_path(path)

    def read(self) -> tuple[bytes, str] | None:
        async def get() -> tuple[bytes, str]:
            resp = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            try:
                data = await resp["Body"].read()
            finally:
                resp["Body"].close()
            return data, str(resp["ETag"])

        try:
            found: tuple[bytes, str] = fsspec.asyn.sync(self.fs.loop, get)
            return found
        except FileNotFoundError:
            return None
        except OSError as exc:
            if _s3_code(exc)[0] == "NoSuchKey":
                return None
            raise

    def _put(self, data: bytes, **condition: str) -> str | None:
        try:
            resp = self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=data,
                                   ContentType="application/json", **condition)
        except Exception as exc:
            if _conflict(exc):
                return None
            raise
        return str(resp["ETag"])

    def create(self, data: bytes) -> str | None:
        return self._put(data, IfNoneMatch="*")

    def replace(self, data: bytes, version: str) -> str | None:
        return self._put(data, IfMatch=version)

    def delete(self, version: str) -> bool:
        try:
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=version)
        except Exception as exc:
            if _conflict(exc):
                return False
            code, status = _s3_code(exc)
            if code in ("NotImplemented", "InvalidArgument") or status == 501:  # no conditional DELETE here
                return self.replace(b'{"released": true}', version) is not None  # reads as expired: free
            raise
        return True


class _BestEffortCas:
    """Any other fsspec store: check, write, wait `settle` seconds, read back. Two contenders that
    write within `settle` of each other are told apart by the read-back; ones whose requests overlap
    more closely than that can both win (no server-side condition to rely on)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, settle: float = 1.0) -> None:
        self.fs, self.path, self.settle = fs, path, settle
        log.warning("%s cannot be written conditionally: the store lease there is best effort only",
                    to_uri(fs, path))

    def read(self) -> tuple[bytes, str] | None:
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        return data, _digest(data)

    def _write(self, data: bytes) -> str | None:
        atomic_write(self.fs, self.path, data)
        time.sleep(self.settle)
        found = self.read()
        return found[1] if found is not None and found[0] == data else None

    def create(self, data: bytes) -> str | None:
        return None if self.read() is not None else self._write(data)

    def replace(self, data: bytes, version: str) -> str | None:
        found = self.read()
        return self._write(data) if found is not None and found[1] == version else None

    def delete(self, version: str) -> bool:
        found = self.read()
        if found is None or found[1] != version:
            return False
        self.fs.rm_file(self.path)
        return True


def _cas_for(fs: fsspec.AbstractFileSystem, path: str) -> _Cas:
    if is_local(fs):
        return _LocalCas(fs, path)
    if "s3" in (fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)):
        return _S3Cas(fs, path)
    return _BestEffortCas(fs, path)


def read_lease(store_url: str, storage_options: dict[str, Any] | None = None) -> LeaseRecord | None:
    """The store's current lease (live or expired), or None."""
    fs, root = open_fs(store_url, storage_options)
    found = _cas_for(fs, join(root, LEASE_PATH)).read()
    return _parse(found[0]) if found else None


def _parse(data: bytes) -> LeaseRecord:
    """A lease record; a released or unreadable one reads as expired long ago (free to take over)."""
    try:
        return LeaseRecord.from_json(data)
    except (ValueError, KeyError, TypeError):
        return LeaseRecord(token="", host="?", pid=0, run="?", acquired_at=0.0, expires_at=0.0)


# -- the lease ------------------------------------------------------------------------------------
class StoreLease:
    """Hold a store for one run: `with StoreLease(url): ...`. A second run waits up to `wait` seconds
    for the holder to release (or its lease to expire), then raises LeaseHeld with the holder's
    details; `wait=0` refuses at once. While held, a heartbeat thread renews it every `renew_every`
    seconds; `check()` raises LeaseLost if a renewal found it gone."""

    def __init__(self, store_url: str, storage_options: dict[str, Any] | None = None, *, run: str | None = None,
                 duration: float | None = None, renew_every: float | None = None, wait: float | None = None,
                 poll: float | None = None, on_wait: Callable[[LeaseRecord], None] | None = None) -> None:
        env = lease_settings_from_env()
        self.duration = env["duration"] if duration is None else duration
        self.renew_every = env["renew_every"] if renew_every is None else renew_every
        self.wait = env["wait"] if wait is None else wait
        if self.duration <= 0 or not 0 < self.renew_every < self.duration:
            raise StoreError(f"a store lease needs 0 < renewal ({self.renew_every:g} s) < duration "
                             f"({self.duration:g} s)")
        self.poll = poll if poll is not None else min(5.0, max(0.05, self.renew_every / 3))
        self.on_wait = on_wait
        fs, root = open_fs(store_url, storage_options)
        self.store = to_uri(fs, root)
        self.uri = to_uri(fs, join(root, LEASE_PATH))
        self._cas = _cas_for(fs, join(root, LEASE_PATH))
        self.token = uuid.uuid4().hex
        self.run = run or self.token[:12]
        self.record: LeaseRecord | None = None
        self._version: str | None = None
        self._lost: str | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # the storage calls, with errors mapped once
    def _call(self, action: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except (StoreError, StorageError):
            raise
        except Exception as exc:
            raise storage_error(exc, self.uri, action) from exc

    def _new_record(self, acquired_at: float | None = None) -> LeaseRecord:
        now = time.time()
        return LeaseRecord(token=self.token, host=socket.gethostname(), pid=os.getpid(), run=self.run,
                           acquired_at=now if acquired_at is None else acquired_at, expires_at=now + self.duration)

    def _adopt(self, record: LeaseRecord, version: str) -> None:
        self.record, self._version, self._lost = record, version, None

    def try_acquire(self) -> LeaseRecord | None:
        """Take the lease if it is free or expired: None when taken, else the live holder's record."""
        for _ in range(10):  # each turn loses only to a change someone else made meanwhile
            found = self._call("read", self._cas.read)
            if found is None:
                mine = self._new_record()
                version = self._call("write", self._cas.create, mine.to_json())
                if version is not None:
                    self._adopt(mine, version)
                    return None
                continue
            data, version = found
            current = _parse(data)
            if current.token == self.token:  # a write of ours whose reply was lost
                self._adopt(current, version)
                return None
            if not current.expired(time.time()):
                return current
            mine = self._new_record()
            new_version = self._call("write", self._cas.replace, mine.to_json(), version)
            if new_version is not None:
                if current.token:
                    log.warning("took over the lease on %s from a run that stopped renewing it (owner %s pid %s, "
                                "run %s, expired %s)", self.store, current.host, current.pid, current.run,
                                _iso(current.expires_at))
                self._adopt(mine, new_version)
                return None
        found = self._call("read", self._cas.read)
        if found is not None and not _parse(found[0]).expired(time.time()):
            return _parse(found[0])
        raise StoreError(f"could not take the lease {self.uri}: it kept changing; try again")

    def acquire(self) -> None:
        """Take the lease, waiting up to `self.wait` seconds for a live holder; then start the heartbeat."""
        deadline = time.monotonic() + self.wait
        told = False
        while True:
            holder = self.try_acquire()
            if holder is None:
                break
            if time.monotonic() >= deadline:
                waited = f" (gave up after waiting {self.wait:g} s; {WAIT_ENV} sets how long)" if self.wait else ""
                raise LeaseHeld(holder.describe(self.store) + waited, holder)
            if not told:
                told = True
                if self.on_wait is not None:
                    self.on_wait(holder)
                else:
                    log.warning("waiting up to %g s for the store lease: %s", self.wait, holder.describe(self.store))
            time.sleep(max(0.0, min(self.poll, deadline - time.monotonic())))
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name="dupflow-store-lease", daemon=True)
        self._heartbeat.start()

    def renew(self) -> None:
        """Extend the lease by `duration` from now, if it is still ours; raises LeaseLost if not."""
        with self._mutex:
            if self.record is None or self._version is None:
                raise LeaseLost(f"the lease {self.uri} is not held")
            mine = self._new_record(acquired_at=self.record.acquired_at)
            version = self._call("renew", self._cas.replace, mine.to_json(), self._version)
            if version is None:
                found = self._call("read", self._cas.read)
                if found is not None and _parse(found[0]).token == self.token:  # our own write landed
                    self._adopt(_parse(found[0]), found[1])
                    return
                self._lost = (f"this run's lease on {self.store} was taken over or removed while it ran (it was "
                              f"not renewed before {_iso(self.record.expires_at)}); the store may have been written "
                              f"by another run: run again")
                self.record = self._version = None
                raise LeaseLost(self._lost)
            self._adopt(mine, version)

    def _beat(self) -> None:
        while not self._stop.wait(self.renew_every):
            try:
                self.renew()
            except LeaseLost as exc:
                log.error("%s", exc)
                return
            except Exception as exc:  # noqa: BLE001 - a transient storage failure: the lease stays valid till it expires
                log.warning("could not renew the lease %s (will retry): %s", self.uri, exc)
                record = self.record
                if record is not None and record.expired(time.time()):
                    self._lost = f"this run's lease on {self.store} expired: it could not be renewed ({exc})"
                    log.error("%s", self._lost)
                    return

    @property
    def lost(self) -> str | None:
        """Why the lease was lost while held, or None."""
        return self._lost

    def check(self) -> None:
        """Raise LeaseLost if a renewal found the lease gone (call before committing work)."""
        if self._lost:
            raise LeaseLost(self._lost)

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join(timeout=max(30.0, self.renew_every))
        self._heartbeat = None
        with self._mutex:
            version, self.record, self._version = self._version, None, None
            if version is not None and not self._call("release", self._cas.delete, version):
                log.warning("the lease %s was no longer this run's when it finished; left it alone", self.uri)

    def __enter__(self) -> StoreLease:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        lost = self._lost
        self.release()
        if lost and kind is None:
            raise LeaseLost(lost)
