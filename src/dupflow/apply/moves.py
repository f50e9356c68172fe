"""Moving one file without ever losing or clobbering one, on any pair of stores.

- Same local filesystem: hard link (fails if the destination exists), hash the file, unlink the source.
- Anything else: stream the bytes (hashing them) to a private partial file (local) or one PUT
  (object stores), refuse an existing destination, read the destination back and compare size and
  SHA-256, then delete the source. A move that was cut short is finished or undone by `settle`.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from typing import Any

import fsspec

from dupflow.io.faults import fault_point
from dupflow.io.fs import fsync_dir, is_local, open_fs, storage_error
from dupflow.io.listing import info_etag, info_mtime_ns
from dupflow.io.uris import parent

__all__ = ["Files", "Moved", "Skip", "partial_name"]

CHUNK = 8 << 20
STALE_BYTES = "stale manifest: the source's bytes no longer match its SHA-256"
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP})


class Skip(Exception):
    """This file is left where it is, for the reason given (a conflict, a stale manifest, ...)."""


@dataclass(frozen=True)
class Moved:
    """A finished move: the bytes now at the destination."""

    size: int
    sha256: str


def partial_name(destination: str, tag: str) -> str:
    """The private file a local copy is written to before it takes the destination's name."""
    return f"{parent(destination)}/.dupflow-partial-{tag}"


