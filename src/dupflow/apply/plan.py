"""From a move manifest to the actions of one apply run: every row checked (destination inside the
duplicates root, source inside its dataset, no row twice), and the sidecar files that go with each image."""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dupflow.apply.settings import ApplyOptions
from dupflow.errors import ConfigError, StorageError
from dupflow.io.fs import is_local, join, open_fs, storage_error, to_uri
from dupflow.io.listing import IMAGE_EXTENSIONS
from dupflow.io.uris import escapes, parent, redact, relative_to, sidecar_name, split_name
from dupflow.schemas import APPLY_ACTIONS, read_meta

__all__ = ["ANNOTATIONS_DIR", "ApplyOptions", "Plan", "absolute", "plan_apply", "read_manifest"]

ANNOTATIONS_DIR = "_annotations"  # DUPLICATES_ROOT/_annotations/DATASET/...: sidecars from annotation folders
_OPTIONAL = {"dataset": pa.string(), "rel_path": pa.string(), "size": pa.int64(),
             "mtime": pa.timestamp("ns", tz="UTC"), "etag": pa.string(), "sha256": pa.string(), "group": pa.int64()}


@dataclass(frozen=True)
class Plan:
    """The actions of one apply run, and what they were planned from."""

    actions: pa.Table  # APPLY_ACTIONS
    manifest: str
    manifest_sha256: str
    duplicates_root: str


def absolute(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """`url` as the URIs in manifests are written: an absolute local path or proto://..."""
    fs, path = open_fs(url, storage_options)
    return to_uri(fs, path)


def read_manifest(url: str, storage_options: dict[str, Any] | None = None) -> tuple[pa.Table, dict[str, str], str]:
    """The manifest table, its dupflow metadata ({} when a reviewer rewrote the file without it) and the
    SHA-256 of its bytes. Only `source` and `destination` are required."""
    fs, path = open_fs(url, storage_options)
    try:
        raw = fs.cat_file(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"no manifest at {url}: run `dupflow match` first, or check the path") from exc
    except OSError as exc:
        raise storage_error(exc, url, "read the manifest") from exc
    try:
        table = pq.read_table(io.BytesIO(raw))
    except pa.ArrowInvalid as exc:
        raise ConfigError(f"{url} is not a Parquet manifest: {exc}") from exc
    meta = read_meta(table.schema, "manifest") if b"dupflow.schema" in (table.schema.metadata or {}) else {}
    missing = [c for c in ("source", "destination") if c not in table.column_names]
    if missing:
        raise ConfigError(f"{url} has no {' or '.join(missing)} column: it is not a move manifest")
    for name, kind in _OPTIONAL.items():
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, kind))
    return table, meta, hashlib.sha256(raw).hexdigest()


def plan_apply(manifest_url: str, options: ApplyOptions, storage_options: dict[str, Any] | None = None) -> Plan:
    """Check every manifest row and add the sidecars that move with each image."""
    table, meta, digest = read_manifest(manifest_url, storage_options)
    root_url = options.duplicates_root or meta.get("duplicates_root")
    if not root_url:
        raise ConfigError(f"{manifest_url} does not say where duplicates go (it was rewritten without dupflow's "
                          f"metadata): pass --duplicates-root")
    root = absolute(root_url, storage_options).rstrip("/")
    dataset_urls = json.loads(meta.get("dataset_urls", "{}"))
    annotations = {k: absolute(v, storage_options) for k, v in options.annotations.items()}
    folders = _Folders(storage_options)
    rows: list[dict[str, Any]] = []
    seen_src: set[str] = set()
    seen_dst: set[str] = set()
    for row in table.to_pylist():
        unit = len(rows)
        refused = _refusal(row, root, dataset_urls, seen_src, seen_dst)
        rows.append({**_base(row), "action": unit, "unit": unit, "kind": "image", "refused": refused})
        seen_src.add(row["source"])
        seen_dst.add(row["destination"])
        if refused is None and options.sidecar_exts:
            for src, dst, why in _sidecars(row, root, annotations, options.sidecar_exts, folders):
                taken = src in seen_src or dst in seen_dst
                rows.append({"action": len(rows), "unit": unit, "kind": "sidecar", "source": src, "destination": dst,
                             "dataset": row["dataset"], "group": row["group"],
                             "refused": "another row moves the same file" if taken else why})
                seen_src.add(src)
                seen_dst.add(dst)
    actions = pa.Table.from_pylist(rows, schema=APPLY_ACTIONS)
    return Plan(actions, redact(manifest_url), digest, root)


