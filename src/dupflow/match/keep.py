"""Keep policies: which member of a duplicate group stays, decided by an explicit chain of keys.

Each key orders the members; the next key only breaks the ties left by the ones before, and the
lexicographically first URI always ends the chain, so every tie is broken and the choice never
depends on the order files were listed or matched in. Files of reference datasets always win:
a reference corpus is never moved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dupflow.errors import ConfigError

__all__ = ["DEFAULT_KEEP", "KEEP_KEYS", "KeepPolicy"]

KEEP_KEYS = {
    "dataset": "datasets in priority order: dataset:train,val (bare `dataset`: the order they were given)",
    "resolution": "more pixels",
    "size": "larger file",
    "oldest": "earlier modification time",
    "newest": "later modification time",
    "shortest-path": "fewer characters in the URI",
    "path": "lexicographically first URI (always the last tie-break)",
}

DEFAULT_KEEP = ("dataset", "resolution", "size", "oldest", "shortest-path", "path")


@dataclass(frozen=True)
class KeepPolicy:
    """A chain of keep keys, e.g. ("dataset", "resolution", "path"), with its dataset priority."""

    keys: tuple[str, ...] = DEFAULT_KEEP
    dataset_priority: tuple[str, ...] = ()

    @classmethod
    def parse(cls, items: list[str] | tuple[str, ...]) -> KeepPolicy:
        """From `--keep` values, one key each: `dataset:train,val`, `resolution`, ... (in order)."""
        keys: list[str] = []
        priority: tuple[str, ...] = ()
        for item in items or DEFAULT_KEEP:
            name, _, arg = item.strip().partition(":")
            if name not in KEEP_KEYS:
                raise ConfigError(f"unknown keep key {name!r}: use one of {', '.join(KEEP_KEYS)}, one per --keep")
            if arg and name != "dataset":
                raise ConfigError(f"keep key {name!r} takes no argument")
            if arg:
                priority = tuple(d.strip() for d in arg.split(",") if d.strip())
            if name in keys:
                raise ConfigError(f"keep key {name!r} is given twice")
            keys.append(name)
        if "oldest" in keys and "newest" in keys:
            raise ConfigError("keep keys 'oldest' and 'newest' contradict each other: choose one")
        if "path" not in keys:
            keys.append("path")
        return cls(tuple(keys), priority)

    @property
    def label(self) -> str:
        return " > ".join(f"dataset:{','.join(self.dataset_priority)}" if k == "dataset" and self.dataset_priority
                          else k for k in self.keys)

    def sort_keys(self, images: pa.Table, datasets: list[str], reference: np.ndarray,
                  rows: np.ndarray | None = None) -> list[np.ndarray]:
        """One int64 array per key (smaller is better), reference files first; `datasets` is the
        order used when the policy names no priority. With `rows` (ascending row numbers), the keys are
        compared only among those rows: other rows' entries are 0 (at 10M images, most in no group,
        ranking every path cost seconds)."""
        order = list(self.dataset_priority) + [d for d in datasets if d not in self.dataset_priority]
        unknown = set(self.dataset_priority) - set(datasets)
        if unknown:
            raise ConfigError(f"keep priority names datasets that are not matched: {', '.join(sorted(unknown))}")
        n = images.num_rows
        if rows is not None:
            used = [c for c in ("dataset", "width", "height", "size", "mtime", "uri") if c in images.column_names]
            images, reference = images.select(used).take(pa.array(rows, pa.int64())), reference[rows]
        out = [np.where(reference, 0, 1).astype(np.int64), *(_key(key, images, order) for key in self.keys)]
        if rows is None:
            return out
        full = [np.zeros(n, np.int64) for _ in out]
        for whole, part in zip(full, out, strict=True):
            whole[rows] = part
        return full


def _key(key: str, images: pa.Table, order: list[str]) -> np.ndarray:
    """One keep key of every row (smaller is better); `order`: the datasets by priority."""
    n = images.num_rows
    if key == "dataset":
        encoded = pc.dictionary_encode(images["dataset"]).combine_chunks()  # not a Python string a row
        rank = np.array([order.index(d) for d in encoded.dictionary.to_pylist()], np.int64)
        if not len(rank):
            return np.zeros(n, np.int64)
        ranked: np.ndarray = rank[encoded.indices.to_numpy(zero_copy_only=False)]
        return ranked
    if key == "resolution":
        pixels: np.ndarray = _ints(images["width"], 0) * _ints(images["height"], 0)
        return -pixels
    if key == "size":
        return -_ints(images["size"], 0)
    if key in ("oldest", "newest"):
        t = _ints(images["mtime"].cast(pa.int64()), np.iinfo(np.int64).max if key == "oldest" else 0)
        return t if key == "oldest" else -t
    if key == "shortest-path":
        return np.asarray(pc.utf8_length(images["uri"]).to_numpy(zero_copy_only=False), np.int64)
    ranks = np.empty(n, np.int64)  # path
    ranks[pc.sort_indices(images["uri"]).to_numpy()] = np.arange(n)
    return ranks


def _ints(column: pa.ChunkedArray | pa.Array, fill: int) -> np.ndarray:
    return np.asarray(pc.fill_null(column, fill).to_numpy(zero_copy_only=False), dtype=np.int64)

