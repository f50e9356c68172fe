"""Where an encodings store is and its commit record (STORE/_dupflow/store.json), read without pyarrow:
`dupflow info` reads only this, and `dupflow.store.encodings.EncodingsStore` builds on it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dupflow.errors import StoreError
from dupflow.io.fs import join, open_fs, storage_error, to_uri

__all__ = ["ENCODINGS_DIR", "RECORD_PATH", "StoreRecord", "StoreRoot", "made_versions"]

ENCODINGS_DIR = "encodings"
RECORD_PATH = "_dupflow/store.json"


@dataclass
class StoreRecord:
    """The commit record: what the store holds and whether its last run finished. Each dataset's entry
    names its files and the encoders their rows have, with the version of each (`encoder_versions`):
    a run re-encodes rows whose encoder has another version in this release."""

    state: str = "complete"
    run_id: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    encoders: list[str] = field(default_factory=list)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    writer: dict[str, Any] = field(default_factory=dict)
    updated_at: str = ""

    def to_json(self) -> bytes:
        body = {"format": "dupflow-store", "version": 1, **self.__dict__}
        return json.dumps(body, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> StoreRecord:
        body = json.loads(data)
        if body.get("format") != "dupflow-store":
            raise StoreError("store.json is not a dupflow store record")
        return cls(**{k: body[k] for k in cls.__dataclass_fields__ if k in body})

    def dataset_versions(self, name: str) -> dict[str, int]:
        """The version of each encoder that dataset `name`'s rows were made with."""
        info = self.datasets[name]
        return made_versions(info.get("encoder_versions", {}), info.get("encoders", self.encoders))


def made_versions(recorded: Mapping[str, Any], encoders: Iterable[str]) -> dict[str, int]:
    """The version each encoder's values were made with, as recorded; a store or staged file from
    before versions were recorded holds version 1 of every encoder."""
    return {e: int(recorded.get(e, 1)) for e in encoders}


class StoreRoot:
    """An encodings store at `url`: its filesystem, its paths and its commit record."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = open_fs(self.url, self.storage_options)
        self.root = self.root.rstrip("/")

    def path(self, rel: str) -> str:
        """The path of `rel` inside the store."""
        return join(self.root, rel)

    @property
    def encodings_uri(self) -> str:
        """Where the Parquet encodings live (point pyarrow/pandas/DuckDB here)."""
        return to_uri(self.fs, self.path(ENCODINGS_DIR))

    def record(self) -> StoreRecord | None:
        """The commit record, or None for a new (empty) store."""
        try:
            data = self.fs.cat_file(self.path(RECORD_PATH))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise storage_error(exc, to_uri(self.fs, self.path(RECORD_PATH)), "read") from exc
        return StoreRecord.from_json(data)
