"""Datasets given as a list of their files instead of a folder to walk.

A dataset URL ending in `.txt` is a UTF-8 text file with one path or URL a line (blank lines and lines
starting with '#' are ignored); one ending in `.parquet` is a Parquet file, or folder of them, with a
`uri` (else `path`) string column. A URL (`s3://...`, `file://...`) is taken as it is; a path is
relative to the list's own folder, on the list's store (absolute paths only in a local list). Every
file named is listed, whatever its extension: the list is the user's choice. Each is looked up
(threaded, for object stores) for its size and mtime or ETag; one that does not exist is still listed,
so that the encode records it as an error row, and counted in `ListingStats.missing`.

The files may lie anywhere: their `rel_path` is relative to the deepest folder holding them all
(`common_root`), which the store records as the dataset's URL; files on different stores or buckets
share none, and their `rel_path` is the URI with `://` made `/` (`s3/bucket/key.jpg`, `data/a.jpg`).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as pads

from dupflow.errors import ConfigError
from dupflow.io.fs import is_local, open_fs, storage_error, to_uri
from dupflow.io.refs import ImageRef, ListingStats, info_etag, info_mtime_ns
from dupflow.io.sources import DatasetSource

__all__ = ["common_root", "list_file_list", "read_file_list", "relative_path"]

_COLUMNS = ("uri", "path")
_STAT_THREADS = 32  # concurrent look-ups: one HEAD request each on object stores


def list_file_list(
    source: DatasetSource, storage_options: dict[str, Any] | None, stats: ListingStats
) -> Iterator[ImageRef]:
    """Yield the files `source`'s list names, in its order, each once (see the module's docstring)."""
    entries = read_file_list(source, storage_options)
    uris = list(dict.fromkeys(entries))
    stats.repeated += len(entries) - len(uris)
    root = common_root(uris)
    for uri, info in zip(uris, _look_up(uris, source, storage_options), strict=True):
        stats.listed += 1
        stats.missing += info is None
        yield ImageRef(
            uri=uri,
            dataset=source.name,
            rel_path=relative_path(root, uri),
            size=int(info.get("size") or 0) if info else 0,
            mtime_ns=info_mtime_ns(info) if info else None,
            etag=info_etag(info) if info else None,
        )


def read_file_list(source: DatasetSource, storage_options: dict[str, Any] | None) -> list[str]:
    """The URIs `source`'s list names, resolved (see the module's docstring), in its order."""
    fs, path = open_fs(source.url, storage_options)
    try:
        if path.rstrip("/").lower().endswith(".parquet"):
            entries = _parquet_entries(fs, path.rstrip("/"), source)
        else:
            entries = _text_entries(fs.cat_file(path), source)
    except FileNotFoundError:
        raise ConfigError(f"dataset {source.name!r}: the file list {source.url} does not exist; check the path "
                          "(for S3: bucket, key, endpoint and credentials)") from None
    except ConfigError:
        raise
    except Exception as exc:
        raise storage_error(exc, source.url, "read the file list") from exc
    folder = posixpath.dirname(path.rstrip("/"))
    resolve = _Resolver(fs, folder, source, storage_options)
    return [resolve(entry) for entry in entries]


def _text_entries(data: bytes, source: DatasetSource) -> list[str]:
    """The non-blank, non-comment lines of a text list, stripped."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"dataset {source.name!r}: the file list {source.url} is not UTF-8 text ({exc}); "
                          "write one path or URL a line, or give a .parquet file with a `uri` column") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _parquet_entries(fs: fsspec.AbstractFileSystem, path: str, source: DatasetSource) -> list[str]:
    """The non-empty values of a Parquet list's `uri` (else `path`) column."""
    data = pads.dataset(path, filesystem=fs, format="parquet")
    column = next((c for c in _COLUMNS if c in data.schema.names), None)
    if column is None:
        raise ConfigError(f"dataset {source.name!r}: the file list {source.url} has no `uri` or `path` column; "
                          f"it has: {', '.join(data.schema.names) or 'none'}")
    if not pa.types.is_string(data.schema.field(column).type) and not pa.types.is_large_string(
        data.schema.field(column).type
    ):
        raise ConfigError(f"dataset {source.name!r}: the `{column}` column of {source.url} holds "
                          f"{data.schema.field(column).type}, not strings (paths or URLs)")
    values = data.to_table(columns=[column])[column].to_pylist()
    return [v.strip() for v in values if v and v.strip()]


