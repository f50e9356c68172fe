"""The apply journal: an append-only record, made durable before and after every move, from which a
killed run resumes and undo learns what moved.

Layout of a journal folder (local or any fsspec URL):

    JOURNAL/journal.jsonl               local: one JSON record per line, fsynced at each append
    JOURNAL/journal/0000000000.jsonl    object stores: each append is one new object (whole PUTs)
    JOURNAL/plan-RUN.parquet            the actions a run will take, written before it begins
    JOURNAL/result-RUN.parquet          every action's outcome, written when the run ends
    JOURNAL/dry-run-RUN.parquet         what a dry run found would happen

Records (`Begin`, `Intent`, `Done`, `End`): a run begins (mode, plan, manifest, options), each move
is intended (action, destination) before it starts and done (outcome, reason, destination, size,
sha256) after it ends, and the run ends (counts). A run without `End` is unfinished. On disk each is
one JSON object tagged by `t`, with `action` and `destination` stored as `a` and `dst`: the format
every release has written, so journals of earlier releases resume and undo unchanged.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from dupflow.errors import ConfigError, StorageError
from dupflow.io.faults import fault_point
from dupflow.io.fs import atomic_write, fsync_dir, is_local, join, open_fs, storage_error
from dupflow.schemas import parquet_bytes

__all__ = ["Begin", "Done", "End", "Intent", "Journal", "Record", "RunState", "moved_files"]

LOCAL_LOG = "journal.jsonl"
SEGMENTS = "journal"


@dataclass(frozen=True)
class Begin:
    """A run starts: its mode, its plan table, the manifest it applies, its options, and who runs it."""

    TAG: ClassVar[str] = "begin"
    run: str
    mode: str  # apply | undo
    plan: str  # plan-RUN.parquet in the journal folder
    manifest: str | None
    manifest_sha256: str | None
    duplicates_root: str
    options: dict[str, Any]  # ApplyOptions.describe()
    at: str
    dupflow: str
    host: str
    pid: int


@dataclass(frozen=True)
class Intent:
    """A move is about to start: durable before the file is touched, so that a resume can settle it."""

    TAG: ClassVar[str] = "intent"
    run: str
    action: int
    destination: str


@dataclass(frozen=True)
class Done:
    """An action's outcome, with the bytes that landed for a move. The defaults are what a record
    without that key meant."""

    TAG: ClassVar[str] = "done"
    run: str
    action: int
    outcome: str
    destination: str
    reason: str | None = None
    size: int | None = None
    sha256: str | None = None
    kind: str = "image"


@dataclass(frozen=True)
class End:
    """A run finished: its count of each outcome."""

    TAG: ClassVar[str] = "end"
    run: str
    counts: dict[str, int]
    at: str


Record = Begin | Intent | Done | End
_CLASSES: dict[str, type[Record]] = {cls.TAG: cls for cls in (Begin, Intent, Done, End)}
_STORED = {"action": "a", "destination": "dst"}  # field -> its key on disk


@dataclass
class RunState:
    """One run (apply or undo) as the journal records it."""

    begin: Begin
    intents: dict[int, Intent] = field(default_factory=dict)
    done: dict[int, Done] = field(default_factory=dict)
    end: End | None = None

    @property
    def run(self) -> str:
        return self.begin.run

    @property
    def mode(self) -> str:
        return self.begin.mode

    @property
    def finished(self) -> bool:
        return self.end is not None


class Journal:
    """A journal folder. One writer at a time: locally an exclusive lock guards it; on object stores
    the caller must make sure (the flow holds its store's concurrency slot)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = open_fs(self.url, storage_options)
        self.local = is_local(self.fs)
        self._next_segment: int | None = None

    # -- records -------------------------------------------------------------------------------
    def records(self) -> list[Record]:
        """Every record, in order. A local log's torn last line (a crash mid-append) is ignored, and so
        are records of a kind this release does not know."""
        try:
            if self.local:
                path = join(self.root, LOCAL_LOG)
                if not os.path.exists(path):
                    return []
                with open(path, "rb") as fh:
                    stored = _parse_lines(fh.read())
            else:
                stored = [rec for seg in self._segments() for rec in _parse_lines(self.fs.cat_file(seg))]
        except OSError as exc:
            raise storage_error(exc, self.url, "read the journal") from exc
        return [rec for rec in (self._decode(raw) for raw in stored) if rec is not None]

    def append(self, records: Sequence[Record]) -> None:
        """Make `records` durable, in order, before returning."""
        if not records:
            return
        data = b"".join(_encode(r) for r in records)
        try:
            if self.local:
                self._append_local(data)
            else:
                if self._next_segment is None:
                    self._next_segment = len(self._segments())
                atomic_write(self.fs, join(self.root, SEGMENTS, f"{self._next_segment:010d}.jsonl"), data)
                self._next_segment += 1
        except OSError as exc:
            raise storage_error(exc, self.url, "append to the journal") from exc

    def _append_local(self, data: bytes) -> None:
        os.makedirs(self.root, exist_ok=True)
        path = join(self.root, LOCAL_LOG)
        created = not os.path.exists(path)
        with open(path, "ab+") as fh:
            _drop_torn_tail(fh)
            half = len(data) // 2
            fh.write(data[:half])
            fh.flush()
            fault_point("journal.half-written")
            fh.write(data[half:])
            fh.flush()
            os.fsync(fh.fileno())
        if created:  # the log's name must survive a power cut as well as its content
            fsync_dir(self.root)

    def _segments(self) -> list[str]:
        folder = join(self.root, SEGMENTS)
        if not self.fs.exists(folder):
            return []
        return sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".jsonl"))

    def _decode(self, stored: dict[str, Any]) -> Record | None:
        """A stored record as its class; None for a kind this release does not know."""
        cls = _CLASSES.get(stored.get("t", ""))
        if cls is None:
            return None
        keys = {f.name: _STORED.get(f.name, f.name) for f in fields(cls)}
        try:
            return cls(**{name: stored[key] for name, key in keys.items() if key in stored})
        except TypeError as exc:
            raise StorageError(f"the journal {self.url} has a damaged {cls.TAG!r} record ({exc}): keep it for "
                               f"inspection and use a new --journal") from None

    # -- runs ----------------------------------------------------------------------------------
    def runs(self) -> list[RunState]:
        """The runs in the order they began."""
        runs: dict[str, RunState] = {}
        for rec in self.records():
            if isinstance(rec, Begin):
                runs[rec.run] = RunState(begin=rec)
                continue
            state = runs.get(rec.run)
            if state is None:
                raise StorageError(f"the journal {self.url} has a {rec.TAG!r} record of unknown run {rec.run}: it is "
                                   f"damaged; keep it for inspection and use a new --journal")
            if isinstance(rec, Intent):
                state.intents[rec.action] = rec
            elif isinstance(rec, Done):
                state.done[rec.action] = rec
            else:
                state.end = rec
        return list(runs.values())

    def unfinished(self) -> RunState | None:
        """The last run if it never ended (it was killed), else None."""
        runs = self.runs()
        return runs[-1] if runs and not runs[-1].finished else None

    # -- tables beside the log -------------------------------------------------------------------
    def write_table(self, name: str, table: pa.Table) -> str:
        """Write `name` (e.g. plan-RUN.parquet) into the journal folder; returns its URL."""
        atomic_write(self.fs, join(self.root, name), parquet_bytes(table))
        return join(self.url, name)

    def read_table(self, name: str) -> pa.Table:
        """A table the journal folder holds."""
        try:
            return pq.read_table(io.BytesIO(self.fs.cat_file(join(self.root, name))))
        except FileNotFoundError as exc:
            raise StorageError(f"{join(self.url, name)} is missing: the journal folder is incomplete") from exc
        except OSError as exc:
            raise storage_error(exc, join(self.url, name), "read") from exc

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the journal for one writer. Local: the OS's exclusive file lock (flock, or Windows'
        own), refused at once while another process holds it, and released when that one dies."""
        if not self.local:
            yield
            return
        os.makedirs(self.root, exist_ok=True)
        held = FileLock(join(self.root, ".lock"), blocking=False, fallback_to_soft=False)
        try:
            held.acquire()
        except Timeout as exc:  # before OSError: Timeout is one
            raise ConfigError(f"another dupflow apply or undo is using the journal {self.url}: wait for "
                              f"it to finish") from exc
        except OSError as exc:
            raise storage_error(exc, join(self.url, ".lock"), "lock") from exc
        try:
            yield
        finally:
            held.release()


def moved_files(runs: list[RunState], plans: dict[str, pa.Table]) -> dict[str, Done]:
    """What stays moved after every run: original source -> the `Done` record of its move (its run,
    destination, size and hash), in the order the moves finished. Undo runs take their files back out."""
    moved: dict[str, Done] = {}
    for state in runs:
        sources = plans[state.run]["source"].to_pylist()
        destinations = plans[state.run]["destination"].to_pylist()
        for a, rec in state.done.items():
            if rec.outcome not in ("moved", "restored"):
                continue
            if state.mode == "apply":
                moved[sources[a]] = rec
            else:
                moved.pop(destinations[a], None)
    return moved


def _encode(rec: Record) -> bytes:
    """One log line: the record's fields under their stored keys, tagged with its kind."""
    stored = {_STORED.get(f.name, f.name): getattr(rec, f.name) for f in fields(rec)}
    return json.dumps({"t": rec.TAG, **stored}, sort_keys=True).encode() + b"\n"


def _parse_lines(data: bytes) -> list[dict[str, Any]]:
    lines = data.split(b"\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the last line, cut short by a crash: it never counted
                break
            raise StorageError(f"the journal has a damaged record at line {i + 1}: keep it for inspection") from None
    return out


def _drop_torn_tail(fh: io.BufferedRandom) -> None:
    """Cut a half-written last line (a crash mid-append) so that the next record starts on its own line."""
    end = fh.seek(0, os.SEEK_END)
    if end == 0:
        return
    fh.seek(end - 1)
    if fh.read(1) == b"\n":
        return
    fh.seek(0)
    data = fh.read()
    fh.truncate(data.rfind(b"\n") + 1)
    fh.seek(0, os.SEEK_END)

