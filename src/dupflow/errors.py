"""Exceptions raised to callers, and the kinds of per-file failure recorded in the encodings."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ConfigError",
    "DupflowError",
    "ErrorKind",
    "FileFailure",
    "StorageError",
    "StoreError",
]


class DupflowError(Exception):
    """Base class: every message says what went wrong and what to do about it."""


class ConfigError(DupflowError):
    """A setting or argument is invalid."""


class StorageError(DupflowError):
    """A store (local folder, S3, any fsspec URL) could not be listed, read or written. `transient`:
    whether trying again can help (a network fault), or not (missing credentials, no such bucket)."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class StoreError(DupflowError):
    """An encodings store is incomplete, incompatible or damaged."""


class ErrorKind(StrEnum):
    """Machine-readable reason why one file has no encodings (the `error` column)."""

    EMPTY = "empty"  # zero-byte file
    NOT_AN_IMAGE = "not_an_image"  # no image format recognised the bytes
    TRUNCATED = "truncated"  # header fine, pixel data ends early
    CORRUPT = "corrupt"  # header fine, pixel data cannot be decoded
    DECOMPRESSION_BOMB = "decompression_bomb"  # declared pixels above the limit
    TOO_LARGE = "too_large"  # file bytes above the limit
    UNREADABLE = "unreadable"  # permission denied
    VANISHED = "vanished"  # listed, then gone before it was read
    READ_FAILED = "read_failed"  # any other storage failure while reading
    ENCODER_FAILED = "encoder_failed"  # our code (an encoder, or decoding) raised: a bug, not a bad file
    MISSING_CODEC = "missing_codec"  # an optional codec (pillow-heif, Pillow's AVIF) is not installed

    @property
    def transient(self) -> bool:
        """Whether a later run should try the file again even if it did not change."""
        return self in _TRANSIENT


_TRANSIENT = frozenset({
    ErrorKind.UNREADABLE, ErrorKind.VANISHED, ErrorKind.READ_FAILED, ErrorKind.DECOMPRESSION_BOMB,
    ErrorKind.ENCODER_FAILED, ErrorKind.MISSING_CODEC,
})


class FileFailure(Exception):
    """One file could not be encoded; becomes an error row, never stops a run."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
