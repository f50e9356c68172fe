"""Embeddings for cosine rules: the store's `cnn` column, or the user's own Parquet joined on `uri`.

A user's file has a `uri` column (as dupflow lists files: an absolute local path or
proto://bucket/key, the encodings' `uri`) and a list column of floats named by `embed_col_name`.
Every row must have the same number of dimensions and finite, non-zero values; each uri may appear
once. Images being matched that have no row are refused unless allowed, then reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from dupflow.errors import ConfigError
from dupflow.io.fs import open_fs, storage_error

__all__ = ["COMPACT_DTYPE", "STORE_COLUMN", "Embeddings", "embeddings_from_file", "embeddings_from_store",
           "read_embeddings_file"]

STORE_COLUMN = "cnn"
_EXAMPLES = 10
# The search holds unit vectors as compactly as their source: float16 where the values are float16 (the store's
# cnn column: 2 bytes a dimension, half of float32), float32 otherwise (a user's float32 or float64 file keeps
# its cosines unchanged). Cosines are computed in float32 either way (`dupflow.index.cosine`).
COMPACT_DTYPE = np.float16
_NORMALISE_ROWS = 65_536


@dataclass(frozen=True)
class Embeddings:
    """Unit-length vectors for the images being matched, row for row."""

    vectors: np.ndarray  # (N, d) float16 or float32 (see COMPACT_DTYPE); zero rows where `present` is False
    present: np.ndarray  # (N,) bool
    source: str  # "store:cnn" or the user's file and column
    unknown: int = 0  # rows of the user's file naming no image being matched
    missing_examples: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def missing(self) -> int:
        return int(len(self.present) - self.present.sum())

    def describe(self) -> dict[str, Any]:
        """What summary.json says about the embeddings used."""
        return {"source": self.source, "dimensions": self.dim, "images": int(self.present.sum()),
                "missing": self.missing, "missing_examples": self.missing_examples, "unknown_uris": self.unknown}


def _as_matrix(column: pa.ChunkedArray | pa.Array, uris: pa.Array, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, d) unit rows (float16 for float16 values, else float32) and the validity mask of a list-of-floats
    column; refuses bad rows by uri. Rows are normalised in float32, _NORMALISE_ROWS at a time, so a float16
    column is never copied whole as float32."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = arr.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)) or not (
        pa.types.is_floating(kind.value_type)
    ):
        raise ConfigError(f"{what} must be a list of floats per row (e.g. fixed_size_list<float>[512]), not {kind}")
    present = arr.is_valid().to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
    dims = np.unique(lengths[present])
    if len(dims) > 1:
        first = int(np.flatnonzero(present & (lengths != dims[0]))[0])
        raise ConfigError(f"{what}: rows have {', '.join(map(str, dims))} dimensions; every row needs the same "
                          f"(e.g. {uris[first].as_py()} has {lengths[first]}, others {dims[0]})")
    dim = int(dims[0]) if len(dims) else 0
    if present.any() and dim == 0:
        raise ConfigError(f"{what}: the embeddings are empty lists")
    flat = pc.list_flatten(arr.filter(pa.array(present)))
    if flat.null_count:
        raise ConfigError(f"{what}: some embeddings contain null values")
    values = flat.to_numpy(zero_copy_only=False).reshape(-1, max(dim, 1))
    rows = np.flatnonzero(present)
    held = COMPACT_DTYPE if pa.types.is_float16(kind.value_type) else np.float32
    vectors = np.zeros((len(arr), max(dim, 1)), held)
    bad = np.zeros(len(arr), bool)
    for start in range(0, len(rows), _NORMALISE_ROWS):
        part = values[start:start + _NORMALISE_ROWS].astype(np.float32)
        norms = np.linalg.norm(part, axis=1)
        at = rows[start:start + _NORMALISE_ROWS]
        bad[at] = ~np.isfinite(part).all(axis=1) | (norms == 0) | ~np.isfinite(norms)
        with np.errstate(divide="ignore", invalid="ignore"):
            vectors[at] = part / norms[:, None]
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"{what}: {int(bad.sum())} embedding(s) contain NaN or infinite values or are all zero, "
                          f"e.g. {uris[first].as_py()}; fix or drop those rows")
    return vectors, present


def embeddings_from_store(table: pa.Table) -> Embeddings:
    """The `cnn` column of the encodings being matched (null for files imported without it)."""
    vectors, present = _as_matrix(table[STORE_COLUMN], table["uri"].combine_chunks(), "the store's cnn embeddings")
    missing = table["uri"].filter(pa.array(~present)).to_pylist()[:_EXAMPLES]
    return Embeddings(vectors, present, f"store:{STORE_COLUMN}", 0, missing)


def read_embeddings_file(url: str, column: str, storage_options: dict[str, Any] | None = None) -> pa.Table:
    """`uri` and `column` of a Parquet file or folder of Parquet files, local or remote."""
    fs, path = open_fs(url, storage_options)
    try:
        dataset = ds.dataset(path, filesystem=fs, format="parquet")
    except FileNotFoundError:
        raise ConfigError(f"embeddings file {url} does not exist") from None
    except (OSError, pa.ArrowInvalid) as exc:
        if isinstance(exc, pa.ArrowInvalid):
            raise ConfigError(f"{url} is not a Parquet file of embeddings: {exc}") from None
        raise storage_error(exc, url, "read") from exc
    names = dataset.schema.names
    absent = [c for c in ("uri", column) if c not in names]
    if absent:
        raise ConfigError(f"{url} has no column {', '.join(absent)} (it has: {', '.join(names)}); the file needs "
                          "`uri` (as in the encodings) and the embedding column named by --embed-col-name")
    try:
        return dataset.to_table(columns=["uri", column])
    except (OSError, pa.ArrowInvalid) as exc:
        raise ConfigError(f"cannot read embeddings from {url}: {exc}") from None


def embeddings_from_file(uris: pa.Array, table: pa.Table, column: str, source: str,
                         allow_missing: bool = False) -> Embeddings:
    """The user's embeddings joined onto `uris` (the images being matched, in order)."""
    what = f"embeddings column {column!r} of {source}"
    file_uris = table["uri"].combine_chunks()
    if file_uris.null_count:
        raise ConfigError(f"{source}: some rows have no uri")
    counts = pc.value_counts(file_uris)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    if len(repeated):
        raise ConfigError(f"{source}: {len(repeated)} uri(s) appear more than once, e.g. {repeated[0].as_py()}")
    vectors, present = _as_matrix(table[column], file_uris, what)
    at = pc.index_in(uris, value_set=file_uris)
    found = at.is_valid().to_numpy(zero_copy_only=False)
    rows = pc.fill_null(at, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    joined, has = vectors[rows], found & present[rows]
    joined[~has] = 0
    missing = uris.filter(pa.array(~has))
    used = np.zeros(len(file_uris), bool)
    used[rows[has]] = True
    if len(missing) and not allow_missing:
        raise ConfigError(
            f"{len(missing):,} of {len(uris):,} images have no embedding in {source} (e.g. {missing[0].as_py()}); "
            "add them, or pass --allow-missing-embeddings to match those by their hashes only")
    return Embeddings(joined, has, f"{source}#{column}", int((present & ~used).sum()),
                      missing.to_pylist()[:_EXAMPLES])
