"""A user's per-image scores (a model's confidence, a label-quality score...) joined onto the report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dupflow.errors import ConfigError
from dupflow.io.fs import open_fs, storage_error
from dupflow.io.uris import redact

__all__ = ["ExtraScores", "read_extra_scores"]

_KEYS = ("uri", "rel_path")


class ExtraScores:
    """Score columns aligned to the report's images, and how the file's rows joined."""

    def __init__(self, source: str, columns: dict[str, list[Any]], matched: int, unmatched: int) -> None:
        self.source = source
        self.columns = columns
        self.matched = matched  # report images that found a row
        self.unmatched = unmatched  # rows that name no image of the report

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "columns": list(self.columns), "matched": self.matched,
                "rows_without_image": self.unmatched}


def read_extra_scores(url: str, wanted: Sequence[str], uris: pa.Array, rel_paths: pa.Array, datasets: pa.Array,
                      storage_options: dict[str, Any] | None = None) -> ExtraScores:
    """Read a Parquet or CSV file keyed by `uri` (or by `rel_path`, with `dataset` where names repeat
    across datasets) and align `wanted` columns (default: every other column) to the report's images."""
    table = _read(url, storage_options)
    key = next((k for k in _KEYS if k in table.column_names), None)
    if key is None:
        raise ConfigError(f"{redact(url)} has no `uri` or `rel_path` column to join on; it has: "
                          f"{', '.join(table.column_names)}")
    by_dataset = key == "rel_path" and "dataset" in table.column_names
    skip = {key, "dataset"} if by_dataset else {key}
    columns = list(wanted) or [c for c in table.column_names if c not in skip]
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ConfigError(f"{redact(url)} has no column {', '.join(missing)}; it has: {', '.join(table.column_names)}")
    for name in columns:
        kind = table.schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_string(kind)
                or pa.types.is_boolean(kind) or pa.types.is_large_string(kind)):
            raise ConfigError(f"score column {name!r} of {redact(url)} is {kind}: use numbers, text or booleans")
    keys = _joined(table[key], table["dataset"] if by_dataset else None)
    counts = pc.value_counts(keys)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        name = repeated[0]["values"].as_py().replace("\x00", "/")
        raise ConfigError(f"{redact(url)} names {name!r} more than once: keep one row per image")
    if key == "rel_path" and not by_dataset and pc.count_distinct(rel_paths).as_py() != len(rel_paths):
        raise ConfigError(f"{redact(url)} is keyed by rel_path, but the same rel_path is in several datasets: "
                          "add a `dataset` column or key it by uri")
    ours = _joined(rel_paths, datasets) if by_dataset else (uris if key == "uri" else rel_paths)
    at = pc.index_in(ours, value_set=keys)
    found = pc.is_valid(at)
    matched = int(pc.sum(found).as_py() or 0)
    out = {name: [_clean(v) for v in table[name].take(at).to_pylist()] for name in columns}
    rows_used = pc.count_distinct(at.filter(found)).as_py() if matched else 0
    return ExtraScores(redact(url), out, matched, len(keys) - int(rows_used))


def _read(url: str, storage_options: dict[str, Any] | None) -> pa.Table:
    fs, path = open_fs(url, storage_options)
    try:
        if path.lower().endswith((".csv", ".csv.gz", ".tsv")):
            with fs.open(path, "rb", compression="infer") as fh:
                delimiter = "\t" if path.lower().endswith(".tsv") else ","
                return pacsv.read_csv(fh, parse_options=pacsv.ParseOptions(delimiter=delimiter))
        return pq.read_table(path, filesystem=fs)
    except FileNotFoundError as exc:
        raise ConfigError(f"score file {redact(url)} does not exist") from exc
    except (pa.ArrowInvalid, ValueError) as exc:
        raise ConfigError(f"{redact(url)} is not a readable Parquet or CSV file: {exc}") from exc
    except OSError as exc:
        raise storage_error(exc, redact(url), "read") from exc


def _joined(names: pa.Array | pa.ChunkedArray, datasets: pa.Array | pa.ChunkedArray | None) -> pa.Array:
    text = pc.cast(names, pa.string())
    if datasets is not None:
        text = pc.binary_join_element_wise(pc.cast(datasets, pa.string()), text, "\x00")
    return text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value
