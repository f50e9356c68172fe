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

    def parquet_file(source: object, _real: type = pq.ParquetFile, **options: object) -> object:
        opened.append(source)
        return _real(source, **options)

    monkeypatch.setattr(pq, "ParquetFile", parquet_file)
    for f, row in ((0, 3), (1, 30), (0, 7), (1, 9)):
        assert column.values(np.array([f]), np.array([row])) == [values[row]]
    assert len(opened) == 4  # each file's metadata once and its one group once


def test_a_group_whose_nulls_are_the_unreadable_files_is_not_read(files: list[str]) -> None:
    column = Spy(files)
    rows = np.array([3, 5, 7])  # row 4, the null, is a file that could not be read: known null
    assert column.present(np.zeros(3, np.int64), rows, np.array([0]), np.array([4])).all()
    assert column.read == []


def test_threads_wanting_one_group_at_once_read_it_once(files: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    reads: list[int] = []

    def slow_parquet_file(source: object, _real: type = pq.ParquetFile, **options: object) -> object:
        if "metadata" in options:  # a row group is about to be read
            reads.append(1)
            time.sleep(0.2)
        return _real(source, **options)

    monkeypatch.setattr(pq, "ParquetFile", slow_parquet_file)
    column = StoredColumn(fsspec.filesystem("file"), files, "orb")
    column.present(np.array([0]), np.array([0]))  # the file's layout, read before the race
    start = threading.Barrier(6)
    got: list[list[object]] = []

    def want(row: int) -> None:
        start.wait()
        got.append(column.values(np.array([0]), np.array([row])))

    threads = [threading.Thread(target=want, args=(6 + k % 3,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(g[0] for g in got) == sorted([b"v6", b"v7", b"v8"] * 2)  # type: ignore[type-var]
    assert len(reads) == 1


def test_groups_dropped_from_memory_are_read_again_correctly(files: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from dupflow.store import column_rows

    reads: list[int] = []

    def parquet_file(source: object, _real: type = pq.ParquetFile, **options: object) -> object:
        reads.extend([1] if "metadata" in options else [])
        return _real(source, **options)

    monkeypatch.setattr(pq, "ParquetFile", parquet_file)
    monkeypatch.setattr(column_rows, "KEPT_BYTES", 1)  # keep one group at a time
    column = StoredColumn(fsspec.filesystem("file"), files, "orb")
    for row in (0, 9, 1, 9, 9):
        assert column.values(np.array([0]), np.array([row])) == [f"v{row}".encode()]
    assert len(reads) == 4  # groups 0, 3, 0 again, 3 again; then 3 is kept
