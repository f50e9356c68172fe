"""Every Parquet schema dupflow writes, with its name and version in the file metadata."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from dupflow.errors import StoreError

__all__ = [
    "APPLY_ACTIONS",
    "APPLY_RESULTS",
    "ENCODINGS_BASE",
    "GROUPS",
    "LISTING",
    "MANIFEST",
    "MATCH_CLASSES",
    "MATCH_PAIRS",
    "PAIRS",
    "SCHEMA_VERSION",
    "SCORES",
    "encodings_schema",
    "manifest_metadata",
    "parquet_bytes",
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


def encodings_schema(encoder_fields: Iterable[pa.Field], meta: Mapping[str, str], *, staged: bool = False) -> pa.Schema:
    """The encodings table: the base columns, one column per encoder (the registry gives their types,
    see `dupflow.encode.hashing.encodings_schema`), then `dataset` when `staged`; `meta` (the value
    settings) goes into the file metadata."""
    fields = [*ENCODINGS_BASE, *encoder_fields]
    if staged:
        fields.append(pa.field("dataset", pa.string(), nullable=False))
    return with_meta(pa.schema(fields), "encodings", dict(meta))


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


# A run's listing as staged in the store (and the shards its plan cut from it): one row per listed file,
# typed like the encodings' key columns so that keys compare equal (`dupflow.store.listing_stage`).
LISTING = with_meta(
    pa.schema(
        [
            pa.field("uri", pa.string(), nullable=False),
            pa.field("rel_path", pa.string()),
            pa.field("size", pa.int64()),
            pa.field("mtime", pa.timestamp("ns", tz="UTC")),
            pa.field("etag", pa.string()),
            pa.field("dataset", pa.string(), nullable=False),
        ]
    ),
    "listing",
)


# Matching outputs. URIs are as listed: absolute local paths or proto://bucket/key.
PAIRS = with_meta(
    pa.schema(
        [
            pa.field("a", pa.string(), nullable=False),
            pa.field("b", pa.string(), nullable=False),  # a < b in (dataset, uri) order: each pair once
            pa.field("a_dataset", pa.string(), nullable=False),
            pa.field("b_dataset", pa.string(), nullable=False),
            pa.field("rule", pa.string(), nullable=False),  # the rule that accepted the pair, e.g. phash<=10
            pa.field("method", pa.string(), nullable=False),  # its metrics, e.g. phash or phash+dhash
            pa.field("distance", pa.int32()),  # bits, of the rule's first metric; null when that is cosine
            # in [0, 1]: with local features, the verified shared fraction (area both show / area either shows)
            # where verification shows it; else the least over the rule's metrics
            pa.field("similarity", pa.float64(), nullable=False),
            # by mirrored/rotated pHashes: how b maps onto a (hflip, rot90, ...); `crop`: found by one's pHash
            # near a window of the other's (the distance is to that window)
            pa.field("orientation", pa.string()),
        ]
    ),
    "pairs",
)

GROUPS = with_meta(
    pa.schema(
        [
            pa.field("group", pa.int64(), nullable=False),  # numbered by the group's first member
            pa.field("uri", pa.string(), nullable=False),
            pa.field("dataset", pa.string(), nullable=False),
            pa.field("rel_path", pa.string()),
            pa.field("group_size", pa.int32(), nullable=False),
            pa.field("keeper", pa.bool_(), nullable=False),
            pa.field("keeper_uri", pa.string(), nullable=False),
            pa.field("reference", pa.bool_(), nullable=False),  # a reference dataset's file: never moved
            pa.field("datasets", pa.int32(), nullable=False),  # datasets the group spans
            pa.field("leakage", pa.bool_(), nullable=False),  # the group spans more than one dataset
        ]
    ),
    "groups",
)

SCORES = with_meta(
    pa.schema(
        [
            pa.field("uri", pa.string(), nullable=False),
            pa.field("dataset", pa.string(), nullable=False),
            pa.field("rel_path", pa.string()),
            pa.field("status", pa.string(), nullable=False),  # pass | fail | error
            # 1 - best similarity; a keeper ignores its identical copies (similarity 1), so of N identical
            # files N-1 score 0 and the keeper does not. Null for files that could not be read.
            pa.field("uniqueness", pa.float64()),
            pa.field("max_similarity", pa.float64()),  # to the nearest accepted match; null: none
            pa.field("nearest", pa.string()),
            pa.field("nearest_rule", pa.string()),
            pa.field("group", pa.int64()),
            pa.field("keeper", pa.bool_()),
            pa.field("error", pa.string()),
        ]
    ),
    "scores",
)

MANIFEST = with_meta(
    pa.schema(
        [
            pa.field("source", pa.string(), nullable=False),
            pa.field("destination", pa.string(), nullable=False),
            pa.field("dataset", pa.string(), nullable=False),
            pa.field("rel_path", pa.string(), nullable=False),
            # The source as encoded: apply skips a source whose size, mtime (local) or ETag (object
            # stores) differ, or whose bytes no longer hash to sha256 (the manifest is stale).
            pa.field("size", pa.int64()),
            pa.field("mtime", pa.timestamp("ns", tz="UTC")),
            pa.field("etag", pa.string()),
            pa.field("sha256", pa.string()),  # hex
            pa.field("group", pa.int64(), nullable=False),
            pa.field("keeper", pa.string(), nullable=False),
            pa.field("rule", pa.string(), nullable=False),
            pa.field("method", pa.string(), nullable=False),
            pa.field("similarity", pa.float64(), nullable=False),
            pa.field("matched", pa.string(), nullable=False),  # the file it matched most closely
            pa.field("reason", pa.string(), nullable=False),
        ]
    ),
    "manifest",
)


# The match state a run keeps in OUT/_state/match (`dupflow.match.state`): per rule, every class of identical
# keys by identity (its key and its representative's uri|size|mtime|etag), and the class pairs the rule
# accepted, by row number in that class table. The next run searches only classes it has not seen.
MATCH_CLASSES = with_meta(pa.schema([pa.field("identity", pa.binary(16), nullable=False)]), "match_classes")
MATCH_PAIRS = with_meta(
    pa.schema(
        [
            pa.field("a", pa.int64(), nullable=False),  # row of the class table; a < b
            pa.field("b", pa.int64(), nullable=False),
            pa.field("distance", pa.int64(), nullable=False),
            pa.field("similarity", pa.float64(), nullable=False),
            pa.field("orientation", pa.int64(), nullable=False),
        ]
    ),
    "match_pairs",
)

# apply: the files a run will move (images and the sidecars that move with them) and what happened.
APPLY_ACTIONS = with_meta(
    pa.schema(
        [
            pa.field("action", pa.int64(), nullable=False),
            pa.field("unit", pa.int64(), nullable=False),  # the image action this file moves with (itself for images)
            pa.field("kind", pa.string(), nullable=False),  # image | sidecar
            pa.field("source", pa.string(), nullable=False),
            pa.field("destination", pa.string(), nullable=False),
            pa.field("dataset", pa.string()),
            pa.field("rel_path", pa.string()),
            pa.field("size", pa.int64()),  # as planned; null: not known (sidecars)
            pa.field("mtime", pa.timestamp("ns", tz="UTC")),
            pa.field("etag", pa.string()),
            pa.field("sha256", pa.string()),
            pa.field("group", pa.int64()),
            pa.field("refused", pa.string()),  # why the plan will not move it (e.g. its destination escapes)
        ]
    ),
    "apply_actions",
)

APPLY_RESULTS = with_meta(
    pa.schema(
        [
            pa.field("action", pa.int64(), nullable=False),
            pa.field("unit", pa.int64(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("destination", pa.string(), nullable=False),  # where it went (or would go): suffixed on conflict
            # moved | already_moved | restored | already_restored | would_move | would_restore | skipped |
            # refused | failed
            pa.field("outcome", pa.string(), nullable=False),
            pa.field("reason", pa.string()),
            pa.field("size", pa.int64()),
            pa.field("sha256", pa.string()),
        ]
    ),
    "apply_results",
)


def manifest_metadata(duplicates_root: str, dataset_urls: dict[str, str]) -> dict[bytes, bytes]:
    """The manifest's schema metadata: apply confines destinations to `duplicates_root` and sources to
    their dataset's URL."""
    extra = {"duplicates_root": duplicates_root, "dataset_urls": json.dumps(dataset_urls, sort_keys=True)}
    meta: dict[bytes, bytes] = with_meta(MANIFEST, "manifest", extra).metadata
    return meta


def parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    """A table as Parquet bytes (zstd), in row groups of `row_group_size` rows (default: pyarrow's); the
    same table gives the same bytes."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=row_group_size)
    return buf.getvalue()
