"""Turn listed files into encodings rows: read once, digest, decode once, run every encoder."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dupflow.config import EncodeSettings
from dupflow.decoding import configure_pillow, decode_image
from dupflow.errors import ErrorKind, FileFailure
from dupflow.fs import file_error_kind, open_fs
from dupflow.hashing import ENCODERS, hash_input, sha256_digest
from dupflow.listing import ImageRef
from dupflow.schemas import encodings_schema

__all__ = ["EncodeStats", "Shard", "encode_refs", "make_shards", "ref_key"]

_READ_CHUNK = 8 << 20


@dataclass(frozen=True)
class Shard:
    """A unit of encoding work: a few hundred refs, named by a digest of what they are."""

    key: str
    refs: tuple[ImageRef, ...]


@dataclass
class EncodeStats:
    """Counts and CPU time for one batch of files."""

    files: int = 0
    encoded: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    cpu_seconds: float = 0.0

    def add(self, other: EncodeStats) -> None:
        self.files += other.files
        self.encoded += other.encoded
        self.errors.update(other.errors)
        self.cpu_seconds += other.cpu_seconds


def ref_key(ref: ImageRef) -> str:
    """What makes a file the same file for incremental runs: uri, size and version token."""
    return f"{ref.uri}\0{ref.size}\0{ref.mtime_ns}\0{ref.etag}"


def make_shards(refs: Sequence[ImageRef], shard_size: int) -> list[Shard]:
    """Split refs (sorted by uri, so shards are reproducible) into shards of `shard_size`."""
    ordered = sorted(refs, key=lambda r: (r.dataset, r.uri))
    shards = []
    for i in range(0, len(ordered), max(1, shard_size)):
        chunk = tuple(ordered[i : i + shard_size])
        digest = hashlib.sha256("\n".join(ref_key(r) for r in chunk).encode()).hexdigest()[:20]
        shards.append(Shard(key=digest, refs=chunk))
    return shards


def encode_refs(refs: Iterable[ImageRef], settings: EncodeSettings) -> tuple[pa.Table, EncodeStats]:
    """Encode files into a staged encodings table (with `dataset`); failures become error rows."""
    configure_pillow(settings.max_pixels)
    start = time.process_time()
    schema = encodings_schema(settings.encoders, settings.hash_size, staged=True)
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    stats = EncodeStats()
    for ref in refs:
        row = _encode_one(ref, settings)
        stats.files += 1
        if row["error"] is None:
            stats.encoded += 1
        else:
            stats.errors[row["error"]] += 1
        for name in schema.names:
            columns[name].append(row.get(name))
    stats.cpu_seconds = time.process_time() - start
    return pa.Table.from_pydict(columns, schema=schema), stats


def _encode_one(ref: ImageRef, settings: EncodeSettings) -> dict[str, Any]:
    row: dict[str, Any] = {
        "uri": ref.uri,
        "dataset": ref.dataset,
        "rel_path": ref.rel_path,
        "size": ref.size,
        "mtime": ref.mtime_ns,
        "etag": ref.etag,
        "error": None,
        "error_message": None,
    }
    try:
        data, digest = _read(ref, settings)
        row["exact"] = digest
        if data is None:
            raise FileFailure(
                ErrorKind.TOO_LARGE,
                f"{ref.size:,} bytes is above the limit of {settings.max_file_bytes:,}; raise --max-file-bytes",
            )
        color = any(ENCODERS[e].needs_color for e in settings.encoders)
        decoded = decode_image(
            data, mode="RGB" if color else "L", decode_size=settings.decode_size, max_pixels=settings.max_pixels
        )
    except FileFailure as failure:
        row["error"], row["error_message"] = failure.kind.value, failure.message
        return row
    row.update(width=decoded.width, height=decoded.height, format=decoded.format, mode=decoded.mode)
    gray = hash_input(decoded.image if decoded.image.mode == "L" else decoded.image.convert("L"), settings.decode_size)
    for name in settings.encoders:
        try:
            row[name] = ENCODERS[name].fn(decoded, gray, settings.hash_size)
        except Exception as exc:  # an encoder bug on one odd picture must not stop the run
            row["error"] = ErrorKind.CORRUPT.value
            row["error_message"] = f"encoder {name} failed: {type(exc).__name__}: {exc}"
            for other in settings.encoders:
                row.pop(other, None)
            break
    return row


def _read(ref: ImageRef, settings: EncodeSettings) -> tuple[bytes | None, bytes]:
    """The file's bytes (None when over the size limit) and their SHA-256, streamed once."""
    try:
        fs, path = open_fs(ref.uri, settings.storage_options)
        if ref.size <= settings.max_file_bytes:
            data = fs.cat_file(path)
            if len(data) <= settings.max_file_bytes:
                return data, sha256_digest(data)
        h = hashlib.sha256()
        with fs.open(path, "rb") as fh:
            while chunk := fh.read(_READ_CHUNK):
                h.update(chunk)
        return None, h.digest()
    except FileFailure:
        raise
    except Exception as exc:  # storage libraries raise many types; classified in one table
        kind = file_error_kind(exc)
        raise FileFailure(kind, f"cannot read {ref.uri}: {type(exc).__name__}: {exc}") from None
