"""The apply journal: an append-only record, made durable before and after every move, from which a
killed run resumes and undo learns what moved.

Layout of a journal folder (local or any fsspec URL):

    JOURNAL/journal.jsonl               local: one JSON record per line, fsynced at each append
    JOURNAL/journal/0000000000.jsonl    object stores: each append is one new object (whole PUTs)
    JOURNAL/plan-RUN.parquet            the actions a run will take, written before it begins
    JOURNAL/result-RUN.parquet          every action's outcome, written when the run ends
    JOURNAL/dry-run-RUN.parquet         what a dry run found would happen

Records: `begin` (run, mode, manifest, options), `intent` (action, destination), `done` (action,
outcome, reason, destination, size, sha256), `end` (run, counts). A run without `end` is unfinished.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dupflow.errors import ConfigError, StorageError
from dupflow.faults import fault_point
from dupflow.fs import atomic_write, is_local, join, open_fs, storage_error
from dupflow.schemas import parquet_bytes

__all__ = ["Journal", "RunState", "moved_files"]

LOCAL_LOG = "journal.jsonl"
SEGMENTS = "journal"


@dataclass
class RunState:
    """One run (apply or undo) as the journal records it."""

    begin: dict[str, Any]
    intents: dict[int, dict[str, Any]] = field(default_factory=dict)
    done: dict[int, dict[str, Any]] = field(default_factory=dict)
    end: dict[str, Any] | None = None

    @property
    def run(self) -> str:
        return str(self.begin["run"])

    @property
    def mode(self) -> str:
        return str(self.begin["mode"])

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
    def records(self) -> list[dict[str, Any]]:
        """Every record, in order. A local log's torn last line (a crash mid-append) is ignored."""
        try:
            if self.local:
                path = join(self.root, LOCAL_LOG)
                if not os.path.exists(path):
                    return []
                with open(path, "rb") as fh:
                    return _parse_lines(fh.read())
            out: list[dict[str, Any]] = []
            for seg in self._segments():
                out += _parse_lines(self.fs.cat_file(seg))
            return out
        except OSError as exc:
            raise storage_error(exc, self.url, "read the journal") from exc

    def append(self, records: list[dict[str, Any]]) -> None:
        """Make `records` durable, in order, before returning."""
        if not records:
            return
        data = b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in records)
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
        with open(path, "ab+") as fh:
            _drop_torn_tail(fh)
            half = len(data) // 2
            fh.write(data[:half])
            fh.flush()
            fault_point("journal.half-written")
            fh.write(data[half:])
            fh.flush()
            os.fsync(fh.fileno())

    def _segments(self) -> list[str]:
        folder = join(self.root, SEGMENTS)
        if not self.fs.exists(folder):
            return []
        return sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".jsonl"))

    # -- runs ----------------------------------------------------------------------------------
    def runs(self) -> list[RunState]:
        """The runs in the order they began."""
        runs: dict[str, RunState] = {}
        for rec in self.records():
            kind, run = rec.get("t"), rec.get("run")
            if kind == "begin":
                runs[str(run)] = RunState(begin=rec)
                continue
            state = runs.get(str(run))
            if state is None:
                raise StorageError(f"the journal {self.url} has a {kind!r} record of unknown run {run}: it is "
                                   f"damaged; keep it for inspection and use a new --journal")
            if kind == "intent":
                state.intents[int(rec["a"])] = rec
            elif kind == "done":
                state.done[int(rec["a"])] = rec
            elif kind == "end":
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
        """Hold the journal for one writer. Local: an exclusive lock that a killed process releases."""
        if not self.local:
            yield
            return
        os.makedirs(self.root, exist_ok=True)
        with open(join(self.root, ".lock"), "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise ConfigError(f"another dupflow apply or undo is using the journal {self.url}: wait for "
                                  f"it to finish") from exc
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def moved_files(runs: list[RunState], plans: dict[str, pa.Table]) -> dict[str, dict[str, Any]]:
    """What stays moved after every run: original source -> the `done` record of its move (with the
    destination it went to), in the order the moves finished. Undo runs take their files back out."""
    moved: dict[str, dict[str, Any]] = {}
    for state in runs:
        sources = plans[state.run]["source"].to_pylist()
        destinations = plans[state.run]["destination"].to_pylist()
        for a, rec in state.done.items():
            if rec["outcome"] not in ("moved", "restored"):
                continue
            if state.mode == "apply":
                moved[sources[a]] = {**rec, "source": sources[a]}
            else:
                moved.pop(destinations[a], None)
    return moved


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

