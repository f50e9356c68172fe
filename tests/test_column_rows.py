"""Reading a few rows of a store column: only the row groups that hold them, nulls told by statistics."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dupflow.store.column_rows import StoredColumn


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    values: list[bytes | None] = [f"v{i}".encode() for i in range(10)]
    values[4] = None  # row group 1 (rows 3-5) holds a null and values
    pq.write_table(pa.table({"orb": pa.array(values, pa.binary()), "n": pa.array(range(10))}),
                   tmp_path / "a.parquet", row_group_size=3)
    pq.write_table(pa.table({"n": pa.array(range(4))}), tmp_path / "b.parquet")  # written before the column
    return [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]


class Spy(StoredColumn):
    """Records the row groups it reads."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(fsspec.filesystem("file"), paths, "orb")
        self.read: list[tuple[int, int]] = []

    def _group(self, f: int, g: int) -> pa.Array:
        self.read.append((f, g))
        return super()._group(f, g)


def test_values_come_back_in_the_order_asked_reading_only_the_groups_that_hold_them(files: list[str]) -> None:
    column = Spy(files)
    got = column.values(np.array([0, 1, 0, 0, 0]), np.array([9, 2, 0, 4, 2]))
    assert got == [b"v9", None, b"v0", None, b"v2"]
    assert sorted(column.read) == [(0, 0), (0, 1), (0, 3)]  # not group 2 (rows 6-8), nothing of the file without it


def test_presence_is_read_from_null_counts_and_only_a_mixed_group_is_read(files: list[str]) -> None:
    column = Spy(files)
    rows = np.array([0, 3, 4, 5, 7, 1, 3])
    assert column.present(np.array([0, 0, 0, 0, 0, 1, 1]), rows).tolist() == [True, True, False, True, True,
                                                                            False, False]
    assert column.read == [(0, 1)]


def test_a_store_written_before_row_groups_is_read_once_not_per_request(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from dupflow.store import column_rows

    values = [f"v{i}".encode() for i in range(40)]
    paths = [str(tmp_path / f"old{f}.parquet") for f in range(2)]
    for path in paths:
        pq.write_table(pa.table({"orb": pa.array(values, pa.binary())}), path)  # one row group each
    monkeypatch.setattr(column_rows, "ROW_GROUP_ROWS", 4)
    monkeypatch.setattr(column_rows, "KEPT_BYTES", 1)  # a group of the new layout would be dropped at once
    column = StoredColumn(fsspec.filesystem("file"), paths, "orb")
    opened: list[object] = []

    def parquet_file(source: object, _real: type = pq.ParquetFile) -> object:
        opened.append(source)
        return _real(source)

    monkeypatch.setattr(pq, "ParquetFile", parquet_file)
    for f, row in ((0, 3), (1, 30), (0, 7), (1, 9)):
        assert column.values(np.array([f]), np.array([row])) == [values[row]]
    assert len(opened) == 4  # each file's metadata once and its one group once