class _Resolver:
    """Turns a list's entries into the URIs listing gives: URLs as they are, paths against the list's folder."""

    def __init__(
        self, fs: fsspec.AbstractFileSystem, folder: str, source: DatasetSource, options: dict[str, Any] | None
    ) -> None:
        self.fs, self.folder, self.source, self.options = fs, folder, source, options
        self.stores: dict[str, fsspec.AbstractFileSystem] = {}

    def __call__(self, entry: str) -> str:
        if "://" in entry:
            protocol = entry.split("://", 1)[0]
            if protocol not in self.stores:
                self.stores[protocol] = open_fs(entry, self.options)[0]
            return to_uri(self.stores[protocol], fsspec.core.strip_protocol(entry))
        if is_local(self.fs):
            return os.path.normpath(os.path.join(self.folder, os.path.expanduser(entry)))
        joined = posixpath.normpath(posixpath.join(self.folder, entry))
        if entry.startswith("/") or joined.split("/", 1)[0] in ("..", "."):
            raise ConfigError(f"dataset {self.source.name!r}: {entry!r} in {self.source.url} is not a path inside "
                              "the list's store; in a list on an object store write full URLs (s3://bucket/key) "
                              "or paths relative to the list's folder")
        return to_uri(self.fs, joined)


def _look_up(
    uris: Sequence[str], source: DatasetSource, storage_options: dict[str, Any] | None
) -> list[dict[str, Any] | None]:
    """fsspec's info of each file (None where it does not exist or cannot be looked up); concurrent where
    any is on a remote store."""
    stores: dict[str, fsspec.AbstractFileSystem] = {}
    located = []
    for uri in uris:
        protocol = uri.split("://", 1)[0] if "://" in uri else "file"
        if protocol not in stores:
            stores[protocol] = open_fs(uri, storage_options)[0]
        fs = stores[protocol]
        located.append((fs, uri if is_local(fs) else fsspec.core.strip_protocol(uri), uri))

    def info(where: tuple[fsspec.AbstractFileSystem, str, str]) -> dict[str, Any] | None:
        fs, path, uri = where
        try:
            found: dict[str, Any] = fs.info(path)
        except OSError:  # missing or not allowed: the encode reads it and records which
            return None
        if found.get("type") != "file":
            what = "a folder" if found.get("type") == "directory" else "not a regular file"
            raise ConfigError(f"dataset {source.name!r}: the file list {source.url} names {uri}, which is {what}; "
                              "list the files themselves, or give a folder as a dataset of its own")
        return found

    if all(is_local(fs) for fs in stores.values()):
        return [info(where) for where in located]  # a local stat takes microseconds: threads would cost more
    with ThreadPoolExecutor(max(1, min(_STAT_THREADS, len(located)))) as pool:
        return list(pool.map(info, located))


def common_root(uris: Sequence[str]) -> str:
    """The deepest folder holding every URI (`/data`, `s3://bucket/prefix`); '' when there are none or
    they share no store (local files and S3 objects, or two buckets)."""
    split = [_folders(u) for u in uris]
    if not split or len({scheme for scheme, _ in split}) != 1:
        return ""
    scheme, common = split[0][0], list(split[0][1])
    for _, folders in split[1:]:
        n = 0
        while n < min(len(common), len(folders)) and common[n] == folders[n]:
            n += 1
        del common[n:]
    if scheme:
        return f"{scheme}{'/'.join(common)}" if common else ""
    return "/".join(common) or "/"  # local paths are absolute: their first segment is ''


def relative_path(root: str, uri: str) -> str:
    """`uri`'s path below `root` (from `common_root`); below no root, the URI with `://` made `/`."""
    if not root:
        return uri.replace("://", "/", 1).lstrip("/")
    return uri[len(root):].lstrip("/")


def _folders(uri: str) -> tuple[str, list[str]]:
    """('proto://' or '' for a local path, the folders holding the file, outermost first)."""
    scheme, sep, rest = uri.partition("://") if "://" in uri else ("", "", uri)
    return scheme + sep, rest.split("/")[:-1]
