"""A run's listing and its shards, staged as Parquet inside the store, so that a distributed run passes
their places and counts between its steps instead of the files themselves.

Layout under STORE (beside the commit record, on the store's own filesystem: local or any fsspec URL)::

    STORE/_dupflow/listing/STAGE/list/DATASET-00000.parquet    one dataset's listing, in parts (LISTING)
    STORE/_dupflow/listing/STAGE/shards/part-00000.parquet     the files to encode, sorted, SHARDS_PER_FILE
                                                               shards a file, one row group a shard

STAGE names one run (`new_stage_id`), so that a run never reads what a killed one left; the commit that
finishes a run removes the whole listing area (this run's and any killed run's: a run holds the store's
lease from listing to commit, so no other run is using it). Every file is written atomically, and its
name depends only on the run and its place, so a retried step rewrites the same files.
"""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dupflow.errors import ConfigError, StoreError
from dupflow.io.fs import atomic_write, is_local, storage_error, to_uri
from dupflow.io.listing import WHOLE, ImageRef, ListingPart, ListingStats, dataset_url, list_dataset
from dupflow.io.sources import DatasetSource
from dupflow.schemas import LISTING, parquet_bytes, read_meta
from dupflow.store.record import StoreRoot

__all__ = [
    "LISTING_DIR",
    "MAX_UNREADABLE_CARRIED",
    "ROWS_PER_PART",
    "SHARDS_PER_FILE",
    "StagedListing",
    "StagedShards",
    "clear_listings",
    "merged_stats",
    "new_stage_id",
    "read_listing",
    "read_shard",
    "refs_from_table",
    "refs_table",
    "stage_listing",
    "stage_shards",
]

LISTING_DIR = "_dupflow/listing"
ROWS_PER_PART = 200_000  # listed refs a listing holds in memory before it writes them out
SHARDS_PER_FILE = 64
MAX_UNREADABLE_CARRIED = 20  # folders that could not be listed, named one by one; the rest are counted
_STAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

log = logging.getLogger(__name__)


def new_stage_id() -> str:
    """A name for one run's staged files: its start time (so that a listing sorts by age) and a random part."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def _check_stage(stage: str) -> str:
    if not _STAGE_ID.match(stage):
        raise ConfigError(f"staging id {stage!r} is not a plain name (letters, digits, '_', '-', '.'): "
                          "use new_stage_id()")
    return stage


# -- refs as tables ---------------------------------------------------------------------------------
def refs_table(refs: Sequence[ImageRef]) -> pa.Table:
    """The key columns of listed refs (and where each sits in its dataset), typed like the encodings so keys
    compare equal (`LISTING`)."""
    return pa.table(
        {
            "uri": pa.array([r.uri for r in refs], pa.string()),
            "rel_path": pa.array([r.rel_path for r in refs], pa.string()),
            "size": pa.array([r.size for r in refs], pa.int64()),
            "mtime": pa.array([r.mtime_ns for r in refs], pa.timestamp("ns", tz="UTC")),
            "etag": pa.array([r.etag for r in refs], pa.string()),
            "dataset": pa.array([r.dataset for r in refs], pa.string()),
        },
        schema=LISTING,
    )


def refs_from_table(table: pa.Table) -> list[ImageRef]:
    """The refs a `refs_table` holds."""
    mtimes = pc.cast(table["mtime"], pa.int64()).to_pylist()
    cols = [table[c].to_pylist() for c in ("uri", "dataset", "rel_path", "size", "etag")]
    return [ImageRef(uri=u, dataset=d, rel_path=p, size=s or 0, mtime_ns=m, etag=e)
            for u, d, p, s, e, m in zip(*cols, mtimes, strict=True)]


# -- the listing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StagedListing:
    """One dataset's listing, or one `ListingPart` of it (`lister`), as staged in the store: where its
    files are, how many images it holds, the URL the store records for the dataset, and what listing
    skipped (naming at most `MAX_UNREADABLE_CARRIED` unreadable folders; `unreadable` counts them all).
    Small whatever the count."""

    dataset: str
    stage: str
    parts: int
    count: int
    url: str
    stats: ListingStats = field(default_factory=ListingStats)
    unreadable: int = 0
    lister: int = 0

    def paths(self) -> list[str]:
        """The staged files' paths inside the store."""
        return [_part_path(self.stage, self.dataset, self.lister, i) for i in range(self.parts)]


def _part_path(stage: str, dataset: str, lister: int, part: int) -> str:
    return f"{LISTING_DIR}/{stage}/list/{dataset}-{lister:04d}-{part:05d}.parquet"


def stage_listing(
    store_url: str, stage: str, source: DatasetSource, storage_options: dict[str, Any] | None = None,
    sniff: bool = False, *, part: ListingPart = WHOLE, rows_per_part: int = ROWS_PER_PART,
) -> StagedListing:
    """List one source, or one part of it (`list_dataset`), into the store's staging area, `rows_per_part`
    refs at a time, so that neither this process nor the caller ever holds the whole listing."""
    root, stage = StoreRoot(store_url, storage_options), _check_stage(stage)
    stats = ListingStats(unreadable_dirs=[])
    parts = count = 0
    lo: ImageRef | None = None
    hi: ImageRef | None = None  # the first and last URIs: their deepest common folder is all the files'
    chunk: list[ImageRef] = []

    def flush() -> None:
        nonlocal parts, count
        rel = _part_path(stage, source.name, part.k, parts)
        atomic_write(root.fs, root.path(rel), parquet_bytes(refs_table(chunk)))
        parts, count = parts + 1, count + len(chunk)
        chunk.clear()

    for ref in list_dataset(source, storage_options, stats, sniff=sniff, part=part):
        chunk.append(ref)
        lo = ref if lo is None or ref.uri < lo.uri else lo
        hi = ref if hi is None or ref.uri > hi.uri else hi
        if len(chunk) >= max(1, rows_per_part):
            flush()
    if chunk:
        flush()
    url = dataset_url(source, [r for r in (lo, hi) if r is not None], storage_options)
    unreadable = len(stats.unreadable_dirs or [])
    stats.unreadable_dirs = (stats.unreadable_dirs or [])[:MAX_UNREADABLE_CARRIED]
    return StagedListing(source.name, stage, parts, count, url, stats, unreadable, part.k)


