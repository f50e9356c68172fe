"""One filesystem layer for every store (fsspec): URIs, atomic writes, and storage-error mapping.

fsspec is imported when a filesystem is first opened: the settings and the command line, which parse
storage options, start without it."""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import uuid
from typing import TYPE_CHECKING, Any

from dupflow.errors import ConfigError, ErrorKind, StorageError

if TYPE_CHECKING:
    import fsspec

__all__ = [
    "atomic_write",
    "durable_temp",
    "file_error_kind",
    "fsync_dir",
    "is_local",
    "join",
    "open_fs",
    "parse_storage_options",
    "read_json",
    "storage_error",
    "to_uri",
]


def open_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for `url` and the path inside it. Options apply to remote stores only.

    fsspec also reads options from the environment (`FSSPEC_S3_ENDPOINT_URL`, `AWS_*`), so nothing
    is hard-coded here.
    """
    import fsspec

    protocol = url.split("://", 1)[0] if "://" in url else "file"
    options = {} if protocol in ("file", "local") else dict(storage_options or {})
    try:
        fs, path = fsspec.core.url_to_fs(os.path.expanduser(url), **options)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"cannot open {url!r}: {exc}. Check the URL scheme and its fsspec package") from exc
    return fs, path


def read_json(url: str, storage_options: dict[str, Any] | None = None, what: str = "JSON file") -> Any:
    """A JSON document from any store; a missing or malformed file is a ConfigError naming it."""
    fs, path = open_fs(url, storage_options)
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {url} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{url} is not valid JSON: {exc}") from exc
    except OSError as exc:
        raise storage_error(exc, url, "read") from exc


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether `fs` is this machine's disk."""
    return isinstance(fs, _local_class())


@functools.cache
def _local_class() -> type[fsspec.AbstractFileSystem]:
    """fsspec's local filesystem class, looked up once (is_local runs per file in listings)."""
    from fsspec.implementations.local import LocalFileSystem

    local: type[fsspec.AbstractFileSystem] = LocalFileSystem
    return local


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI users see: an absolute path for local files, `proto://...` for everything else."""
    return path if is_local(fs) else str(fs.unstrip_protocol(path))


def join(base: str, *parts: str) -> str:
    """Join URL or path components with '/'."""
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write `data` so that readers see the old content or all of the new, never a part.

    Local: a hidden temporary file in the same folder, fsynced, renamed over the target, then the
    folder fsynced, so that the new content survives a power cut once this returns.
    Object stores: a PUT (or completed multipart upload) is visible only once whole.
    """
    try:
        if is_local(fs):
            _replace_local(path, data)
        else:
            with fs.open(path, "wb") as fh:
                fh.write(data)
    except Exception as exc:  # storage libraries raise many types; map them once, here
        raise storage_error(exc, to_uri(fs, path), "write") from exc


def fsync_dir(folder: str) -> None:
    """Make the links, renames and unlinks done in a local `folder` durable. Windows cannot open a
    folder to fsync it; NTFS journals those changes itself."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_temp(path: str, data: bytes) -> str:
    """A hidden temporary file beside local `path` holding `data`, fsynced: to be renamed or linked
    into place (the caller removes it if that fails)."""
    parent, name = path.rsplit("/", 1)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{name}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def _replace_local(path: str, data: bytes) -> None:
    """atomic_write on this machine's disk."""
    parent = path.rsplit("/", 1)[0]
    os.makedirs(parent, exist_ok=True)
    tmp = durable_temp(path, data)
    try:
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(parent)


def file_error_kind(exc: BaseException) -> ErrorKind:
    """Classify a failure to read one file into the `error` column's kind."""
    if isinstance(exc, FileNotFoundError):
        return ErrorKind.VANISHED
    if isinstance(exc, PermissionError):
        return ErrorKind.UNREADABLE
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        return ErrorKind.UNREADABLE
    if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
        return ErrorKind.VANISHED
    name = type(exc).__name__
    if name in ("NoSuchKey", "NoSuchBucket"):
        return ErrorKind.VANISHED
    if name in ("AccessDenied", "ClientError") and "denied" in str(exc).lower():
        return ErrorKind.UNREADABLE
    return ErrorKind.READ_FAILED


_CREDENTIAL_ERRORS = (
    "NoCredentialsError",
    "PartialCredentialsError",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidClientTokenId",
)


def storage_error(exc: BaseException, uri: str, action: str) -> StorageError:
    """One table from storage exceptions to a StorageError whose message says what to do."""
    text = str(exc)
    names = {type(e).__name__ for e in _chain(exc)}
    transient = False
    if names & set(_CREDENTIAL_ERRORS) or "credentials" in text.lower():
        hint = (
            "no valid credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), "
            "or pass --storage-option key=... secret=..."
        )
    elif isinstance(exc, FileNotFoundError) or "NoSuchBucket" in names:
        hint = "it does not exist: check the path or bucket name"
    elif isinstance(exc, PermissionError) or "AccessDenied" in text:
        hint = "permission denied: check file permissions or the bucket policy"
    elif "Could not connect" in text or "Connect" in " ".join(names):
        hint = "the endpoint cannot be reached: check endpoint_url / AWS_ENDPOINT_URL and the network"
        transient = True
    else:
        hint = f"{type(exc).__name__}: {text}"
        transient = True
    return StorageError(f"cannot {action} {uri}: {hint}", transient=transient)


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(out) < 8:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def parse_storage_options(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`key=value` pairs for fsspec (e.g. `endpoint_url=http://...`, `anon=true`)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"storage option {item!r} is not KEY=VALUE (e.g. endpoint_url=http://127.0.0.1:9000)")
        low = value.lower()
        parsed: Any = value
        if low in ("true", "false"):
            parsed = low == "true"
        elif re.fullmatch(r"-?\d+", value):
            parsed = int(value)
        if key == "endpoint_url":
            out.setdefault("client_kwargs", {})["endpoint_url"] = value
            out["endpoint_url"] = value
        else:
            out[key] = parsed
    return out
