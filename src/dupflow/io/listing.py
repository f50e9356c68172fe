"""List the images of a dataset on any fsspec store, streaming, with one code path for all stores."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import fsspec

from dupflow.errors import ConfigError
from dupflow.io.fs import is_local, open_fs, storage_error, to_uri
from dupflow.io.sources import DatasetSource

__all__ = ["IMAGE_EXTENSIONS", "ImageRef", "ListingStats", "info_etag", "info_mtime_ns", "list_dataset"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


@dataclass(frozen=True)
class ImageRef:
    """One listed file: what identifies it and the version token used for incremental runs."""

    uri: str
    dataset: str
    rel_path: str
    size: int
    mtime_ns: int | None
    etag: str | None


@dataclass
class ListingStats:
    """What listing skipped, so a summary can say it."""

    listed: int = 0
    skipped_extension: int = 0
    skipped_hidden: int = 0
    skipped_links: int = 0  # links to files outside the root
    skipped_loops: int = 0  # links that never resolve (a -> b -> a) or lead back to a folder above them
    unreadable_dirs: list[str] | None = None

    @classmethod
    def merged(cls, parts: Iterable[ListingStats]) -> ListingStats:
        """One listing's counts from those of several datasets."""
        total = cls(unreadable_dirs=[])
        for part in parts:
            total.add(part)
        return total

    def add(self, other: ListingStats) -> None:
        """Fold another listing's counts into these."""
        self.listed += other.listed
        self.skipped_extension += other.skipped_extension
        self.skipped_hidden += other.skipped_hidden
        self.skipped_links += other.skipped_links
        self.skipped_loops += other.skipped_loops
        self.unreadable_dirs = [*(self.unreadable_dirs or []), *(other.unreadable_dirs or [])]


def list_dataset(
    source: DatasetSource,
    storage_options: dict[str, Any] | None = None,
    stats: ListingStats | None = None,
) -> Iterator[ImageRef]:
    """Yield the images under `source.url`, recursively, in a stable order per folder.

    Hidden files and folders (name starting with '.') are skipped, extensions are matched
    case-insensitively, and symbolic links to files are followed only when they stay inside the root;
    links to folders are not descended into, and link loops are counted as such, whatever their name.
    """
    stats = stats if stats is not None else ListingStats()
    stats.unreadable_dirs = stats.unreadable_dirs or []
    fs, root = open_fs(source.url, storage_options)
    root = root.rstrip("/")
    check_root(fs, root, source)
    local = is_local(fs)
    real_root = os.path.realpath(root) if local else root
    unreadable = stats.unreadable_dirs

    def on_error(exc: BaseException) -> None:
        unreadable.append(f"{getattr(exc, 'filename', '')}: {exc}")

    fs.invalidate_cache()  # long-lived processes must not list from a stale cache
    walker = fs.walk(root, detail=True, topdown=True, on_error=on_error)
    try:
        for _dirpath, dirs, files in walker:
            hidden = [d for d in dirs if d.startswith(".")]
            for d in hidden:
                del dirs[d]
            stats.skipped_hidden += len(hidden)
            for name in sorted(files):
                info = files[name]
                skipped = _skipped_as(name, info, real_root if local else None)
                if skipped:
                    setattr(stats, skipped, getattr(stats, skipped) + 1)
                    continue
                path = info["name"].rstrip("/")
                stats.listed += 1
                yield ImageRef(
                    uri=to_uri(fs, path),
                    dataset=source.name,
                    rel_path=path[len(root) + 1 :],
                    size=int(info.get("size") or 0),
                    mtime_ns=info_mtime_ns(info),
                    etag=info_etag(info),
                )
    except (ConfigError, GeneratorExit):
        raise
    except Exception as exc:
        raise storage_error(exc, source.url, "list") from exc


def _skipped_as(name: str, info: dict[str, Any], real_root: str | None) -> str | None:
    """The ListingStats counter a listed entry is skipped under, or None for an image to encode;
    `real_root` is the resolved root of a local dataset (None on object stores)."""
    local = real_root is not None
    if name.startswith("."):
        return "skipped_hidden"
    if local and info.get("islink") and _is_loop(info["name"].rstrip("/")):
        return "skipped_loops"
    if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
        return "skipped_extension"
    if real_root is not None and not _regular_inside(info["name"].rstrip("/"), info, real_root):
        return "skipped_links"
    return None


def check_root(fs: fsspec.AbstractFileSystem, root: str, source: DatasetSource) -> None:
    """`root` is a folder or prefix that exists and can be read, else one error saying what to check."""
    try:
        ok = fs.isdir(root)
    except Exception as exc:
        raise storage_error(exc, source.url, "list") from exc
    if not ok:
        raise ConfigError(
            f"dataset {source.name!r}: {source.url} is not a folder or prefix that exists; "
            "check the path (for S3: bucket, prefix, endpoint and credentials)"
        )


def _regular_inside(path: str, info: dict[str, Any], real_root: str) -> bool:
    """Local only: plain files pass; a link passes when it resolves to a file inside the root."""
    if info.get("type") == "file" and not info.get("islink"):
        return True
    if not info.get("islink"):
        return False  # sockets, FIFOs, devices
    target = os.path.realpath(path)
    return os.path.isfile(target) and (target + os.sep).startswith(real_root + os.sep)


def _is_loop(path: str) -> bool:
    """Local only: whether the link at `path` never resolves (a -> b -> a, a -> a) or points to a folder
    that contains it (following it would list the same folders forever)."""
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    if not is_dir:
        return False
    here, target = os.path.realpath(os.path.dirname(path)), os.path.realpath(path)
    return here == target or here.startswith(target.rstrip(os.sep) + os.sep)


def info_mtime_ns(info: dict[str, Any]) -> int | None:
    """A file's modification time from fsspec `info`, in ns rounded to microseconds (every store's grain)."""
    value = info.get("mtime", info.get("LastModified"))
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1_000_000) * 1000
    if isinstance(value, str):
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1_000_000) * 1000
    return round(float(value) * 1_000_000) * 1000


def info_etag(info: dict[str, Any]) -> str | None:
    """An object's ETag from fsspec `info`, without quotes; None for local files."""
    value = info.get("ETag") or info.get("etag")
    return str(value).strip('"') if value else None
