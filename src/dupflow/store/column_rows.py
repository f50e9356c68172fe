"""One column of the store's part files, read a few rows at a time: only the row groups that hold the
wanted rows are read (the part files are written in row groups of `ROW_GROUP_ROWS`), so a match task
holds the local features of the pictures it verifies, not those of the whole store."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dupflow.errors import StoreError

__all__ = ["ROW_GROUP_ROWS", "StoredColumn"]

ROW_GROUP_ROWS = 4_096  # ~37 MB of local features: what a task reads at once, whichever rows it wants
KEPT_BYTES = 256 * 2**20  # row groups kept after reading (least recently used out): a small store is read once


class StoredColumn:
    """Column `name` of the part files `paths` (row `r` of file `f` is addressed as (f, r)). Safe to share
    between threads: a row group wanted by several at once is read once."""

    def __init__(self, fs: fsspec.AbstractFileSystem, paths: Sequence[str], name: str) -> None:
        self._fs, self._paths, self.name = fs, list(paths), name
        self._meta: dict[int, tuple[Any, np.ndarray, int]] = {}
        self._kept: OrderedDict[tuple[int, int], pa.ChunkedArray] = OrderedDict()
        self._kept_bytes = 0
        self._held: dict[tuple[int, int], pa.ChunkedArray] = {}
        self._reading: dict[tuple[int, int], threading.Lock] = {}
        self._lock = threading.Lock()

    def _open(self, f: int) -> Any:
        try:
            return self._fs.open(self._paths[f], "rb")
        except FileNotFoundError as exc:
            raise StoreError(f"{self._paths[f]} is gone: the store was re-encoded while matching; run the "
                             "match again") from exc

    def _layout(self, f: int) -> tuple[Any, np.ndarray, int]:
        """File `f`'s metadata, the first row of each row group (and the row count last), and the column's
        position in its schema (-1: the file lacks the column, every value is null)."""
        with self._lock:
            found = self._meta.get(f)
        if found is None:
            with self._open(f) as fh:
                meta = pq.ParquetFile(fh).metadata
            starts = np.cumsum([0, *(meta.row_group(g).num_rows for g in range(meta.num_row_groups))])
            names = [meta.schema.column(i).path for i in range(meta.num_columns)]
            found = (meta, starts, names.index(self.name) if self.name in names else -1)
            with self._lock:
                self._meta[f] = found
        return found

    def _by_group(self, files: np.ndarray, rows: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
        """The positions of the wanted (file, row) pairs, by (file, row group)."""
        out: dict[tuple[int, int], np.ndarray] = {}
        for f in np.unique(files):
            at = np.flatnonzero(files == f)
            starts = self._layout(int(f))[1]
            group = np.searchsorted(starts, rows[at], side="right") - 1
            for g in np.unique(group):
                out[(int(f), int(g))] = at[group == g]
        return out

    def present(self, files: np.ndarray, rows: np.ndarray, null_files: np.ndarray | None = None,
                null_rows: np.ndarray | None = None) -> np.ndarray:
        """(len(rows),) bool: the value of each (file, row) is not null. Answered from the row groups'
        null counts: a group is read only when it holds more nulls than the rows known to be null
        (`null_files`, `null_rows`: e.g. the files that could not be read, none of them among `rows`)."""
        known: dict[tuple[int, int], int] = {}
        if null_files is not None and null_rows is not None:
            known = {key: len(at) for key, at in self._by_group(null_files, null_rows).items()}
        out = np.zeros(len(rows), bool)
        for (f, g), at in self._by_group(files, rows).items():
            meta, starts, column = self._layout(f)
            if column < 0:
                continue
            stats = meta.row_group(g).column(column).statistics
            nulls = stats.null_count if stats is not None and stats.has_null_count else None
            if nulls is not None and nulls <= known.get((f, g), 0):
                out[at] = True
            elif nulls != meta.row_group(g).num_rows:
                valid = self._group(f, g).is_valid().to_numpy(zero_copy_only=False)
                out[at] = valid[rows[at] - starts[g]]
        return out

    def values(self, files: np.ndarray, rows: np.ndarray) -> list[Any]:
        """The value of each (file, row), in order (None where null)."""
        out: list[Any] = [None] * len(rows)
        for (f, g), at in self._by_group(files, rows).items():
            _, starts, column = self._layout(f)
            if column < 0:
                continue
            local = rows[at] - starts[g]
            for i, value in zip(at, self._group(f, g).take(pa.array(local)).to_pylist(), strict=True):
                out[i] = value
        return out

    def _cached(self, key: tuple[int, int]) -> pa.ChunkedArray | None:
        with self._lock:
            if key in self._kept:
                self._kept.move_to_end(key)
                return self._kept[key]
            return self._held.get(key)

    def _group(self, f: int, g: int) -> pa.ChunkedArray:
        """Row group `g` of file `f`'s values, kept while they fit in `KEPT_BYTES` with the others kept. A
        larger group than the store writes (a store written before its files had row groups) is kept for
        good: reading it again would cost more than holding it, as that store's whole column was held."""
        key = (f, g)
        found = self._cached(key)
        if found is not None:
            return found
        with self._lock:
            reading = self._reading.setdefault(key, threading.Lock())
        with reading:  # another thread reading the same group: wait for it, then take what it read
            found = self._cached(key)
            if found is not None:
                return found
            meta = self._layout(f)[0]
            with self._open(f) as fh:
                found = pq.ParquetFile(fh, metadata=meta).read_row_group(g, columns=[self.name]).column(0)
            with self._lock:
                self._reading.pop(key, None)
                if len(found) > 2 * ROW_GROUP_ROWS:
                    self._held[key] = found
                    return found
                self._kept[key] = found
                self._kept_bytes += found.nbytes
                while self._kept_bytes > KEPT_BYTES and len(self._kept) > 1:
                    self._kept_bytes -= self._kept.popitem(last=False)[1].nbytes
        return found
