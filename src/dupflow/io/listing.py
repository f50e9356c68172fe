"""List the images of a dataset on any fsspec store, streaming, with one code path for all stores: a
folder or prefix is walked; a file list (a dataset URL ending .txt or .parquet) is read (`filelists`)."""

from __future__ import annotations

import errno
import os
import stat
import zlib
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import fsspec

from dupflow.errors import ConfigError, DupflowError
from dupflow.io.filelists import common_root, list_file_list
from dupflow.io.formats import IMAGE_EXTENSIONS, SNIFF_BYTES, has_image_extension, sniff_format
from dupflow.io.fs import is_local, open_fs, storage_error, to_uri
from dupflow.io.refs import ImageRef, ListingStats, info_etag, info_mtime_ns
from dupflow.io.sources import DatasetSource

__all__ = [
    "IMAGE_EXTENSIONS",
    "WHOLE",
    "ImageRef",
    "ListingPart",
    "ListingStats",
    "check_root",
    "check_source",
    "dataset_url",
    "info_etag",
    "info_mtime_ns",
    "list_dataset",
]


class ListingPart(NamedTuple):
    """Part `k` of `of` of a folder's listing: the sub-folders of its root whose names hash (CRC-32) to
    k, each walked whole, and (part 0) the files in the root itself. The parts of one folder, listed
    anywhere and in any order, hold each of its images exactly once."""

    k: int = 0
    of: int = 1

    def owns(self, folder: str) -> bool:
        """Whether the root's sub-folder named `folder` is this part's to walk."""
        return self.of <= 1 or zlib.crc32(folder.encode()) % self.of == self.k


WHOLE = ListingPart()


def list_dataset(
    source: DatasetSource,
    storage_options: dict[str, Any] | None = None,
    stats: ListingStats | None = None,
    *,
    sniff: bool = False,
    part: ListingPart = WHOLE,
) -> Iterator[ImageRef]:
    """Yield the images under `source.url`, recursively, in a stable order per folder; or, for a file
    list, every file it names (`dupflow.io.filelists`).

    Hidden files and folders (name starting with '.') are skipped, extensions are matched
    case-insensitively, and symbolic links to files are followed only when they stay inside the root;
    links to folders are not descended into, and link loops are counted as such, whatever their name.
    `sniff`: a file whose name has no image extension (none, or another) is listed when its first bytes
    are an image's (`ListingStats.sniffed`); it costs one small read per such file, none for the others.
    `part`: only that part of a folder (`ListingPart`); a file list is read whole by part 0.
    """
    stats = stats if stats is not None else ListingStats()
    stats.unreadable_dirs = stats.unreadable_dirs or []
    if source.is_file_list:
        found = list_file_list(source, storage_options, stats) if part.k == 0 else iter(())
    else:
        found = _walk(source, storage_options, stats, sniff, part)
    try:
        yield from found
    except (DupflowError, GeneratorExit):
        raise
    except Exception as exc:
        raise storage_error(exc, source.url, "list") from exc


def _walk(
    source: DatasetSource, storage_options: dict[str, Any] | None, stats: ListingStats, sniff: bool,
    part: ListingPart,
) -> Iterator[ImageRef]:
    """`list_dataset` of a folder or prefix."""
    fs, root = open_fs(source.url, storage_options)
    root = root.rstrip("/")
    check_root(fs, root, source)
    real_root = os.path.realpath(root) if is_local(fs) else None
    unreadable = stats.unreadable_dirs if stats.unreadable_dirs is not None else []

    def on_error(exc: BaseException) -> None:
        unreadable.append(f"{getattr(exc, 'filename', '')}: {exc}")

    fs.invalidate_cache()  # long-lived processes must not list from a stale cache
    levels = (fs.walk(root, detail=True, topdown=True, on_error=on_error) if part.of <= 1
              else _part_walk(fs, root, part, stats, on_error))
    for _dirpath, dirs, files in levels:
        hidden = [d for d in dirs if d.startswith(".")]
        for d in hidden:
            del dirs[d]
        stats.skipped_hidden += len(hidden)
        by_content = _images_by_content(fs, files, real_root) if sniff else set()
        for name in sorted(files):
            info = files[name]
            skipped = _skipped_as(name, info, real_root, has_image_extension(name) or name in by_content)
            if skipped:
                setattr(stats, skipped, getattr(stats, skipped) + 1)
                continue
            path = info["name"].rstrip("/")
            stats.listed += 1
            stats.sniffed += name in by_content
            yield ImageRef(
                uri=to_uri(fs, path),
                dataset=source.name,
                rel_path=path[len(root) + 1 :],
                size=int(info.get("size") or 0),
                mtime_ns=info_mtime_ns(info),
                etag=info_etag(info),
            )


