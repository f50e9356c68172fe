"""What a report is made of: a match run's outputs, and the store's facts about each image."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dupflow.errors import ConfigError, StoreError
from dupflow.io.fs import join, open_fs, storage_error
from dupflow.schemas import GROUPS, MANIFEST, PAIRS, SCORES, read_meta
from dupflow.store.encodings import EncodingsStore

__all__ = ["MatchOutputs", "StoreFacts", "read_match_outputs", "read_output_table", "read_store_facts", "read_summary"]

_FACTS = ["uri", "width", "height", "size", "format", "mtime", "error_message"]


@dataclass(frozen=True)
class MatchOutputs:
    """summary.json and the pairs, groups and scores tables of one `dupflow match` run."""

    url: str
    summary: dict[str, Any]
    pairs: pa.Table
    groups: pa.Table
    scores: pa.Table


@dataclass(frozen=True)
class StoreFacts:
    """Per image of `scores` (same order): dimensions, size, format, mtime and error message; and
    vectors to project in 2-D (the cnn embeddings, else pHash bits) with their row numbers. The
    vectors stay an Arrow column: only the few thousand rows that get projected become a matrix."""

    table: pa.Table
    vectors: pa.Array | None
    vector_rows: np.ndarray
    vector_source: str | None
    hash_size: int

    def matrix(self, picked: np.ndarray) -> np.ndarray:
        """The vectors at positions `picked` (of `vector_rows`) as float rows: embeddings, or one 0/1 per bit."""
        assert self.vectors is not None
        assert self.vector_source is not None
        return _as_matrix(self.vectors.take(pa.array(picked, pa.int64())), self.vector_source)


def read_match_outputs(url: str, storage_options: dict[str, Any] | None = None) -> MatchOutputs:
    """Read a finished match run's outputs from `url`; a folder without them names the command that writes them."""
    summary = read_summary(url, storage_options)
    tables = [read_output_table(url, name, storage_options) for name in ("pairs", "groups", "scores")]
    return MatchOutputs(url, summary, *tables)


def read_summary(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json of the finished match run in `url` (written last: without it the run did not finish)."""
    fs, root = open_fs(url, storage_options)
    try:
        summary: dict[str, Any] = json.loads(fs.cat_file(join(root, "summary.json")))
    except FileNotFoundError as exc:
        raise ConfigError(f"{url} holds no finished match run (no summary.json): run `dupflow match --store STORE "
                          f"--out {url}` first") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise storage_error(exc, join(url, "summary.json"), "read") from exc
    return summary


_OUTPUT_SCHEMAS = {"pairs": PAIRS, "groups": GROUPS, "scores": SCORES, "manifest": MANIFEST}


def read_output_table(url: str, name: str, storage_options: dict[str, Any] | None = None) -> pa.Table:
    """One table (pairs, groups, scores or manifest) of the match run in `url`, in its schema's columns."""
    schema = _OUTPUT_SCHEMAS[name]
    fs, root = open_fs(url, storage_options)
    try:
        table = pq.read_table(join(root, f"{name}.parquet"), filesystem=fs)
    except FileNotFoundError as exc:
        raise StoreError(f"{url} has summary.json but no {name}.parquet: run the match again") from exc
    except OSError as exc:
        raise storage_error(exc, join(url, f"{name}.parquet"), "read") from exc
    read_meta(table.schema, name)
    return table.select(schema.names)


def read_store_facts(store_url: str, scores: pa.Table, storage_options: dict[str, Any] | None = None
                     ) -> StoreFacts:
    """The store's facts for every scored image; images the store no longer has get nulls."""
    store = EncodingsStore(store_url, storage_options)
    rec = store.complete_record()
    vector = "cnn" if "cnn" in rec.encoders else ("phash" if "phash" in rec.encoders else None)
    datasets = sorted(set(scores["dataset"].to_pylist()) & set(rec.datasets))
    table = store.read([*_FACTS, *([vector] if vector else [])], datasets)
    at = pc.index_in(scores["uri"], value_set=table["uri"].combine_chunks())
    facts = table.select(_FACTS).take(at)
    vectors, rows = None, np.zeros(0, np.int64)
    if vector is not None:
        column = table[vector].take(at)
        rows = np.flatnonzero(pc.is_valid(column).to_numpy(zero_copy_only=False))
        vectors = column.take(pa.array(rows, pa.int64())).combine_chunks()
    return StoreFacts(facts, vectors, rows, vector, int(rec.settings.get("hash_size", 8)))


def _as_matrix(column: pa.Array, kind: str) -> np.ndarray:
    """Embeddings as float32 rows, or hashes unpacked to one 0/1 column per bit."""
    if kind == "cnn":
        values: np.ndarray = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        return values.reshape(len(column), column.type.list_size)
    if pa.types.is_integer(column.type):
        words = column.to_numpy(zero_copy_only=False).astype(">u8")
        raw = words.view(np.uint8).reshape(len(column), 8)
    else:
        raw = np.frombuffer(b"".join(column.to_pylist()), np.uint8).reshape(len(column), -1)
    bits: np.ndarray = np.unpackbits(raw, axis=1).astype(np.float32)
    return bits
