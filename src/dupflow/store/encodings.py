"""The encodings store: Parquet partitioned by dataset, a commit record, staging, incremental reuse.

Layout under STORE (a local folder or any fsspec URL)::

    STORE/encodings/dataset=NAME/part-RUNID-00000.parquet   the encodings (hive partitioning)
    STORE/_dupflow/store.json                               the commit record (state, files, settings)
    STORE/_dupflow/staging/shard-KEY.parquet                shard outputs of an unfinished run

Part files hold up to ``ROWS_PER_FILE`` rows in row groups of ``ROW_GROUP_ROWS``, so that a match task
reads the local features of the pictures it verifies, not the whole column (`dupflow.store.column_rows`).
Read it with ``pyarrow.dataset.dataset("STORE/encodings", format="parquet", partitioning="hive")``
(or pandas, polars, DuckDB). Every file is written atomically; the commit record is written last and
says ``"state": "complete"``. While a run is under way, or after one was killed, it says
``"writing"`` and dupflow refuses to read the store until a re-run finishes it: shards staged by the
killed run are reused, not encoded again.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dupflow.encode.encoding import VERSIONS_META, encoder_versions
from dupflow.encode.hashing import ENCODERS, encodings_schema
from dupflow.encode.settings import EncodeSettings, settings_conflict
from dupflow.errors import ErrorKind, StoreError
from dupflow.io.fs import atomic_write, to_uri
from dupflow.schemas import parquet_bytes, read_meta
from dupflow.store.column_rows import ROW_GROUP_ROWS
from dupflow.store.record import ENCODINGS_DIR, RECORD_PATH, StoreRecord, StoreRoot, made_versions

__all__ = [
    "ENCODINGS_DIR",
    "LOCATION",
    "EncodingsStore",
    "StoreRecord",
    "conform_table",
    "dedupe",
    "made_versions",
    "row_keys",
    "sorted_by_uri",
    "stale_encoders",
    "take_rows",
]

STAGING_DIR = "_dupflow/staging"
ROWS_PER_FILE = 1_000_000
LARGE_BYTES = 2**31 - 1  # the most a binary column's values may hold for pyarrow to take rows from it in one piece
KEY_COLUMNS = ("uri", "size", "mtime", "etag")
_FILE, _ROW = pa.field("_file", pa.int32()), pa.field("_row", pa.int64())  # where a row lies (`read`)
LOCATION = (_FILE.name, _ROW.name)
_TRANSIENT = [k.value for k in ErrorKind if k.transient]


def stale_encoders(made: Mapping[str, int]) -> list[str]:
    """The encoders whose values were made by another version than this release's: not reusable."""
    return [e for e, version in made.items() if e in ENCODERS and version != ENCODERS[e].version]


def row_keys(table: pa.Table) -> pa.Array:
    """uri|size|mtime|etag as one string per row: equal keys mean the same unchanged file."""
    parts = [pc.fill_null(pc.cast(table[c], pa.string()), "") for c in KEY_COLUMNS]
    return pc.binary_join_element_wise(*parts, "\x00")