def _part_walk(
    fs: fsspec.AbstractFileSystem, root: str, part: ListingPart, stats: ListingStats, on_error: Any
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """`fs.walk(root)` restricted to one part: the root's own files (part 0), then each sub-folder the
    part owns, walked whole (a link to a folder is a file entry there, as in the whole walk)."""
    top = next(iter(fs.walk(root, maxdepth=1, detail=True, topdown=True, on_error=on_error)), None)
    if top is None:
        return
    dirpath, dirs, files = top
    if part.k == 0:
        stats.skipped_hidden += sum(1 for d in dirs if d.startswith("."))
        yield dirpath, {}, files
    for name in sorted(d for d in dirs if not d.startswith(".") and part.owns(d)):
        yield from fs.walk(f"{root}/{name}", detail=True, topdown=True, on_error=on_error)


def _images_by_content(fs: fsspec.AbstractFileSystem, files: dict[str, Any], real_root: str | None) -> set[str]:
    """The names, among one folder's files without an image extension that would otherwise be listed,
    whose first bytes are an image's: one ranged read each, concurrent on object stores."""
    names = [n for n, info in files.items()
             if not has_image_extension(n) and _skipped_as(n, info, real_root, True) is None]
    if not names:
        return set()
    paths = [files[n]["name"].rstrip("/") for n in names]
    heads = fs.cat_ranges(paths, [0] * len(paths), [SNIFF_BYTES] * len(paths), on_error="return")
    return {n for n, head in zip(names, heads, strict=True) if isinstance(head, bytes) and sniff_format(head)}


def _skipped_as(name: str, info: dict[str, Any], real_root: str | None, image: bool) -> str | None:
    """The ListingStats counter a listed entry is skipped under, or None for an image to encode;
    `real_root` is the resolved root of a local dataset (None on object stores), `image` whether the
    name (or, when sniffing, the content) says it is an image."""
    local = real_root is not None
    if name.startswith("."):
        return "skipped_hidden"
    if local and info.get("islink") and _is_loop(info["name"].rstrip("/")):
        return "skipped_loops"
    if not image:
        return "skipped_extension"
    if real_root is not None and not _regular_inside(info["name"].rstrip("/"), info, real_root):
        return "skipped_links"
    return None


def check_source(source: DatasetSource, storage_options: dict[str, Any] | None = None) -> None:
    """`source` can be listed: its folder or prefix exists, or its file list is a file (or, for Parquet, a
    folder of them) that exists; else one error saying what to check."""
    fs, path = open_fs(source.url, storage_options)
    if not source.is_file_list:
        check_root(fs, path.rstrip("/"), source)
        return
    try:
        ok = fs.exists(path.rstrip("/"))
    except Exception as exc:
        raise storage_error(exc, source.url, "read the file list") from exc
    if not ok:
        raise ConfigError(f"dataset {source.name!r}: the file list {source.url} does not exist; check the path "
                          "(for S3: bucket, key, endpoint and credentials)")


def dataset_url(source: DatasetSource, refs: Sequence[ImageRef], storage_options: dict[str, Any] | None = None) -> str:
    """The URL the store records for `source`, which its files' `rel_path` are relative to: its folder or
    prefix; for a file list, the deepest folder holding the files listed for it in `refs`."""
    if source.is_file_list:
        return common_root([r.uri for r in refs if r.dataset == source.name])
    return str(to_uri(*open_fs(source.url, storage_options)))


def check_root(fs: fsspec.AbstractFileSystem, root: str, source: DatasetSource) -> None:
    """`root` is a folder or prefix that exists and can be read, else one error saying what to check."""
    try:
        ok = fs.isdir(root)
    except Exception as exc:
        raise storage_error(exc, source.url, "list") from exc
    if ok:
        return
    if _is_file(fs, root):
        raise ConfigError(
            f"dataset {source.name!r}: {source.url} is a file, not a folder: give the folder it is in, or list the "
            "files to dedup in a .txt (one path or URL a line) or .parquet (a `uri` column) file and give that"
        )
    raise ConfigError(
        f"dataset {source.name!r}: {source.url} is not a folder or prefix that exists; "
        "check the path (for S3: bucket, prefix, endpoint and credentials)"
    )


def _is_file(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    try:
        return bool(fs.isfile(path))
    except Exception:  # noqa: BLE001 - only to choose the message: the caller reports the path as missing
        return False


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