def read_listing(root: StoreRoot, listings: Iterable[StagedListing]) -> pa.Table:
    """The staged listings as one table (`LISTING`)."""
    tables = [_read(root, path, "listing") for staged in listings for path in staged.paths()]
    return pa.concat_tables(tables) if tables else LISTING.empty_table()


def merged_stats(listings: Iterable[StagedListing]) -> ListingStats:
    """What listing skipped over all the staged listings; past `MAX_UNREADABLE_CARRIED` named folders, one
    line says how many more could not be listed."""
    listings = list(listings)
    total = ListingStats.merged(staged.stats for staged in listings)
    named = (total.unreadable_dirs or [])[:MAX_UNREADABLE_CARRIED]
    more = sum(staged.unreadable for staged in listings) - len(named)
    total.unreadable_dirs = [*named, f"... and {more:,} more"] if more > 0 else named
    return total


# -- the shards ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StagedShards:
    """The files a run encodes, staged in the store in shards of `size` files (the last may hold fewer):
    shard i is rows [i * size, (i + 1) * size) of the sorted files, in file i // per_file."""

    stage: str
    count: int
    size: int
    rows: int
    per_file: int = SHARDS_PER_FILE

    def path(self, index: int) -> str:
        """The path inside the store of the file holding shard `index`."""
        return f"{LISTING_DIR}/{self.stage}/shards/part-{index // self.per_file:05d}.parquet"

    def rows_of(self, index: int) -> int:
        """How many files shard `index` holds."""
        if not 0 <= index < self.count:
            raise IndexError(f"shard {index} of {self.count}")
        return min(self.size, self.rows - index * self.size)


def stage_shards(root: StoreRoot, stage: str, todo: pa.Table, size: int) -> StagedShards:
    """Write `todo` (sorted as the shards are to be) into the staging area in shards of `size` rows."""
    size = max(1, size)
    shards = StagedShards(_check_stage(stage), -(-todo.num_rows // size), size, todo.num_rows)
    todo = todo.cast(LISTING)
    span = size * shards.per_file
    for start in range(0, todo.num_rows, span):
        data = parquet_bytes(todo.slice(start, span), row_group_size=size)  # a row group a shard
        atomic_write(root.fs, root.path(shards.path(start // size)), data)
    return shards


def read_shard(root: StoreRoot, shards: StagedShards, index: int) -> list[ImageRef]:
    """The refs of shard `index`: only its row group(s) of the file that holds it are read."""
    n = shards.rows_of(index)
    start = (index % shards.per_file) * shards.size
    table = _read(root, shards.path(index), "shard", (start, start + n))
    if table.num_rows != n:
        raise StoreError(f"{to_uri(root.fs, root.path(shards.path(index)))} holds {table.num_rows} rows of shard "
                         f"{index}, not {n}: re-run (the staged files of a run are rewritten)")
    return refs_from_table(table)


def _read(root: StoreRoot, rel: str, what: str, rows: tuple[int, int] | None = None) -> pa.Table:
    """One staged file, whole or `rows` [start, stop) of it (reading only the row groups they lie in)."""
    path = root.path(rel)
    try:
        with root.fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            read_meta(pf.schema_arrow, "listing")
            if rows is None:
                return pf.read()
            groups, first, offset = [], None, 0
            for g in range(pf.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                if offset < rows[1] and offset + n > rows[0]:
                    groups.append(g)
                    first = offset if first is None else first
                offset += n
            table = pf.read_row_groups(groups) if groups else LISTING.empty_table()
            return table.slice(rows[0] - (first or 0), rows[1] - rows[0])
    except FileNotFoundError as exc:
        raise StoreError(f"the staged {what} {to_uri(root.fs, path)} is missing (removed by another run's commit?): "
                         "re-run") from exc
    except StoreError:
        raise
    except Exception as exc:
        raise storage_error(exc, to_uri(root.fs, path), f"read the staged {what}") from exc


def clear_listings(root: StoreRoot) -> None:
    """Remove the staged listings and shards of every run (call only while holding the store: after a
    commit). A failure leaves files that the next commit removes: it is logged, not raised."""
    path = root.path(LISTING_DIR)
    try:
        if is_local(root.fs):
            shutil.rmtree(path, ignore_errors=False)
        else:
            found = root.fs.find(path)
            if found:
                root.fs.rm(found)
    except FileNotFoundError:
        return
    except Exception as exc:  # noqa: BLE001 - leftovers are harmless (named per run) and removed next time
        log.warning("could not remove the staged listings in %s (the next run removes them): %s",
                    to_uri(root.fs, path), exc)