class EncodingsStore(StoreRoot):
    """Read, stage into and commit an encodings store at `url` (its paths and record: `StoreRoot`)."""

    # -- the record ----------------------------------------------------------------------------
    def complete_record(self) -> StoreRecord:
        """The record of a finished store; raises a StoreError saying how to finish it otherwise."""
        rec = self.record()
        if rec is None:
            raise StoreError(f"{self.url} is not an encodings store yet: run `dupflow encode --store {self.url} ...`")
        if rec.state != "complete":
            raise StoreError(
                f"the last run writing {self.url} (run {rec.run_id}) did not finish; re-run the same "
                "`dupflow encode` to finish it (work already done is reused)"
            )
        return rec

    def _write_record(self, rec: StoreRecord) -> None:
        rec.updated_at = datetime.now(UTC).isoformat()
        atomic_write(self.fs, self.path(RECORD_PATH), rec.to_json())

    # -- a run ---------------------------------------------------------------------------------
    def begin(self, settings: EncodeSettings) -> StoreRecord:
        """Mark the store as being written and return the record (encoders: the store's plus the requested)."""
        rec = self.record() or StoreRecord(settings=settings.value_settings())
        if rec.state == "writing" and _alive_here(rec.writer):
            raise StoreError(
                f"another dupflow run (pid {rec.writer['pid']} on this machine, started "
                f"{rec.writer.get('started_at')}) is writing {self.url}; wait for it to finish"
            )
        wanted = settings.value_settings()
        conflict = settings_conflict(rec.settings, wanted)
        if conflict:
            raise StoreError(f"{self.url} holds encodings made differently from this run's ({conflict})")
        rec.settings = {**rec.settings, **wanted}
        rec.encoders = [e for e in ENCODERS if e in set(rec.encoders) | set(settings.encoders)]
        rec.state, rec.run_id = "writing", uuid.uuid4().hex[:12]
        rec.writer = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": datetime.now(UTC).isoformat()}
        self._write_record(rec)
        return rec

    def cache_keys(self, encoders: list[str], datasets: list[str]) -> pa.Array:
        """Keys of rows (committed or staged) that can be reused: all encoders present, no transient error."""
        committed, staged = self._rows(encoders, datasets, list(KEY_COLUMNS))
        keys = [row_keys(_valid(t, encoders)) for t in committed + staged]
        return pa.chunked_array(keys, pa.string()).combine_chunks() if keys else pa.array([], pa.string())

    def stage(self, key: str, table: pa.Table) -> str:
        """Write one shard's rows to staging, atomically; returns the staged file's URI."""
        path = self.path(f"{STAGING_DIR}/shard-{key}.parquet")
        atomic_write(self.fs, path, parquet_bytes(table))
        return to_uri(self.fs, path)

    def commit(self, rec: StoreRecord, listed: pa.Table, dataset_urls: dict[str, str]) -> dict[str, int]:
        """Rewrite each listed dataset to exactly its listed files (reused or freshly staged rows).

        `listed` has the key columns and `dataset`; raises StoreError if any listed file has no row.
        A dataset with nothing new and nothing gone keeps its files. Returns rows dropped per
        dataset (files that disappeared since the last run).
        """
        datasets = sorted(set(listed["dataset"].to_pylist()))
        loaded, staged = self._rows(rec.encoders, datasets, None)
        committed = [_valid(t, rec.encoders) for t in loaded]  # staged rows are fresh: all kept, and first
        old_uris = {t["dataset"][0].as_py(): t["uri"] for t in loaded if t.num_rows}
        schema = encodings_schema(rec.encoders, rec.settings, staged=True)
        table = pa.concat_tables([conform_table(t, schema) for t in staged + committed] or [schema.empty_table()])
        table = dedupe(table.append_column("_key", row_keys(table)), "_key")
        keys = row_keys(listed)
        table = table.filter(pc.is_in(table["_key"], value_set=keys))
        if table.num_rows < listed.num_rows:
            raise StoreError(
                f"{listed.num_rows - table.num_rows} listed file(s) have no encodings (a shard failed); "
                "re-run the same command to encode them"
            )
        if "rel_path" in listed.column_names:  # where each file sits now (a file list's common folder can move)
            at = pc.index_in(table["_key"], value_set=keys)
            table = table.set_column(table.schema.get_field_index("rel_path"), "rel_path",
                                     listed["rel_path"].take(at))
        fresh = {n for t in staged for n in t["dataset"].unique().to_pylist() if t.num_rows}
        dropped: dict[str, int] = {}
        for name in datasets:
            part = table.filter(pc.equal(table["dataset"], name)).drop_columns(["dataset", "_key"])
            before = int(rec.datasets.get(name, {}).get("rows", 0))
            old = old_uris.get(name, pa.chunked_array([], pa.string()))
            dropped[name] = int(pc.sum(pc.invert(pc.is_in(old, value_set=part["uri"]))).as_py() or 0)
            moved = name in dataset_urls and dataset_urls[name] != rec.datasets.get(name, {}).get("url", "")
            unchanged = name not in fresh and dropped[name] == 0 and before == part.num_rows and not moved
            if unchanged and rec.datasets.get(name, {}).get("encoders") == rec.encoders and not _stale(rec, name):
                continue
            self._write_dataset(rec, name, sorted_by_uri(part), dataset_urls.get(name, ""), origin={})
        self.finish(rec)
        return dropped

    def write_tables(
        self, rec: StoreRecord, tables: dict[str, pa.Table], urls: dict[str, str],
        versions: Mapping[str, dict[str, int]] | None = None,
    ) -> None:
        """Replace whole datasets with the given tables (used by merge and import), then finish.
        `versions`: per dataset, the encoder versions its rows were made with (default: this release's)."""
        schema = encodings_schema(rec.encoders, rec.settings)
        for name, t in tables.items():
            self._write_dataset(rec, name, sorted_by_uri(conform_table(t, schema)), urls.get(name, ""),
                                versions=(versions or {}).get(name))
        self.finish(rec)

    def finish(self, rec: StoreRecord) -> None:
        """Mark the record complete, then remove files no record refers to and the staging area."""
        on_disk = self._part_files()
        rec.state = "complete"
        self._write_record(rec)
        live = {f for d in rec.datasets.values() for f in d["files"]}
        for rel in on_disk - live:
            self.fs.rm_file(self.path(rel))
        for path in self._staged_files(complete_only=False):
            self.fs.rm_file(path)

    # -- reading -------------------------------------------------------------------------------
    def read(self, columns: list[str] | None = None, datasets: list[str] | None = None, *,
             located: bool = False, record: StoreRecord | None = None) -> pa.Table:
        """The committed encodings as one table with a `dataset` column (complete stores only). With
        `located`, also where each row lies: `_file` (its file in `files(datasets)`) and `_row` (its row
        there), for reading another column a few rows at a time (`dupflow.store.column_rows`). `record`:
        the complete record to read (read now if not given)."""
        rec = record or self.complete_record()
        names = self._names(rec, datasets)
        schema = encodings_schema(rec.encoders, rec.settings, staged=True)
        cols = columns or schema.names
        tables, first = [], 0
        for n in names:
            tables.append(self._read_dataset(rec, n, cols, first_file=first if located else None))
            first += len(rec.datasets[n]["files"])
        if tables:
            return pa.concat_tables(tables)
        empty = schema.empty_table().select(cols)
        return conform_table(empty, pa.schema([*empty.schema, _FILE, _ROW])) if located else empty

    def files(self, datasets: list[str] | None = None, record: StoreRecord | None = None) -> list[str]:
        """The part files `read(..., datasets, located=True, record=record)` reads, in its order (paths in
        `self.fs`)."""
        rec = record or self.complete_record()
        return [self.path(rel) for n in self._names(rec, datasets) for rel in rec.datasets[n]["files"]]

    @staticmethod
    def _names(rec: StoreRecord, datasets: list[str] | None) -> list[str]:
        return [n for n in sorted(rec.datasets) if datasets is None or n in datasets]

    # -- internals -----------------------------------------------------------------------------
    def _read_dataset(
        self, rec: StoreRecord, name: str, columns: list[str] | None, *, reusable: bool = False,
        first_file: int | None = None,
    ) -> pa.Table:
        """One committed dataset; encoder columns its files lack (added later) come back null, and with
        `reusable` so do those another version of their encoder made (they are re-encoded). With
        `first_file`, each row's `_file` (counted from it) and `_row` are added."""
        info = rec.datasets[name]
        stale = _stale(rec, name) if reusable else []
        made = [e for e in info.get("encoders", rec.encoders) if e not in stale]
        schema = encodings_schema(made, rec.settings, staged=True)
        full = encodings_schema(rec.encoders, rec.settings, staged=True)
        wanted = [c for c in (columns or full.names) if c != "dataset"]
        present = [c for c in wanted if c in schema.names]
        tables = []
        for i, rel in enumerate(info["files"]):
            try:
                t = pq.read_table(self.path(rel), filesystem=self.fs, columns=present)
            except FileNotFoundError as exc:
                raise StoreError(f"{self.url}: {rel} is listed in the store record but missing") from exc
            if first_file is not None:
                t = t.append_column(_FILE, pa.array(np.full(t.num_rows, first_file + i, np.int32)))
                t = t.append_column(_ROW, pa.array(np.arange(t.num_rows, dtype=np.int64)))
            tables.append(t)
        t = pa.concat_tables(tables) if tables else schema.empty_table().select(present)
        t = t.append_column("dataset", pa.array([name] * t.num_rows, pa.string()))
        out = [c for c in (columns or full.names) if c in full.names]
        fields = [full.field(c) for c in out]
        if first_file is not None:
            fields += [_FILE, _ROW]
        return conform_table(t, pa.schema(fields))

    def _rows(
        self, encoders: list[str], datasets: list[str], columns: list[str] | None
    ) -> tuple[list[pa.Table], list[pa.Table]]:
        """Committed and staged rows of these datasets, values of other encoder versions than this
        release's left out (null); callers decide which rows are reusable."""
        rec = self.record()
        cols = None if columns is None else list(dict.fromkeys([*columns, "error", "exact", *encoders, "dataset"]))
        committed = [
            self._read_dataset(rec, name, cols, reusable=True)
            for name in datasets
            if rec is not None and name in rec.datasets
        ]
        staged = []
        values = rec.settings if rec else {}
        for path in self._staged_files():
            t = pq.read_table(path, filesystem=self.fs)
            made = read_meta(t.schema, "encodings")
            keys = ("hash_size", "cnn_id") if "cnn" in t.schema.names else ("hash_size",)
            if any(made.get(k) != str(values.get(k)) for k in keys):
                continue  # staged under other settings: not reusable
            present = [e for e in encoders if e in t.schema.names]
            if stale_encoders(made_versions(json.loads(made.get(VERSIONS_META, "{}")), present)):
                continue  # staged by a release with other encoder versions: re-encoded
            t = t.filter(pc.is_in(t["dataset"], value_set=pa.array(datasets, pa.string())))
            schema = encodings_schema(encoders, values, staged=True)
            staged.append(conform_table(t, schema) if cols is None else conform_table(t, schema).select(cols))
        return committed, staged

    def _staged_files(self, complete_only: bool = True) -> list[str]:
        """Staged shard files; with `complete_only=False`, also temporaries a killed write left."""
        try:
            found = self.fs.find(self.path(STAGING_DIR))
        except FileNotFoundError:
            return []
        return sorted(p for p in found if not complete_only or p.rsplit("/", 1)[-1].startswith("shard-"))

    def _part_files(self) -> set[str]:
        try:
            found = self.fs.find(self.path(ENCODINGS_DIR))
        except FileNotFoundError:
            return set()
        rels = (p[len(self.root) + 1 :] for p in found)
        ours = ("part-", ".tmp-")  # our part files, and temporaries of a write that was killed
        return {r for r in rels if r.rsplit("/", 1)[-1].startswith(ours) and r.endswith(".parquet")}

    def _write_dataset(
        self, rec: StoreRecord, name: str, table: pa.Table, url: str, origin: dict[str, str] | None = None,
        versions: dict[str, int] | None = None,
    ) -> None:
        """Write one dataset's files; `origin` names encoders whose values came from elsewhere, `versions`
        the encoder versions the rows were made with (default: this release's)."""
        previous = rec.datasets.get(name, {})
        files = []
        for i, start in enumerate(range(0, max(table.num_rows, 1), ROWS_PER_FILE)):
            rel = f"{ENCODINGS_DIR}/dataset={name}/part-{rec.run_id}-{i:05d}.parquet"
            data = parquet_bytes(table.slice(start, ROWS_PER_FILE), row_group_size=ROW_GROUP_ROWS)
            atomic_write(self.fs, self.path(rel), data)
            files.append(rel)
        rec.datasets[name] = {
            "url": url or previous.get("url", ""),
            "files": files,
            "rows": table.num_rows,
            "errors": int(pc.sum(pc.is_valid(table["error"])).as_py() or 0),
            "encoders": list(rec.encoders),
            "encoder_versions": encoder_versions(rec.encoders) if versions is None else dict(versions),
            "origin": previous.get("origin", {}) if origin is None else origin,
        }


