"""Combine encodings: merge stores (the `--encodings_in a b --encodings out` habit) and import
imagededup's JSON encodings files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from dupflow.encode.hashing import ENCODERS, encodings_schema
from dupflow.encode.settings import EncodeSettings, settings_conflict
from dupflow.errors import ConfigError, StoreError
from dupflow.io.fs import join, open_fs, read_json
from dupflow.io.sources import DatasetSource
from dupflow.store.encodings import EncodingsStore, StoreRecord, conform_table, dedupe

__all__ = ["IMAGEDEDUP_METHODS", "import_imagededup", "merge_stores"]

# imagededup's hashing classes -> dupflow columns. Its algorithms differ from imagehash's in small
# ways (median taken without the DC term, >= vs >), so imported values are recorded with their origin.
IMAGEDEDUP_METHODS = {"phash": "phash", "dhash": "dhash", "ahash": "ahash", "whash": "whash"}


def merge_stores(inputs: Sequence[str], out: str, storage_options: dict[str, Any] | None = None) -> dict[str, int]:
    """Merge complete stores into `out` (kept as the first input if it exists); later inputs win
    for a uri present in several. Returns rows per merged dataset."""
    out_store = EncodingsStore(out, storage_options)
    sources = ([out_store] if out_store.record() is not None else []) + [
        EncodingsStore(u, storage_options) for u in inputs
    ]
    records = [s.complete_record() for s in sources]
    values: dict[str, Any] = {}
    for r in records:
        conflict = settings_conflict(values, r.settings)
        if conflict:
            raise StoreError(f"cannot merge stores whose encodings were made differently ({conflict})")
        values.update(r.settings)
    versions = _merged_versions(sources, records)
    encoders = [e for e in ENCODERS if any(e in r.encoders for r in records)]
    rec = out_store.begin(EncodeSettings(encoders=tuple(e for e in encoders if e != "cnn"),
                                         hash_size=values["hash_size"]))
    rec.encoders, rec.settings = encoders, {**rec.settings, **values}
    merged: dict[str, list[pa.Table]] = {}
    urls: dict[str, str] = {}
    for store, src_rec in zip(sources, records, strict=True):
        for name, info in src_rec.datasets.items():
            merged.setdefault(name, []).append(store.read(datasets=[name]).drop_columns(["dataset"]))
            urls[name] = info.get("url", "")
            rec.datasets.setdefault(name, {}).setdefault("origin", {}).update(info.get("origin", {}))
    schema = encodings_schema(rec.encoders, rec.settings)
    tables = {
        name: dedupe(pa.concat_tables([conform_table(p, schema) for p in parts]), "uri", keep="last")
        for name, parts in merged.items()
    }
    out_store.write_tables(rec, tables, urls, versions)
    return {name: t.num_rows for name, t in tables.items()}


def _merged_versions(stores: Sequence[EncodingsStore], records: Sequence[StoreRecord]) -> dict[str, dict[str, int]]:
    """Per merged dataset, the encoder versions of its rows; a StoreError when two stores' rows of one
    dataset were made by different versions of an encoder (the dataset would mix incomparable values)."""
    found: dict[str, dict[str, tuple[int, str]]] = {}  # dataset -> encoder -> (version, first store with it)
    for store, rec in zip(stores, records, strict=True):
        for name in rec.datasets:
            for encoder, version in rec.dataset_versions(name).items():
                have, where = found.setdefault(name, {}).setdefault(encoder, (version, store.url))
                if have != version:
                    raise StoreError(
                        f"cannot merge dataset {name}: its {encoder} values are from encoder version {have} in "
                        f"{where} but {version} in {store.url}; re-run `dupflow encode --store URL ...` on both "
                        "with this release (it re-encodes rows made by other versions), then merge"
                    )
    return {name: {e: v for e, (v, _) in encoders.items()} for name, encoders in found.items()}


def import_imagededup(
    json_path: str,
    method: str,
    dataset: DatasetSource,
    store_url: str,
    storage_options: dict[str, Any] | None = None,
) -> int:
    """Import an imagededup `encode_images(..., outfile=)` JSON ({file: hex hash}) as a dataset.

    `dataset.url` is the image folder the file names are relative to; files found there get their
    size and modification time so a later `dupflow encode` can tell whether they changed.
    """
    if method not in IMAGEDEDUP_METHODS:
        raise ConfigError(f"--method must be one of {', '.join(IMAGEDEDUP_METHODS)} (imagededup's hash methods)")
    path = json_path if os.path.exists(json_path) or json_path.endswith(".json") else f"{json_path}.json"
    mapping = read_json(path, storage_options, "encodings file")
    if not isinstance(mapping, dict):
        raise ConfigError(f"{path} is not an imagededup encodings file ({{file name: hash}})")
    fs, root = open_fs(dataset.url, storage_options)
    rows: dict[str, list[Any]] = {k: [] for k in ("uri", "rel_path", "size", "mtime", method)}
    for name, value in sorted(mapping.items()):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: {name!r} has no hex hash (CNN encodings are imported in the embeddings step)")
        full = join(root, name)
        try:
            info = fs.info(full)
            size, mtime = int(info["size"]), int(float(info["mtime"]) * 1e6) * 1000 if "mtime" in info else None
        except (FileNotFoundError, KeyError):
            size, mtime = None, None
        rows["uri"].append(full if "://" in dataset.url or os.path.isabs(full) else os.path.abspath(full))
        rows["rel_path"].append(name)
        rows["size"].append(size)
        rows["mtime"].append(mtime)
        rows[method].append(int(value, 16))
    table = pa.table(
        {
            "uri": pa.array(rows["uri"], pa.string()),
            "rel_path": pa.array(rows["rel_path"], pa.string()),
            "size": pa.array(rows["size"], pa.int64()),
            "mtime": pa.array(rows["mtime"], pa.timestamp("ns", tz="UTC")),
            method: pa.array(rows[method], pa.uint64()),
        }
    )
    store = EncodingsStore(store_url, storage_options)
    rec = store.begin(EncodeSettings(encoders=(method,)))
    rec.datasets.setdefault(dataset.name, {}).setdefault("origin", {})[method] = "imagededup"
    store.write_tables(rec, {dataset.name: table}, {dataset.name: dataset.url})
    return int(table.num_rows)