def _base(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("source", "destination", "dataset", "rel_path", "size", "mtime", "etag", "sha256",
                                "group")}


def _refusal(row: dict[str, Any], root: str, dataset_urls: dict[str, str], seen_src: set[str],
             seen_dst: set[str]) -> str | None:
    """Why this row must not be applied at all, or None."""
    src, dst = row["source"], row["destination"]
    if not src or not dst:
        return "source or destination is empty"
    if escapes(root, dst):
        return f"destination escapes the duplicates root {redact(root)}"
    if not escapes(root, src):
        return "source is inside the duplicates root (already moved?)"
    url = dataset_urls.get(row["dataset"] or "")
    if url and (not row["rel_path"] or src != join(url, row["rel_path"]) or relative_to(url, src) is None):
        return f"source is not {row['dataset']}'s file {row['rel_path']} under {redact(url)}"
    if src in seen_src:
        return "another row moves the same source"
    if dst in seen_dst:
        return "another row moves a file to the same destination"
    return None


def _sidecars(row: dict[str, Any], root: str, annotations: dict[str, str], exts: tuple[str, ...],
              folders: _Folders) -> list[tuple[str, str, str | None]]:
    """(source, destination, refusal) of each sidecar of this image that exists."""
    folder, stem, ext = split_name(row["source"])
    name = f"{stem}{ext}"
    names = folders.names(folder)
    shared = sorted(n for n in names if n != name and os.path.splitext(n)[0] == stem
                    and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
    found: list[tuple[str, str, str | None]] = []
    dst_folder, dst_name = row["destination"].rsplit("/", 1)

    def refusal(by_stem: bool) -> str | None:
        if by_stem and shared:
            return f"sidecar shared with {', '.join(shared)} (same stem); left with it"
        return None

    for n in sorted(names):
        low = n.lower()
        for e in exts:
            if low == f"{name}{e}".lower() or low == f"{stem}{e}".lower():
                by_stem = low == f"{stem}{e}".lower()
                found.append((f"{folder}/{n}", f"{dst_folder}/{sidecar_name(name, n, dst_name)}", refusal(by_stem)))
    url = annotations.get(row["dataset"] or "")
    rel = relative_to(root, row["destination"])
    if url and row["rel_path"] and rel is not None:
        rel_folder = parent(f"/{row['rel_path']}").lstrip("/")
        ann_folder = join(url, rel_folder) if rel_folder else url
        for n in sorted(folders.names(ann_folder)):
            if any(n.lower() == f"{stem}{e}".lower() for e in exts):
                dst = join(root, ANNOTATIONS_DIR, row["dataset"], rel_folder, sidecar_name(name, n, dst_name))
                found.append((f"{ann_folder}/{n}", dst, refusal(True)))
    return found


class _Folders:
    """File names per folder, listed once each."""

    def __init__(self, storage_options: dict[str, Any] | None) -> None:
        self.options = storage_options
        self.cache: dict[str, set[str]] = {}

    def names(self, folder: str) -> set[str]:
        if folder not in self.cache:
            fs, path = open_fs(folder, self.options)
            try:
                if is_local(fs):
                    names = {e.name for e in os.scandir(path) if e.is_file(follow_symlinks=False)}
                else:
                    fs.invalidate_cache(path)  # an earlier listing in this process may predate the sidecars
                    names = {e["name"].rsplit("/", 1)[-1] for e in fs.ls(path, detail=True) if e.get("type") == "file"}
            except FileNotFoundError:
                names = set()
            except OSError as exc:
                raise StorageError(f"cannot list {redact(folder)} for sidecars: {exc}") from exc
            self.cache[folder] = names
        return self.cache[folder]
