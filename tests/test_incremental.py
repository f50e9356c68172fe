"""Incremental encoding: unchanged files are reused, changed ones re-decoded, gone ones dropped."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from dupflow.encode.settings import EncodeSettings
from dupflow.errors import StoreError
from dupflow.io.sources import DatasetSource
from dupflow.store.encode_job import run_encode
from dupflow.store.encodings import EncodingsStore
from imagegen import dataset, natural, write


def _encode(data: Path, store: Path, **kw):  # type: ignore[no-untyped-def]
    return run_encode([DatasetSource("train", str(data))], str(store), EncodeSettings(**kw))


def test_second_run_decodes_nothing_touch_redecodes_one_delete_drops_one(tmp_path: Path) -> None:
    files = dataset(tmp_path / "data", 12)
    store = tmp_path / "store"
    first = _encode(tmp_path / "data", store)
    assert (first.encoded, first.reused) == (12, 0)
    assert _encode(tmp_path / "data", store).decoded == 0

    st = files[3].stat()
    os.utime(files[3], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    files[5].unlink()
    third = _encode(tmp_path / "data", store)
    assert (third.decoded, third.reused, third.dropped) == (1, 10, 1)
    uris = set(EncodingsStore(str(store)).read(["uri"])["uri"].to_pylist())
    assert str(files[5]) not in uris
    assert len(uris) == 11


def test_store_reads_as_one_hive_table(tmp_path: Path) -> None:
    dataset(tmp_path / "a", 3, seed=1)
    dataset(tmp_path / "b", 2, seed=2)
    run_encode([DatasetSource("train", str(tmp_path / "a")), DatasetSource("val", str(tmp_path / "b"))],
               str(tmp_path / "store"), EncodeSettings())
    table = ds.dataset(str(tmp_path / "store" / "encodings"), format="parquet", partitioning="hive").to_table()
    assert {"uri", "dataset", "error", "phash", "dhash", "exact"} <= set(table.column_names)
    assert sorted(table["dataset"].to_pylist()) == ["train"] * 3 + ["val"] * 2
    assert str(table.schema.field("phash").type) == "uint64"


def test_adding_an_encoder_reencodes_and_keeps_it(tmp_path: Path) -> None:
    dataset(tmp_path / "data", 4)
    _encode(tmp_path / "data", tmp_path / "store")
    assert _encode(tmp_path / "data", tmp_path / "store", encoders=("phash", "whash")).decoded == 4
    later = _encode(tmp_path / "data", tmp_path / "store")
    assert later.decoded == 0
    t = EncodingsStore(str(tmp_path / "store")).read()
    assert t["whash"].null_count == 0
    assert t["dhash"].null_count == 0


def test_permanent_errors_are_reused_and_transient_ones_retried(tmp_path: Path) -> None:
    write(tmp_path / "data" / "ok.jpg", natural(1, 64, 64))
    (tmp_path / "data" / "bad.jpg").write_bytes(b"garbage")
    big = write(tmp_path / "data" / "big.png", natural(2, 200, 200))
    _encode(tmp_path / "data", tmp_path / "store", max_pixels=100 * 100)
    again = _encode(tmp_path / "data", tmp_path / "store", max_pixels=1000 * 1000)
    assert again.decoded == 1  # the bomb is tried again under the raised limit; garbage is not
    rows = {Path(r["uri"]).name: r for r in EncodingsStore(str(tmp_path / "store")).read().to_pylist()}
    assert rows["big.png"]["error"] is None
    assert rows["bad.jpg"]["error"] == "not_an_image"
    assert big.exists()


def test_store_refuses_other_hash_size(tmp_path: Path) -> None:
    dataset(tmp_path / "data", 2)
    _encode(tmp_path / "data", tmp_path / "store")
    with pytest.raises(StoreError, match="hash-size"):
        _encode(tmp_path / "data", tmp_path / "store", hash_size=16)


def test_parallel_processes_give_the_same_rows_as_one(tmp_path: Path) -> None:
    dataset(tmp_path / "data", 40)
    run_encode([DatasetSource("t", str(tmp_path / "data"))], str(tmp_path / "s1"), EncodeSettings(), workers=1)
    run_encode([DatasetSource("t", str(tmp_path / "data"))], str(tmp_path / "s2"), EncodeSettings(shard_size=7),
               workers=2)
    one = EncodingsStore(str(tmp_path / "s1")).read().sort_by("uri")
    two = EncodingsStore(str(tmp_path / "s2")).read().sort_by("uri")
    assert one.equals(two)


def test_this_process_encodes_shards_beside_its_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from concurrent.futures import Future, ProcessPoolExecutor

    from dupflow.io.lifeline import lifeline_pool
    from dupflow.store import encode_job

    pools: list[int] = []
    futures: list[Future[Any]] = []
    real = lifeline_pool

    def tracked(max_workers: int, start_method: str = "spawn") -> ProcessPoolExecutor:
        pool = real(max_workers, start_method)
        pools.append(max_workers)
        submit = pool.submit

        def recorded(*args: Any, **kwargs: Any) -> Future[Any]:
            futures.append(submit(*args, **kwargs))
            return futures[-1]

        pool.submit = recorded  # type: ignore[method-assign]
        return pool

    monkeypatch.setattr(encode_job, "lifeline_pool", tracked)
    dataset(tmp_path / "data", 40)
    run_encode([DatasetSource("t", str(tmp_path / "data"))], str(tmp_path / "s1"), EncodeSettings(), workers=1)
    run_encode([DatasetSource("t", str(tmp_path / "data"))], str(tmp_path / "s2"), EncodeSettings(shard_size=4),
               workers=2)
    assert pools == [1]  # two processes: this one and one worker
    assert len(futures) == 10
    assert 1 <= sum(f.cancelled() for f in futures) <= 9  # the shards this process took back and encoded
    one = EncodingsStore(str(tmp_path / "s1")).read().sort_by("uri")
    two = EncodingsStore(str(tmp_path / "s2")).read().sort_by("uri")
    assert one.equals(two)


def test_a_second_writer_on_this_machine_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    dataset(tmp_path / "data", 2)
    _encode(tmp_path / "data", tmp_path / "store")
    store = EncodingsStore(str(tmp_path / "store"))
    rec = store.begin(EncodeSettings())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        rec.writer["pid"] = sleeper.pid  # as if that live process had begun the run
        store._write_record(rec)
        with pytest.raises(StoreError, match="is writing"):
            _encode(tmp_path / "data", tmp_path / "store")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _encode(tmp_path / "data", tmp_path / "store").decoded == 0  # a dead writer is resumed over


def test_a_store_whose_features_outgrow_2_gb_is_sorted_deduplicated_and_committed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow cannot take rows from a binary column holding more than 2 GB in one piece (~230,000
    images' local features): the store takes them as large_binary. Here the limit is lowered to a few
    bytes, so that this small set goes the same way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dupflow.store import encodings

    n = 10
    table = pa.table({"uri": [f"u{(7 * i) % n}" for i in range(n)] + ["u3"],
                      "orb": pa.chunked_array([pa.array([bytes([i]) * 5 for i in range(n)], pa.binary()),
                                               pa.array([b"again"], pa.binary())])})
    plain_sorted, plain_deduped = encodings.sorted_by_uri(table), encodings.dedupe(table, "uri", keep="last")
    monkeypatch.setattr(encodings, "LARGE_BYTES", 8)
    monkeypatch.setattr(encodings, "ROW_GROUP_ROWS", 4)
    assert encodings.sorted_by_uri(table).equals(plain_sorted)
    assert encodings.dedupe(table, "uri", keep="last").equals(plain_deduped)
    assert encodings.sorted_by_uri(table)["orb"].num_chunks == 3  # back in binary chunks of 4 rows

    write(tmp_path / "pics" / "a.jpg", natural(1))
    write(tmp_path / "pics" / "b.jpg", natural(2))
    run_encode([DatasetSource("pics", str(tmp_path / "pics"))], str(tmp_path / "store"),
               EncodeSettings(encoders=("phash", "orb")), workers=1)
    part = next((tmp_path / "store" / "encodings").rglob("*.parquet"))
    stored = pq.read_table(part, columns=["uri", "orb"])
    assert stored["orb"].type == pa.binary()
    assert stored["uri"].to_pylist() == sorted(stored["uri"].to_pylist())
    assert all(len(v) > 0 for v in stored["orb"].to_pylist())
