"""Every Parquet schema dupflow writes, with its name and version in the file metadata."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from dupflow.config import decode_size_for
from dupflow.errors import StoreError
from dupflow.hashing import ENCODERS

__all__ = [
    "ENCODINGS_BASE",
    "SCHEMA_VERSION",
    "encodings_schema",
    "read_meta",
    "with_meta",
]

SCHEMA_VERSION = 1
META_PREFIX = "dupflow."

# Columns every encodings row has, in order; encoder columns follow, then `dataset` in staging.
ENCODINGS_BASE = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("rel_path", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("mtime", pa.timestamp("ns", tz="UTC")),
        pa.field("etag", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),
        pa.field("mode", pa.string()),
        pa.field("error", pa.string()),  # an ErrorKind value; null when the file encoded
        pa.field("error_message", pa.string()),
        pa.field("exact", pa.binary(32)),  # SHA-256 of the file bytes
    ]
)


def encodings_schema(encoders: Iterable[str], hash_size: int, *, staged: bool = False) -> pa.Schema:
    """The encodings table for these encoders (registry order); `staged` adds `dataset`."""
    fields = list(ENCODINGS_BASE)
    wanted = set(encoders)
    fields += [pa.field(name, enc.arrow_type(hash_size)) for name, enc in ENCODERS.items() if name in wanted]
    if staged:
        fields.append(pa.field("dataset", pa.string(), nullable=False))
    sizes = {"hash_size": str(hash_size), "decode_size": str(decode_size_for(hash_size))}
    return with_meta(pa.schema(fields), "encodings", sizes)


def with_meta(schema: pa.Schema, name: str, extra: dict[str, str] | None = None) -> pa.Schema:
    """Attach `dupflow.schema`, `dupflow.schema_version` and extra keys to the schema metadata."""
    meta = {f"{META_PREFIX}schema": name, f"{META_PREFIX}schema_version": str(SCHEMA_VERSION)}
    meta.update({f"{META_PREFIX}{k}": v for k, v in (extra or {}).items()})
    return schema.with_metadata(meta)


def read_meta(schema: pa.Schema, expected: str) -> dict[str, str]:
    """The dupflow metadata of a file's schema, checked for the expected schema name and version."""
    raw = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    meta = {k[len(META_PREFIX) :]: v for k, v in raw.items() if k.startswith(META_PREFIX)}
    if meta.get("schema") != expected:
        raise StoreError(f"not a dupflow {expected} file (schema {meta.get('schema')!r})")
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"this {expected} file has schema version {version}, newer than this dupflow "
            f"understands ({SCHEMA_VERSION}): upgrade dupflow"
        )
    return meta