class Files:
    """File operations over every store a manifest names, with one set of storage options."""

    def __init__(self, storage_options: dict[str, Any] | None = None) -> None:
        self.options = storage_options

    def locate(self, uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
        return open_fs(uri, self.options)

    def info(self, uri: str) -> dict[str, Any] | None:
        """fsspec's info (`type` is file, directory, link or other), or None when nothing is there."""
        fs, path = self.locate(uri)
        try:
            if is_local(fs):
                return _local_info(path)
            fs.invalidate_cache(path)  # never answer from a listing made before files moved
            info: dict[str, Any] = fs.info(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise storage_error(exc, uri, "look at") from exc
        return info

    def exists(self, uri: str) -> bool:
        return self.info(uri) is not None

    def digest(self, uri: str) -> Moved:
        """Size and SHA-256 of the bytes at `uri`."""
        fs, path = self.locate(uri)
        try:
            with fs.open(path, "rb") as fh:
                return _stream(fh)
        except OSError as exc:
            raise storage_error(exc, uri, "read") from exc

    def stale_reason(self, info: dict[str, Any], size: int | None, mtime_ns: int | None,
                     etag: str | None) -> str | None:
        """Why a source no longer is the file the manifest was planned from, or None if it still is."""
        if size is not None and int(info.get("size", -1)) != size:
            return f"stale manifest: the source's size is {info.get('size')}, the manifest says {size}"
        now_etag = info_etag(info)
        if etag and now_etag and now_etag != etag:
            return f"stale manifest: the source's ETag is {now_etag}, the manifest says {etag}"
        now_mtime = info_mtime_ns(info)
        if mtime_ns is not None and not etag and now_mtime is not None and now_mtime != mtime_ns:
            return "stale manifest: the source was modified after the manifest was planned"
        return None

    def move(self, src: str, dst: str, expect_sha256: str | None, tag: str) -> Moved:
        """Move `src` to `dst`; raises Skip (nothing changed) when the destination exists or the
        source's bytes do not hash to `expect_sha256`."""
        sfs, spath = self.locate(src)
        dfs, dpath = self.locate(dst)
        try:
            if is_local(sfs) and is_local(dfs):
                linked = _move_by_link(spath, dpath, expect_sha256)
                if linked is not None:
                    return linked
            return self._copy_verify_delete(dst, expect_sha256, tag, (sfs, spath), (dfs, dpath))
        except (Skip, FileNotFoundError):
            raise
        except OSError as exc:
            raise storage_error(exc, f"{src} -> {dst}", "move") from exc

    def _copy_verify_delete(self, dst: str, expect: str | None, tag: str,
                            source: tuple[fsspec.AbstractFileSystem, str],
                            destination: tuple[fsspec.AbstractFileSystem, str]) -> Moved:
        (sfs, spath), (dfs, dpath) = source, destination
        if self.exists(dst):
            raise Skip("destination exists")
        if is_local(dfs):
            copied = _copy_to_local(sfs, spath, dpath, partial_name(dpath, tag), expect)
        else:
            copied = _copy_to_object(sfs, spath, dfs, dpath, expect)
        fault_point("apply.copied")
        check = self.digest(dst)
        if check != copied:
            _remove(dfs, dpath)
            raise OSError(f"the copy at {dst} does not match its source (size {check.size} vs {copied.size}, "
                          f"sha256 {check.sha256[:12]} vs {copied.sha256[:12]}); the source is untouched")
        fault_point("apply.verified")
        _remove(sfs, spath)
        fault_point("apply.source-removed")
        return copied

    def settle(self, src: str, dst: str, tag: str, expect_sha256: str | None = None) -> Moved | None:
        """After a crash mid-move: finish it if the destination holds the source's bytes (deleting the
        source), report it finished if only the destination is left, or None if it never landed. A
        copy of a source that no longer hashes to `expect_sha256` is taken back (stale manifest)."""
        dfs, dpath = self.locate(dst)
        if is_local(dfs):
            leftover = partial_name(dpath, tag)
            if os.path.lexists(leftover):
                os.unlink(leftover)
        if not self.exists(dst):
            return None
        landed = self.digest(dst)
        if not self.exists(src):
            return landed
        sfs, spath = self.locate(src)
        if self.digest(src) != landed:
            raise Skip("destination exists with other content (it appeared during the move); both left in place")
        if expect_sha256 and landed.sha256 != expect_sha256:
            _remove(dfs, dpath)  # the copy we made of it, checked identical to the source just above
            raise Skip(STALE_BYTES)
        _remove(sfs, spath)
        return landed


def _local_info(path: str) -> dict[str, Any] | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if os.path.islink(path):
        return {"type": "link", "size": st.st_size}
    kind = "file" if os.path.isfile(path) else "directory" if os.path.isdir(path) else "other"
    return {"type": kind, "size": st.st_size, "mtime": st.st_mtime}  # as fsspec's local info


def _move_by_link(src: str, dst: str, expect: str | None) -> Moved | None:
    """Same-filesystem move; None when hard links are impossible here (then the caller copies)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise Skip("destination exists") from None
    except OSError as exc:
        if exc.errno in _NO_LINK:
            return None
        raise
    fsync_dir(os.path.dirname(dst))
    fault_point("apply.linked")
    with open(dst, "rb") as fh:
        got = _stream(fh)
    if expect and got.sha256 != expect:
        os.unlink(dst)
        raise Skip(STALE_BYTES)
    os.unlink(src)
    fsync_dir(os.path.dirname(src))
    fault_point("apply.source-removed")
    return got


def _copy_to_local(sfs: fsspec.AbstractFileSystem, spath: str, dst: str, partial: str, expect: str | None) -> Moved:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with sfs.open(spath, "rb") as src, open(partial, "wb") as out:
        copied = _stream(src, out)
        out.flush()
        os.fsync(out.fileno())
    if is_local(sfs):
        st = os.stat(spath)
        os.utime(partial, ns=(st.st_atime_ns, st.st_mtime_ns))
    if expect and copied.sha256 != expect:
        os.unlink(partial)
        raise Skip(STALE_BYTES)
    try:
        os.link(partial, dst)  # never replaces an existing file, unlike rename
    except FileExistsError:
        raise Skip("destination exists") from None
    finally:
        os.unlink(partial)
    fsync_dir(os.path.dirname(dst))
    return copied


def _copy_to_object(sfs: fsspec.AbstractFileSystem, spath: str, dfs: fsspec.AbstractFileSystem, dpath: str,
                    expect: str | None) -> Moved:
    with sfs.open(spath, "rb") as src, dfs.open(dpath, "wb") as out:  # visible only once whole
        copied = _stream(src, out)
    if expect and copied.sha256 != expect:
        _remove(dfs, dpath)
        raise Skip(STALE_BYTES)
    return copied


def _stream(src: Any, out: Any = None) -> Moved:
    """Read `src` to the end, hashing it (and writing it to `out`, if given)."""
    h, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
            fault_point("apply.copying")
    return Moved(size, h.hexdigest())


def _remove(fs: fsspec.AbstractFileSystem, path: str) -> None:
    if is_local(fs):
        os.unlink(path)
        fsync_dir(os.path.dirname(path))
    else:
        fs.rm_file(path)
