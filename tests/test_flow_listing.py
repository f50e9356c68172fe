"""The distributed run stages its listing and its shards in the store: the flow passes where they are and how
many files they hold, so that what reaches the flow process (every task's arguments and return value) stays
the same size whatever the number of files; and the staged steps do what the in-memory run does."""

from __future__ import annotations

import pickle
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dupflow.config import validate_config
from dupflow.encode.encoding import EncodeStats, make_shards
from dupflow.encode.settings import EncodeSettings
from dupflow.io.listing import ListingStats, dataset_url, list_dataset
from dupflow.io.sources import DatasetSource
from dupflow.store.encode_job import (
    commit_staged,
    encode_staged_shard,
    open_encode,
    plan_staged,
    prepare_encode,
    run_encode,
)
from dupflow.store.encodings import EncodingsStore
from dupflow.store.listing_stage import (
    LISTING_DIR,
    MAX_UNREADABLE_CARRIED,
    SHARDS_PER_FILE,
    merged_stats,
    new_stage_id,
    read_listing,
    read_shard,
    refs_table,
    stage_listing,
)
from dupflow.store.record import StoreRoot
from imagegen import dataset


def _noise(root: Path, n: int, seed: int) -> list[Path]:
    """`n` distinct tiny PNGs (cheap to write and to decode)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = root / f"d{i % 7}" / f"img{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB").save(path)
        paths.append(path)
    return paths


def _file_list(path: Path, entries: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(entries) + "\n")
    return path


# -- the staged steps, in this process ------------------------------------------------------------
def test_a_staged_listing_reads_back_as_listed_in_parts(tmp_path: Path) -> None:
    dataset(tmp_path / "train", 7)
    source = DatasetSource("train", str(tmp_path / "train"))
    store = str(tmp_path / "store")
    staged = stage_listing(store, "run-1", source, rows_per_part=3)
    refs = list(list_dataset(source))
    assert (staged.parts, staged.count, staged.stats.listed) == (3, 7, 7)
    assert staged.url == dataset_url(source, refs)
    assert read_listing(StoreRoot(store), [staged]).equals(refs_table(refs))
    assert len(pickle.dumps(staged)) < 1500


def test_a_staged_file_list_records_the_folder_holding_its_files(tmp_path: Path) -> None:
    entries = [str(tmp_path / "pool" / sub / f"f{i}.jpg") for i, sub in enumerate(["a/x", "a/y/z", "a/y", "a/x/w"])]
    source = DatasetSource("listed", str(_file_list(tmp_path / "lists" / "listed.txt", entries)))
    staged = stage_listing(str(tmp_path / "store"), "run-1", source, rows_per_part=1)
    refs = list(list_dataset(source))
    assert staged.url == dataset_url(source, refs) == str(tmp_path / "pool" / "a")
    assert (staged.parts, staged.count, staged.stats.missing) == (4, 4, 4)
    assert read_listing(StoreRoot(str(tmp_path / "store")), [staged]).equals(refs_table(refs))


def test_unreadable_folders_are_counted_and_only_the_first_few_named(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import dupflow.store.listing_stage as listing_stage

    def failing(_source: DatasetSource, _options: Any, stats: ListingStats, **_kw: Any) -> Iterator[Any]:
        stats.unreadable_dirs = [f"/data/dir{i}: permission denied" for i in range(500)]
        yield from ()

    monkeypatch.setattr(listing_stage, "list_dataset", failing)
    staged = [stage_listing(str(tmp_path / "store"), "run-1", DatasetSource(name, str(tmp_path)))
              for name in ("a", "b")]
    assert all(s.unreadable == 500 for s in staged)
    assert all(len(s.stats.unreadable_dirs or []) == MAX_UNREADABLE_CARRIED for s in staged)
    total = merged_stats(staged)
    assert len(total.unreadable_dirs or []) == MAX_UNREADABLE_CARRIED + 1
    assert (total.unreadable_dirs or [])[-1] == f"... and {1000 - MAX_UNREADABLE_CARRIED:,} more"


def test_the_staged_plan_cuts_the_shards_the_in_memory_plan_cuts(tmp_path: Path) -> None:
    n = 2 * SHARDS_PER_FILE * 2 + 5  # shards of 2: three staged files, the last shard of one file
    entries = [str(tmp_path / "gone" / f"{i % 5}" / f"f{i:04d}.jpg") for i in range(n)]
    sources = [DatasetSource("listed", str(_file_list(tmp_path / "listed.txt", entries))),
               DatasetSource("other", str(_file_list(tmp_path / "other.txt", entries[:9])))]
    settings = EncodeSettings(shard_size=2)
    refs = [r for s in sources for r in list_dataset(s)]
    in_memory = prepare_encode(str(tmp_path / "a"), settings, refs)

    store, stage = str(tmp_path / "b"), new_stage_id()
    listings = [stage_listing(store, stage, s, rows_per_part=50) for s in sources]
    plan = plan_staged(open_encode(store, settings), listings, stage)
    assert (plan.listed, plan.reused, plan.shards.count) == (n + 9, 0, len(in_memory.shards))
    root = StoreRoot(store)
    staged = [make_shards(read_shard(root, plan.shards, i), 2)[0] for i in range(plan.shards.count)]
    assert staged == list(in_memory.shards)  # the same files in the same order, under the same keys
    files = sorted((Path(store) / LISTING_DIR / stage / "shards").iterdir())
    assert len(files) == 3
    assert pq.ParquetFile(files[0]).num_row_groups == SHARDS_PER_FILE  # a shard reads one row group
    assert len(pickle.dumps(plan)) < 8000


def test_a_staged_run_commits_what_the_local_run_commits_and_clears_its_staging(tmp_path: Path) -> None:
    dataset(tmp_path / "train", 9)
    dataset(tmp_path / "val", 4, seed=50)
    sources = [DatasetSource("train", str(tmp_path / "train")), DatasetSource("val", str(tmp_path / "val"))]
    store = tmp_path / "store"
    crashed = store / LISTING_DIR / "19990101T000000-deadbeef" / "list"  # what a killed run left
    crashed.mkdir(parents=True)
    (crashed / "train-00000.parquet").write_bytes(b"not parquet")

    stage = new_stage_id()
    listings = [stage_listing(str(store), stage, s) for s in sources]
    plan = plan_staged(open_encode(str(store), EncodeSettings(shard_size=4)), listings, stage)
    totals = EncodeStats()
    for i in range(plan.shards.count):
        totals.add(encode_staged_shard(str(store), plan.shards, i, plan.settings))
    report = commit_staged(plan, totals)
    assert not (store / LISTING_DIR).exists()  # this run's staging and the killed run's are gone
    assert (report.listed, report.encoded, report.per_dataset) == (13, 13, {"train": 9, "val": 4})
    assert report.listing.listed == 13

    local = run_encode(sources, str(tmp_path / "local"), EncodeSettings())
    got, want = EncodingsStore(str(store)).read(), EncodingsStore(str(tmp_path / "local")).read()
    assert got.sort_by("uri").equals(want.sort_by("uri"))
    assert local.listed == report.listed
    again = plan_staged(open_encode(str(store), EncodeSettings()), [
        stage_listing(str(store), "second", s) for s in sources], "second")
    assert (again.reused, again.shards.count) == (13, 0)


@pytest.mark.s3
@pytest.mark.usefixtures("s3_endpoint")
def test_a_listing_staged_on_s3_reads_back_and_is_cleared(tmp_path: Path, bucket: str) -> None:
    from dupflow.store.listing_stage import clear_listings

    dataset(tmp_path / "train", 5)
    source = DatasetSource("train", str(tmp_path / "train"))
    store = f"s3://{bucket}/store"
    staged = stage_listing(store, "run-1", source, rows_per_part=2)
    root = StoreRoot(store)
    assert read_listing(root, [staged]).equals(refs_table(list(list_dataset(source))))
    assert len(root.fs.find(root.path(LISTING_DIR))) == 3
    clear_listings(root)
    assert root.fs.find(root.path(LISTING_DIR)) == []


# -- the flow: what reaches its process ------------------------------------------------------------
class _Sizer(pickle.Pickler):
    """Pickles a value with each future in it as None: the flow holds a future, not its result."""

    def reducer_override(self, obj: Any) -> Any:
        from prefect.futures import PrefectFuture

        if isinstance(obj, PrefectFuture):
            return type(None), ()
        return NotImplemented


def _size(value: Any) -> int:
    import io

    buf = io.BytesIO()
    _Sizer(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return len(buf.getvalue())


def _traffic(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], int]:
    """Record, per task and argument (or its return value), the largest pickled size that passed between the
    flow process and a task: every call's arguments as submitted (mapped calls one by one) or called, and every
    result the flow takes from a future or a call."""
    from prefect.tasks import Task
    from prefect_dask.task_runners import DaskTaskRunner, PrefectDaskFuture

    largest: dict[tuple[str, str], int] = defaultdict(int)
    names: dict[Any, str] = {}

    def seen(task: str, what: str, value: Any) -> None:
        largest[task, what] = max(largest[task, what], _size(value))

    submit, result, call = DaskTaskRunner.submit, PrefectDaskFuture.result, Task.__call__

    def spy_submit(self: Any, task: Any, parameters: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        for key, value in parameters.items():
            seen(task.name, key, value)
        future = submit(self, task, parameters, *args, **kwargs)
        names[future.task_run_id] = task.name
        return future

    def spy_result(self: Any, *args: Any, **kwargs: Any) -> Any:
        value = result(self, *args, **kwargs)
        seen(names.get(self.task_run_id, "?"), "->", value)
        return value

    def spy_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        for i, value in enumerate(args):
            seen(self.name, f"arg{i}", value)
        for key, value in kwargs.items():
            seen(self.name, key, value)
        value = call(self, *args, **kwargs)
        seen(self.name, "->", value)
        return value

    monkeypatch.setattr(DaskTaskRunner, "submit", spy_submit)
    monkeypatch.setattr(PrefectDaskFuture, "result", spy_result)
    monkeypatch.setattr(Task, "__call__", spy_call)
    return largest


def _flow_traffic(tmp_path: Path, n: int, monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], int]:
    """Run the dedup flow over `n` files, half in a folder and half in a file list, and return its traffic."""
    from dupflow.flows.dedup import dedup

    _noise(tmp_path / "folder", n // 2, seed=n)
    listed = _noise(tmp_path / "pool", n - n // 2, seed=n + 1)
    file_list = _file_list(tmp_path / "lists" / "listed.txt", [str(p) for p in listed])
    config = validate_config({
        "datasets": [{"name": "folder", "url": str(tmp_path / "folder")}, {"name": "listed", "url": str(file_list)}],
        "store": str(tmp_path / "store"), "out": str(tmp_path / "out"), "cluster": {"workers": 2},
        "match": {"duplicates_root": str(tmp_path / "dups")}, "report": None,
    })
    with monkeypatch.context() as patched:
        traffic = _traffic(patched)
        result = dedup(config)
    assert result.encode.listed == result.encode.encoded == n
    assert not (tmp_path / "store" / LISTING_DIR).exists()
    return dict(traffic)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_what_reaches_the_flow_process_does_not_grow_with_the_listing(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    small = _flow_traffic(tmp_path / "small", 400, monkeypatch)
    large = _flow_traffic(tmp_path / "large", 1600, monkeypatch)
    for key, size in sorted(large.items()):
        assert size < 16_000, f"{key} passed {size:,} bytes between the flow and a task"
        before = small.get(key, 0)
        assert size <= before + 64, f"{key} grew from {before:,} to {size:,} bytes with 4x the files"
    assert set(small) == set(large)
    encode_tasks = {"list-dataset", "open-store", "plan-encode", "encode-shard", "commit-encodings"}
    assert encode_tasks <= {task for task, _ in large}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_folder_is_listed_by_several_tasks_and_each_file_encoded_once(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect_dask.task_runners import DaskTaskRunner

    from dupflow.flows.dedup import dedup
    from dupflow.io.listing import ListingPart

    folder = tmp_path / "folder"
    files = [*_noise(folder, 70, seed=5), *_noise(folder / "nested" / "deeper", 5, seed=6)]
    for i, picture in enumerate(_noise(tmp_path / "loose", 3, seed=7)):
        files.append(picture.rename(folder / f"top{i}.png"))  # files in the root itself
    parts: list[ListingPart] = []
    submit = DaskTaskRunner.submit

    def spy_submit(self: Any, task: Any, parameters: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if task.name == "list-dataset":
            parts.append(parameters["part"])
        return submit(self, task, parameters, *args, **kwargs)

    monkeypatch.setattr(DaskTaskRunner, "submit", spy_submit)
    config = validate_config({
        "datasets": [{"name": "folder", "url": str(folder)}], "store": str(tmp_path / "store"),
        "out": str(tmp_path / "out"), "cluster": {"workers": 2}, "encode": {"preset": "fast", "listing_tasks": 3},
        "match": {"duplicates_root": str(tmp_path / "dups")}, "report": None,
    })
    result = dedup(config)
    assert sorted(parts) == [ListingPart(k, 3) for k in range(3)]
    assert result.encode.listed == result.encode.encoded == len(files) == 78
    stored = EncodingsStore(str(tmp_path / "store")).read(["rel_path"])["rel_path"].to_pylist()
    assert sorted(stored) == sorted(str(p.relative_to(folder)) for p in files)
    assert not (tmp_path / "store" / LISTING_DIR).exists()
