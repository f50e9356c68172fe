"""Turn listed files into encodings rows: read once, digest, decode once, run every encoder."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from PIL import Image

from dupflow.encode.hashing import ENCODERS, HashInput, encodings_schema, hash_input, sha256_digest
from dupflow.encode.settings import EncodeSettings
from dupflow.errors import ErrorKind, FileFailure
from dupflow.io.decoding import DecodedImage, configure_pillow, decode_image
from dupflow.io.fs import file_error_kind, open_fs
from dupflow.io.listing import ImageRef
from dupflow.schemas import read_meta, with_meta

if TYPE_CHECKING:
    from dupflow.encode.cnn import Embedder

__all__ = ["VERSIONS_META", "EncodeStats", "Shard", "encode_refs", "encoder_versions", "make_shards", "ref_key"]

_READ_CHUNK = 8 << 20
# The staged files' metadata key recording the encoder versions their values were made with (JSON).
VERSIONS_META = "encoder_versions"


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


def encoder_versions(encoders: Iterable[str]) -> dict[str, int]:
    """This release's version of each encoder: rows made with another version are re-encoded."""
    return {name: ENCODERS[name].version for name in encoders}


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
    """Encode files into a staged encodings table (with `dataset`); failures become error rows.

    With the cnn encoder, decoded pictures wait in batches (`Embedder.batch`) for the network, so each
    file is still read and decoded once."""
    configure_pillow(settings.max_pixels)
    start = time.process_time()
    schema = _staged_schema(settings)
    network = None
    if "cnn" in settings.encoders:  # the network's runtime is imported only where it runs
        from dupflow.encode.cnn import embedder

        network = embedder(settings.cnn_model, settings.cnn_threads, settings.cnn_runtime, settings.device)
    rows: list[dict[str, Any]] = []
    waiting: list[tuple[dict[str, Any], np.ndarray]] = []
    for ref in refs:
        row, picture = _encode_one(ref, settings, network)
        rows.append(row)
        if network is not None and picture is not None:
            _queue(network, row, picture, waiting)
            if len(waiting) >= network.batch:
                _embed(network, waiting)
    if network is not None and waiting:
        _embed(network, waiting)
    stats = EncodeStats(files=len(rows))
    for row in rows:
        if row["error"] is None:
            stats.encoded += 1
        else:
            stats.errors[row["error"]] += 1
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    stats.cpu_seconds = time.process_time() - start
    return pa.Table.from_pydict(columns, schema=schema), stats


def _staged_schema(settings: EncodeSettings) -> pa.Schema:
    """The staged table's schema; its metadata also records the encoder versions of its values."""
    schema = encodings_schema(settings.encoders, settings.value_settings(), staged=True)
    versions = json.dumps(encoder_versions(settings.encoders), sort_keys=True)
    return with_meta(schema, "encodings", {**read_meta(schema, "encodings"), VERSIONS_META: versions})


def _queue(network: Embedder, row: dict[str, Any], picture: Image.Image,
           waiting: list[tuple[dict[str, Any], np.ndarray]]) -> None:
    """Add one picture to the network's next batch; if preparing it raises, the row fails instead."""
    try:
        waiting.append((row, network.prepare(picture)))
    except Exception as exc:  # noqa: BLE001 - one picture the network cannot take fails its row, never the run
        _fail(row, _bug("encoder cnn", exc))


def _embed(network: Embedder, waiting: list[tuple[dict[str, Any], np.ndarray]]) -> None:
    """Run one batch through the network and fill the rows' `cnn` values (if the network raises,
    every row of the batch fails with ENCODER_FAILED); empties `waiting`."""
    try:
        vectors = network.embed([x for _, x in waiting])
    except Exception as exc:  # noqa: BLE001 - a network failure fails its batch, never the run
        for row, _ in waiting:
            _fail(row, _bug("encoder cnn", exc))
    else:
        # float16 in the store: half the bytes, cosines within 5e-5 of float32 (bench/results/cnn_speed.md)
        for (row, _), vector in zip(waiting, vectors.astype(np.float16), strict=True):
            row["cnn"] = vector
    waiting.clear()