def _alive_here(writer: dict[str, Any]) -> bool:
    """Whether the recorded writer is a live process on this machine (not this one)."""
    pid = writer.get("pid")
    if writer.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(rec: StoreRecord, name: str) -> list[str]:
    """The encoders of dataset `name` whose rows another version of the encoder made."""
    return stale_encoders(rec.dataset_versions(name))


def _valid(table: pa.Table, encoders: list[str]) -> pa.Table:
    """Rows whose encodings are all present, or whose error is not worth retrying."""
    ok = pc.and_(pc.is_null(table["error"]), pc.is_valid(table["exact"]))  # imported rows lack `exact`
    for e in encoders:
        ok = pc.and_(ok, pc.is_valid(table[e]))
    retry = pc.is_in(table["error"], value_set=pa.array(_TRANSIENT))
    permanent = pc.and_(pc.is_valid(table["error"]), pc.invert(retry))
    return table.filter(pc.or_(ok, permanent))


def conform_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast to `schema`, adding missing columns as nulls."""
    cols = [
        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in schema
    ]
    return pa.Table.from_arrays(cols, schema=schema)


def dedupe(table: pa.Table, key: str, keep: str = "first") -> pa.Table:
    """One row per `key`: the first or the last occurrence, in table order."""
    if table.num_rows == 0:
        return table
    agg = "min" if keep == "first" else "max"
    idx = table.append_column("_i", pa.array(range(table.num_rows), pa.int64()))
    chosen = idx.group_by(key, use_threads=False).aggregate([("_i", agg)])[f"_i_{agg}"]
    return take_rows(table, pc.sort_indices(chosen))


def sorted_by_uri(table: pa.Table) -> pa.Table:
    """The rows in `uri` order (stable)."""
    return take_rows(table, pc.sort_indices(table["uri"]))


def take_rows(table: pa.Table, indices: pa.Array | pa.ChunkedArray) -> pa.Table:
    """`table.take(indices)`, also where a binary column holds more than 2 GB (the local features of
    ~230,000 images), which pyarrow cannot take in one piece: such a table is taken with its binary
    columns as large_binary, then cut back into binary chunks of ROW_GROUP_ROWS rows."""
    binary = [f.name for f in table.schema if pa.types.is_binary(f.type)]
    if max((table[c].nbytes for c in binary), default=0) < LARGE_BYTES:
        return table.take(indices)
    wide = pa.schema([f.with_type(pa.large_binary()) if f.name in binary else f for f in table.schema],
                     metadata=table.schema.metadata)
    taken = table.cast(wide).take(indices)
    parts = []
    for start in range(0, taken.num_rows, ROW_GROUP_ROWS):
        piece = taken.slice(start, ROW_GROUP_ROWS)  # a slice still spans the whole buffer: copied before the cast
        parts.append(pa.Table.from_arrays(
            [pa.concat_arrays(piece[f.name].chunks).cast(f.type) if f.name in binary else piece[f.name]
             for f in table.schema], schema=table.schema))
    return pa.concat_tables(parts) if parts else table.schema.empty_table()
