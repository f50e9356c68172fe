"""Validated settings shared by the CLI, the library and the flows: one place parses them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dupflow.errors import ConfigError

__all__ = [
    "DEFAULT_ENCODERS",
    "DEFAULT_MAX_PIXELS",
    "DatasetSource",
    "EncodeSettings",
    "decode_size_for",
    "parse_datasets",
    "parse_storage_options",
    "settings_conflict",
]

DATASET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")

# pHash and dHash: the defaults that `dupflow match` needs; `exact` (SHA-256 of the bytes) is always on.
DEFAULT_ENCODERS: tuple[str, ...] = ("phash", "dhash")
# Pillow's own default guard is 89.5 M pixels; photographs above 250 MP are rare, bombs are not.
DEFAULT_MAX_PIXELS = 250_000_000
DEFAULT_MAX_FILE_BYTES = 1 << 30


@dataclass(frozen=True)
class DatasetSource:
    """A named image collection: a local folder, an s3:// prefix or any fsspec URL."""

    name: str
    url: str

    def __post_init__(self) -> None:
        if not DATASET_NAME.match(self.name):
            raise ConfigError(
                f"dataset name {self.name!r} is not allowed: use a letter first, then letters, "
                "digits, '_', '-' or '.' (it becomes a Parquet partition folder), e.g. train=./data/train"
            )
        if not self.url:
            raise ConfigError(f"dataset {self.name!r} has no URL: write it as {self.name}=PATH_OR_URL")

    @classmethod
    def parse(cls, text: str) -> DatasetSource:
        """Parse `NAME=URL`; a bare URL is named after its last path component."""
        name, sep, url = text.partition("=")
        if sep and "/" not in name and ":" not in name:
            return cls(name=name, url=url)
        base = text.rstrip("/").rsplit("/", 1)[-1]
        derived = re.sub(r"[^A-Za-z0-9_.-]", "_", base)
        if not derived or not derived[0].isalpha():
            derived = f"d_{derived}"
        return cls(name=derived, url=text)


def parse_datasets(
    specs: list[str] | tuple[str, ...], root: str | None = None, dirs: list[str] | tuple[str, ...] = ()
) -> list[DatasetSource]:
    """Datasets from `NAME=URL` items plus the `--root R --dirs a b` habit; names must be unique."""
    sources = [DatasetSource.parse(s) for s in specs]
    if dirs and not root:
        raise ConfigError("--dirs needs --root: dupflow encode --root ~/dataset --dirs dir_1 dir_2")
    if root:
        base = root.rstrip("/")
        for d in dirs or ():
            sources.append(DatasetSource.parse(f"{d.strip('/').replace('/', '_')}={base}/{d.strip('/')}"))
        if not dirs:
            sources.append(DatasetSource.parse(base))
    if not sources:
        raise ConfigError("no dataset given: add --dataset NAME=URL (repeatable) or --root DIR [--dirs ...]")
    seen: set[str] = set()
    for s in sources:
        if s.name in seen:
            raise ConfigError(f"dataset name {s.name!r} is used twice: give each --dataset a distinct NAME=")
        seen.add(s.name)
    return sources


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


def decode_size_for(hash_size: int) -> int:
    """The reduced-scale decode's smallest side for a hash size (64 px for 64-bit hashes)."""
    return 8 * hash_size


@dataclass(frozen=True)
class EncodeSettings:
    """How files are turned into encodings. Settings that change hash values are fixed per store."""

    encoders: tuple[str, ...] = DEFAULT_ENCODERS
    hash_size: int = 8
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    storage_options: dict[str, Any] = field(default_factory=dict)
    cnn_model: str | None = None  # with the cnn encoder: a model spec (dupflow.cnn); None: the store's or the default
    torch_threads: int = 0  # PyTorch threads per encoding process; 0: PyTorch's default (every core)

    def __post_init__(self) -> None:
        from dupflow.hashing import ENCODERS  # the registry validates names

        unknown = [e for e in self.encoders if e not in ENCODERS]
        if unknown:
            raise ConfigError(f"unknown encoder(s) {', '.join(unknown)}; choose from {', '.join(sorted(ENCODERS))}")
        if self.hash_size not in (8, 16):
            raise ConfigError(f"hash_size must be 8 (64-bit hashes) or 16 (256-bit), not {self.hash_size}")
        if self.max_pixels < 1 or self.max_file_bytes < 1:
            raise ConfigError("max_pixels and max_file_bytes must be positive")
        if self.torch_threads < 0:
            raise ConfigError("torch_threads must be 0 (PyTorch's default) or more")
        if "cnn" in self.encoders or self.cnn_model is not None:
            from dupflow.cnn import ModelSpec, require_torch

            ModelSpec.parse(self.cnn_model)
            if "cnn" in self.encoders:
                require_torch()

    @property
    def decode_size(self) -> int:
        """Smallest side the reduced-scale decode keeps; fixed by hash_size so stores stay comparable."""
        return decode_size_for(self.hash_size)

    def value_settings(self) -> dict[str, Any]:
        """The settings that change encoded values: a store refuses rows made with others. With the cnn
        encoder they name the model (weights digest included) and its embedding size."""
        values: dict[str, Any] = {"hash_size": self.hash_size, "decode_size": self.decode_size}
        if "cnn" in self.encoders:
            from dupflow.cnn import ModelSpec, describe

            values.update(describe(ModelSpec.parse(self.cnn_model)))
        return values


# Settings two encodings must share to live in one store (cnn_* only where both have embeddings).
_SHARED_VALUES = ("hash_size", "decode_size")


def settings_conflict(have: dict[str, Any], want: dict[str, Any]) -> str | None:
    """Why encodings made with `want` cannot join encodings made with `have`, or None."""
    for key in _SHARED_VALUES:
        if key in have and key in want and have[key] != want[key]:
            return f"{key} {have[key]} vs {want[key]}: use another store or the same --hash-size"
    if "cnn_id" in have and "cnn_id" in want and have["cnn_id"] != want["cnn_id"]:
        return (f"cnn embeddings from {have.get('cnn_model')} ({have['cnn_id']}) vs {want.get('cnn_model')} "
                f"({want['cnn_id']}): use another store, or --cnn-model {have.get('cnn_model')}")
    return None
