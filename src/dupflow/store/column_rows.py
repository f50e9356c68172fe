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

__all__ = ["ROW_GROUP_ROWS", "StoredColumn"]

ROW_GROUP_ROWS = 4_096  # ~37 MB of local features: what a task reads at once, whichever rows it wants
KEPT_BYTES = 256 * 2**20  # row groups kept after reading (the last read first out): a small store is read once


class StoredColumn:
    """Column `name` of the part files `paths` (row `r` of file `f` is addressed as (f, r))."""

    def __init__(self, fs: fsspec.AbstractFileSystem, paths: Sequence[str], name: str) -> None:
        self._fs, self._paths, self.name = fs, list(paths), name
        self._meta: dict[int, tuple[Any, np.ndarray, int]] = {}
        self._kept: OrderedDict[tuple[int, int], pa.Array] = OrderedDict()
        self._held: dict[tuple[int, int], pa.Array] = {}
        self._lock = threading.Lock()

    def _layout(self, f: int) -> tuple[Any, np.ndarray, int]:
        """File `f`'s metadata, the first row of each row group (and the row count last), and the column's
        position in its schema (-1: the file lacks the column, every value is null)."""
        with self._lock:
            found = self._meta.get(f)
        if found is None:
            with self._fs.open(self._paths[f], "rb") as fh:
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

    def present(self, files: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) bool: the value of each (file, row) is not null. Answered from the row groups'
        null counts; only a group holding both nulls and values is read."""
        out = np.zeros(len(rows), bool)
        for (f, g), at in self._by_group(files, rows).items():
            meta, starts, column = self._layout(f)
            if column < 0:
                continue
            stats = meta.row_group(g).column(column).statistics
            nulls = stats.null_count if stats is not None and stats.has_null_count else None
            if nulls == 0:
                out[at] = True
            elif nulls != meta.row_group(g).num_rows:
                valid = self._group(f, g).is_valid().to_numpy(zero_copy_only=False)
                out[at] = valid[rows[at] - starts[g]]
        return out

    def values(self, files: np.ndarray, rows: np.ndarray) -> list[Any]:
        """The value of each (file, row), in order (None where null)."""
        out: list[Any] = [None] * len(rows)
        for (f, g), at in self._by_group(files, rows).items():
            if self._layout(f)[2] < 0:
                continue
            local = rows[at] - self._layout(f)[1][g]
            for i, value in zip(at, self._group(f, g).take(pa.array(local)).to_pylist(), strict=True):
                out[i] = value
        return out

    def _group(self, f: int, g: int) -> pa.Array:
        """Row group `g` of file `f`'s values, kept while they fit in `KEPT_BYTES` with the others kept. A
        larger group than the store writes (a store written before its files had row groups) is kept for
        good: reading it again would cost more than holding it, as that store's whole column was held."""
        with self._lock:
            if (f, g) in self._kept:
                self._kept.move_to_end((f, g))
                return self._kept[(f, g)]
            if (f, g) in self._held:
                return self._held[(f, g)]
        with self._fs.open(self._paths[f], "rb") as fh:
            found = pq.ParquetFile(fh).read_row_group(g, columns=[self.name]).column(0).combine_chunks()
        with self._lock:
            if len(found) > 2 * ROW_GROUP_ROWS:
                self._held[(f, g)] = found
                return found
            self._kept[(f, g)] = found
            while sum(a.nbytes for a in self._kept.values()) > KEPT_BYTES and len(self._kept) > 1:
                self._kept.popitem(last=False)
        return found
