"""128-bit digests that name files and classes in the match state, and the join that finds them again.

A class's identity (its key words and its representative's uri, size, mtime and etag) was held as bytes,
~75 a class: at 10M classes, joining them into strings, finding last run's among this run's (a hash join on
variable-length bytes) and writing them cost ~10 s a rule. A digest is 16 bytes, made in one compiled pass
over Arrow's buffers, and joined by a compiled open-addressing table. Two identities that differ share a
digest with a chance of about N^2 / 2^129 (1e-25 at 10M classes); the digests are not a defence against
file names crafted to collide.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

__all__ = ["class_digests", "file_digests", "index_of", "key_mix"]

_K0, _K1 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)
_K2, _K3 = np.uint64(0x165667B19E3779F9), np.uint64(0xD6E8FEB86659FD93)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SEED0, _SEED1 = np.uint64(0x243F6A8885A308D3), np.uint64(0x13198A2E03707344)
_NO_BYTES = np.zeros(0, np.uint8)


@njit(nogil=True, cache=True, inline="always")
def _rotl(x, r):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@njit(nogil=True, cache=True, inline="always")
def _fmix(x):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """splitmix64's finaliser: every input bit reaches every output bit."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@njit(nogil=True, cache=True, inline="always")
def _absorb(h0, h1, w):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """Two lanes, each multiplying the word by its own constant, then mixed into each other."""
    h0 = _rotl(h0 ^ (w * _K0), 31) * _K1
    h1 = _rotl(h1 ^ (w * _K2), 29) * _K3
    h0 += h1
    h1 += h0
    return h0, h1


@njit(nogil=True, cache=True, inline="always")
def _absorb_bytes(h0, h1, data, lo, hi):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """Bytes lo .. hi - 1 of `data`, their length first (so that two fields never run into each other)."""
    h0, h1 = _absorb(h0, h1, np.uint64(hi - lo))
    i = lo
    while i < hi:
        w = np.uint64(0)
        for k in range(min(8, hi - i)):
            w |= np.uint64(data[i + k]) << np.uint64(8 * k)
        h0, h1 = _absorb(h0, h1, w)
        i += 8
    return h0, h1


@njit(nogil=True, cache=True)
def _files(  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    uri_offsets, uri_data, etag_offsets, etag_data, etag_valid, size, mtime, out
):
    for r in range(len(size)):
        h0, h1 = _absorb_bytes(_SEED0, _SEED1, uri_data, uri_offsets[r], uri_offsets[r + 1])
        lo = etag_offsets[r]
        hi = etag_offsets[r + 1] if etag_valid[r] else lo  # a null etag is an empty one
        h0, h1 = _absorb_bytes(h0, h1, etag_data, lo, hi)
        h0, h1 = _absorb(h0, h1, np.uint64(size[r]))
        h0, h1 = _absorb(h0, h1, np.uint64(mtime[r]))
        out[r, 0] = _fmix(h0)
        out[r, 1] = _fmix(h1 ^ _rotl(h0, 17))


@njit(nogil=True, cache=True)
def _classes(rows, reps, keys, out):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    for c in range(len(reps)):
        h0, h1 = _absorb(rows[reps[c], 0], rows[reps[c], 1], np.uint64(keys.shape[1]))
        for k in range(keys.shape[1]):
            h0, h1 = _absorb(h0, h1, keys[c, k])
        out[c, 0] = _fmix(h0)
        out[c, 1] = _fmix(h1 ^ _rotl(h0, 17))


@njit(nogil=True, cache=True)
def _mix_rows(keys, out):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    for r in range(len(keys)):
        x = np.uint64(0)
        for k in range(keys.shape[1]):
            x = _fmix(x ^ keys[r, k])
        out[r] = x


@njit(nogil=True, cache=True)
def _join(values, among, slots):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    mask = np.uint64(len(slots) - 1)
    for j in range(len(among)):
        s = among[j, 0] & mask
        while slots[s] >= 0:
            k = slots[s]
            if among[k, 0] == among[j, 0] and among[k, 1] == among[j, 1]:
                break  # a repeated digest keeps its first row
            s = (s + np.uint64(1)) & mask
        if slots[s] < 0:
            slots[s] = j
    out = np.full(len(values), -1, np.int64)
    for i in range(len(values)):
        s = values[i, 0] & mask
        while slots[s] >= 0:
            k = slots[s]
            if among[k, 0] == values[i, 0] and among[k, 1] == values[i, 1]:
                out[i] = k
                break
            s = (s + np.uint64(1)) & mask
    return out


def _string_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The offsets (len + 1) and bytes of a string or binary array, without a copy."""
    wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    kind = np.int64 if wide else np.int32
    _, offsets, data = array.buffers()
    at = np.frombuffer(offsets, kind, count=len(array) + 1, offset=array.offset * np.dtype(kind).itemsize)
    return at, (np.frombuffer(data, np.uint8) if data is not None else _NO_BYTES)


def file_digests(table: pa.Table) -> np.ndarray:
    """(N, 2) uint64: each row's file identity (uri, size, mtime, etag; a null etag is an empty one, a
    null size or mtime is -1) as a digest."""
    size = pc.fill_null(table["size"], -1).to_numpy().astype(np.int64)
    mtime = pc.fill_null(pc.cast(table["mtime"], pa.int64()), -1).to_numpy().astype(np.int64)
    out = np.empty((len(size), 2), np.uint64)
    at = 0
    columns = table.select(["uri", "etag"])
    if pa.types.is_null(columns.schema.field("etag").type):  # a column of nulls only: no buffers to read
        columns = columns.set_column(1, "etag", pc.cast(columns["etag"], pa.string()))
    for batch in columns.to_batches():
        n = batch.num_rows
        uri_offsets, uri_data = _string_buffers(batch.column(0))
        etag = batch.column(1)
        etag_offsets, etag_data = _string_buffers(etag)
        valid = etag.is_valid().to_numpy(zero_copy_only=False)
        _files(uri_offsets, uri_data, etag_offsets, etag_data, valid, size[at:at + n], mtime[at:at + n],
               out[at:at + n])
        at += n
    return out


def class_digests(rows: np.ndarray, reps: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(C, 2) uint64: each class's identity (its key words, one row per class, and its representative's
    `file_digests` row) as a digest."""
    out = np.empty((len(reps), 2), np.uint64)
    _classes(rows, np.ascontiguousarray(reps, np.int64), np.ascontiguousarray(keys, np.uint64), out)
    return out


def key_mix(keys: np.ndarray) -> np.ndarray:
    """(N,) uint64: each row of (N, K) uint64 words mixed into one word (a sort key: equal rows mix alike)."""
    out = np.empty(len(keys), np.uint64)
    _mix_rows(np.ascontiguousarray(keys, np.uint64), out)
    return out


def index_of(values: np.ndarray, among: np.ndarray) -> np.ndarray:
    """(P,) int64: the row of `among` (C, 2) holding each digest of `values` (P, 2), -1 where none does."""
    slots = np.full(1 << max(4, int(2 * len(among)).bit_length()), -1, np.int32 if len(among) < 2**31 else np.int64)
    return np.asarray(_join(np.ascontiguousarray(values, np.uint64), np.ascontiguousarray(among, np.uint64), slots))
