"""The digests that name files and classes in the match state, and the join that finds last run's again."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from dupflow.match.digests import class_digests, file_digests, index_of


def _files(uris: list[str], etags: list[str | None], sizes: list[int | None], mtimes: list[int | None]) -> pa.Table:
    return pa.table({"uri": pa.array(uris, pa.string()), "etag": pa.array(etags, pa.string()),
                     "size": pa.array(sizes, pa.int64()),
                     "mtime": pa.array(mtimes, pa.timestamp("ns", tz="UTC"))})


def test_a_file_digest_changes_with_any_part_of_its_identity_and_fields_never_run_together() -> None:
    table = _files(
        ["s3://b/a.jpg", "s3://b/a.jpg", "s3://b/a.jpg", "s3://b/a.jpg", "s3://b/b.jpg", "ab", "a", "s3://b/a.jpg"],
        ["e1", "e1", "e1", "e2", "e1", "c", "bc", None],
        [10, 11, 10, 10, 10, 10, 10, 10],
        [5, 5, 6, 5, 5, 5, 5, 5],
    )
    digests = file_digests(table)
    assert digests.shape == (8, 2)
    assert digests.dtype == np.uint64
    assert len({tuple(d) for d in digests.tolist()}) == 8
    again = file_digests(_files(["s3://b/a.jpg", "s3://b/a.jpg"], ["e1", ""], [10, None], [5, None]))
    assert tuple(again[0]) == tuple(digests[0])  # the same identity, the same digest, in any table
    assert tuple(file_digests(_files(["s3://b/a.jpg"], [""], [10], [5]))[0]) == tuple(digests[7])  # null etag: ""
    assert tuple(again[1]) == tuple(file_digests(_files(["s3://b/a.jpg"], [""], [-1], [-1]))[0])


def test_file_digests_do_not_depend_on_how_the_columns_are_chunked_or_typed() -> None:
    rng = np.random.default_rng(2)
    n = 5_000
    uris = [f"s3://bucket/d{i % 7}/{'x' * int(rng.integers(0, 40))}{i}.jpg" for i in range(n)]
    etags = [None if rng.random() < 0.3 else f"{rng.integers(0, 10**9):x}" for _ in range(n)]
    sizes = rng.integers(0, 10**7, n).tolist()
    table = _files(uris, etags, sizes, rng.integers(0, 10**18, n).tolist())
    whole = file_digests(table)
    pieces = pa.concat_tables([table.slice(0, 1234), table.slice(1234, 3000), table.slice(4234)])
    assert pieces["uri"].num_chunks == 3
    large = table.cast(pa.schema([pa.field("uri", pa.large_string()), *[table.schema.field(k)
                                                                         for k in ("etag", "size", "mtime")]]))
    offset = pa.concat_tables([table.slice(17)]).combine_chunks()
    assert np.array_equal(file_digests(pieces), whole)
    assert np.array_equal(file_digests(large), whole)
    assert np.array_equal(file_digests(offset), whole[17:])
    assert len(np.unique(whole, axis=0)) == n


def test_class_digests_change_with_the_key_and_with_the_representative() -> None:
    rows = np.arange(12, dtype=np.uint64).reshape(6, 2)
    keys = np.array([[1, 2], [1, 2], [1, 3], [1, 2]], np.uint64)
    digests = class_digests(rows, np.array([0, 1, 0, 0]), keys)
    assert tuple(digests[0]) == tuple(digests[3])
    assert len({tuple(d) for d in digests[:3].tolist()}) == 3
    assert tuple(class_digests(rows, np.array([0]), keys[:1, :1])[0]) != tuple(digests[0])  # fewer key words


def test_index_of_finds_each_digest_where_it_first_is_and_minus_one_where_it_is_not() -> None:
    rng = np.random.default_rng(4)
    among = rng.integers(0, 2**63, (20_000, 2), dtype=np.uint64)
    among[5_000] = among[100]  # a repeated digest: found at its first row
    among[7_000, 0] = among[200, 0]  # the same first word, another second one: not the same digest
    values = np.concatenate([among[rng.integers(0, len(among), 3_000)],
                             rng.integers(0, 2**63, (1_000, 2), dtype=np.uint64), among[[5_000, 7_000, 200]]])
    first: dict[tuple[int, int], int] = {}
    for j, d in enumerate(among.tolist()):
        first.setdefault(tuple(d), j)
    expected = [first.get(tuple(v), -1) for v in values.tolist()]
    got = index_of(values, among)
    assert got.tolist() == expected
    assert got[-3:].tolist() == [100, 7_000, 200]
    assert (got == -1).sum() >= 1_000
    assert index_of(values[:0], among).shape == (0,)
    assert (index_of(values, among[:0]) == -1).all()