def _bug(what: str, exc: Exception) -> FileFailure:
    """An exception our code raised on a file: ENCODER_FAILED (transient), naming the step and the exception."""
    return FileFailure(
        ErrorKind.ENCODER_FAILED,
        f"{what} raised {type(exc).__name__}: {exc} (a bug in dupflow or a library it uses, not a known kind "
        "of bad file: the next run retries it; if it persists, upgrade dupflow or report the bug with this file)",
    )


def _fail(row: dict[str, Any], failure: FileFailure) -> None:
    """Make `row` an error row: the failure's kind and message, no encoder values."""
    row["error"], row["error_message"] = failure.kind.value, failure.message
    for name in ENCODERS:
        row.pop(name, None)


def _encode_one(
    ref: ImageRef, settings: EncodeSettings, network: Embedder | None
) -> tuple[dict[str, Any], Image.Image | None]:
    """The row of one file, and the decoded picture when the network still has to embed it."""
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
    # the network needs a larger picture than the hashes; hashes still read it box-reduced to decode_size
    decode_size = max(settings.decode_size, network.spec.input_size if network else 0,
                      *(ENCODERS[e].decode_side for e in settings.encoders))
    try:
        data, digest = _read(ref, settings)
        row["exact"] = digest
        if data is None:
            raise FileFailure(
                ErrorKind.TOO_LARGE,
                f"{ref.size:,} bytes is above the limit of {settings.max_file_bytes:,}; raise --max-file-bytes",
            )
        decoded = _decode(data, settings, decode_size)
        row.update(width=decoded.width, height=decoded.height, format=decoded.format, mode=decoded.mode)
        row.update(_hashes(decoded, settings))
    except FileFailure as failure:
        _fail(row, failure)
        return row, None
    return row, decoded.image


def _decode(data: bytes, settings: EncodeSettings, decode_size: int) -> DecodedImage:
    """The decoded picture; a bad file raises its own kind, any exception decoding does not classify
    (our code or Pillow's, not the file) raises ENCODER_FAILED."""
    color = any(ENCODERS[e].needs_color for e in settings.encoders)
    try:
        return decode_image(data, mode="RGB" if color else "L", decode_size=decode_size, max_pixels=settings.max_pixels)
    except FileFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - our decoder failing on one file is recorded as encoder_failed
        raise _bug("decoding", exc) from None


def _hashes(decoded: DecodedImage, settings: EncodeSettings) -> dict[str, Any]:
    """Every non-network encoder's value, or ENCODER_FAILED naming the encoder that raised."""
    gray = hash_input(decoded.image if decoded.image.mode == "L" else decoded.image.convert("L"), settings.decode_size)
    given = HashInput(gray, settings.hash_size)
    values: dict[str, Any] = {}
    for name in settings.encoders:
        fn = ENCODERS[name].fn
        if fn is None:
            continue
        try:
            values[name] = fn(decoded, given)
        except Exception as exc:  # noqa: BLE001 - an encoder bug on one odd picture must not stop the run
            raise _bug(f"encoder {name}", exc) from None
    return values


def _read(ref: ImageRef, settings: EncodeSettings) -> tuple[bytes | None, bytes]:
    """The file's bytes (None when over the size limit) and their SHA-256, streamed once."""
    try:
        local = _local_path(ref.uri)
        if local is not None:  # this machine's disk: no filesystem object per file (~0.1 ms each)
            return _read_local(local, ref.size, settings.max_file_bytes)
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
    except Exception as exc:  # noqa: BLE001 - storage libraries raise many types; classified in one table
        kind = file_error_kind(exc)
        raise FileFailure(kind, f"cannot read {ref.uri}: {type(exc).__name__}: {exc}") from None


def _local_path(uri: str) -> str | None:
    """The path of a URI on this machine's disk (a plain path or file://), else None."""
    if "://" not in uri:
        return uri
    return uri[len("file://"):] if uri.startswith("file://") else None


def _read_local(path: str, listed_size: int, max_file_bytes: int) -> tuple[bytes | None, bytes]:
    """`_read` for a local file: the whole file when its listed size is within the limit (and it did not
    grow past it since), else its bytes hashed in chunks."""
    with open(path, "rb") as fh:
        if listed_size <= max_file_bytes:
            data = fh.read()
            if len(data) <= max_file_bytes:
                return data, sha256_digest(data)
            fh.seek(0)
        h = hashlib.sha256()
        while chunk := fh.read(_READ_CHUNK):
            h.update(chunk)
        return None, h.digest()
