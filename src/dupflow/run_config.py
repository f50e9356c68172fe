"""The whole dedup job as one validated model: the flow's only parameter, `dupflow run`'s flags and
`dupflow.yaml` all become a `DedupConfig`, and every check of `EncodeSettings`/`MatchSettings` runs on it."""

from __future__ import annotations

import os
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dupflow.apply import ApplyOptions
from dupflow.config import (
    DEFAULT_ENCODERS,
    DEFAULT_MAX_PIXELS,
    DatasetSource,
    EncodeSettings,
    parse_storage_options,
)
from dupflow.errors import ConfigError
from dupflow.fs import open_fs, storage_error
from dupflow.match_job import MatchSettings
from dupflow.report import ReportSettings

__all__ = [
    "ADDRESS_ENV",
    "ApplyConfig",
    "ClusterConfig",
    "DatasetConfig",
    "DedupConfig",
    "ReportConfig",
    "load_config",
    "validate_config",
]

# Where production points every run at its Dask scheduler without naming it in each deployment.
ADDRESS_ENV = "DUPFLOW_DASK_ADDRESS"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    """A named dataset: a local folder, an s3:// prefix or any fsspec URL."""

    name: str
    url: str

    @model_validator(mode="after")
    def _valid(self) -> DatasetConfig:
        DatasetSource(self.name, self.url)
        return self

    @classmethod
    def parse(cls, text: str) -> DatasetConfig:
        """`NAME=URL`, or a bare URL named after its last component."""
        source = DatasetSource.parse(text)
        return cls(name=source.name, url=source.url)


class ClusterConfig(_Strict):
    """Where tasks run: an existing Dask scheduler (`address`), else a local cluster started per run."""

    address: str | None = Field(default_factory=lambda: os.environ.get(ADDRESS_ENV) or None)
    workers: int | None = Field(default=None, ge=1)  # local cluster processes; default: CPU count
    threads_per_worker: int = Field(default=1, ge=1)
    memory_limit: str = "auto"  # per local worker, e.g. "4GiB"

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value and not re.match(r"^(tcp|tls|ucx|inproc)://[^/\s]+$", value):
            raise ValueError(f"{value!r} is not a Dask scheduler address: write it as tcp://HOST:8786")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ClusterConfig:
        if self.address and self.workers:
            raise ValueError("cluster.workers sizes a local cluster: drop it when cluster.address is set")
        return self


class ApplyConfig(_Strict):
    """Apply the manifest at the end of the run: a dry run unless `execute`; journaled and resumable."""

    execute: bool = False
    journal: str | None = None  # default OUT/apply-journal
    sidecars: list[str] = Field(default_factory=list)  # e.g. [.txt, .json]
    annotations: dict[str, str] = Field(default_factory=dict)  # dataset -> annotation folder URL
    on_conflict: Literal["skip", "suffix"] = "skip"
    threads: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _valid(self) -> ApplyConfig:
        try:
            self.options()
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return self

    def options(self) -> ApplyOptions:
        return ApplyOptions(sidecars=tuple(self.sidecars), annotations=dict(self.annotations),
                            on_conflict=self.on_conflict, threads=self.threads)


class ReportConfig(_Strict):
    """The HTML report written at the end of the run (OUT/report.html); see `dupflow report --help`."""

    thumbnails: int = Field(default=20_000, ge=0)
    thumb_size: int = Field(default=160, ge=16, le=1024)
    thumb_format: Literal["webp", "jpeg"] = "webp"
    plot_points: int = Field(default=5_000, ge=0)
    extra_scores: str | None = None  # Parquet/CSV keyed by uri (or rel_path [+ dataset])
    extra_score_cols: list[str] = Field(default_factory=list)
    originals: Literal["auto", "none", "presign"] = "auto"
    presign_seconds: int = Field(default=3600, ge=1, le=604800)
    threads: int = Field(default=8, ge=1)

    def settings(self, max_pixels: int) -> ReportSettings:
        return ReportSettings(thumbnails=self.thumbnails, thumb_size=self.thumb_size, thumb_format=self.thumb_format,
                              plot_points=self.plot_points, extra_scores=self.extra_scores,
                              extra_score_cols=tuple(self.extra_score_cols), originals=self.originals,
                              presign_seconds=self.presign_seconds, max_pixels=max_pixels, threads=self.threads)


class DedupConfig(_Strict):
    """Datasets to encode into `store`, how to match them, where the outputs go, and whether to apply."""

    datasets: list[DatasetConfig] = Field(min_length=1)  # in keep priority order
    store: str
    out: str
    encoders: list[str] = Field(default_factory=lambda: list(DEFAULT_ENCODERS))
    hash_size: Literal[8, 16] = 8
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    shard_size: int | None = Field(default=None, ge=1)  # files per encode task; default: auto
    cnn_model: str | None = None  # with the cnn encoder: efficientnet-lite0 (default), ...=PATH, exported=PATH.pt2
    rules: list[str] = Field(default_factory=list)  # empty: exact, phash<=10
    keep: list[str] = Field(default_factory=list)  # empty: dataset resolution size oldest shortest-path path
    reference: list[str] = Field(default_factory=list)
    orientations: bool = False
    duplicates_root: str | None = None
    examples: int = Field(default=1000, ge=0)
    match_blocks: int = Field(default=0, ge=0)  # per rule; 0: two per worker thread
    embeddings: str | None = None  # your own Parquet of embeddings (uri + a list column) for cosine rules
    embed_col_name: str = "embedding"
    allow_missing_embeddings: bool = False
    storage_options: dict[str, Any] = Field(default_factory=dict)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    apply: ApplyConfig | None = None  # None: nothing moves; the manifest waits for review
    report: ReportConfig | None = Field(default_factory=ReportConfig)  # None: no report.html

    @field_validator("encoders")
    @classmethod
    def _encoders(cls, value: list[str]) -> list[str]:
        return [e for e in value if e != "exact"]  # SHA-256 of the bytes is always computed

    @model_validator(mode="after")
    def _consistent(self) -> DedupConfig:
        names = [d.name for d in self.datasets]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"dataset name(s) {', '.join(twice)} used twice: give each dataset its own name")
        unknown = sorted(set(self.reference) - set(names))
        if self.apply is not None:
            unknown += sorted(set(self.apply.annotations) - set(names))
        if unknown:
            raise ValueError(f"dataset(s) {', '.join(unknown)} named in reference or apply.annotations are not among "
                             f"the datasets {names}")
        if set(self.reference) == set(names):
            raise ValueError("every dataset is a reference: at least one must be matched (leave it out of reference)")
        self.encode_settings()
        self.match_settings().parsed_rules(self.hash_size, "cnn" in self.encoders)
        return self

    def journal(self) -> str:
        """Where the apply step journals its moves."""
        if self.apply is not None and self.apply.journal:
            return self.apply.journal
        return f"{self.out.rstrip('/')}/apply-journal"

    def sources(self) -> list[DatasetSource]:
        return [DatasetSource(d.name, d.url) for d in self.datasets]

    def encode_settings(self) -> EncodeSettings:
        return EncodeSettings(encoders=tuple(self.encoders), hash_size=self.hash_size, max_pixels=self.max_pixels,
                              storage_options=dict(self.storage_options), cnn_model=self.cnn_model)

    def match_settings(self, threads: int = 0) -> MatchSettings:
        return MatchSettings(rules=tuple(self.rules), keep=tuple(self.keep),
                             datasets=tuple(d.name for d in self.datasets), reference=tuple(self.reference),
                             orientations=self.orientations, duplicates_root=self.duplicates_root,
                             examples=self.examples, threads=threads, blocks=self.match_blocks,
                             embeddings=self.embeddings, embed_col_name=self.embed_col_name,
                             allow_missing_embeddings=self.allow_missing_embeddings)

    def run_name(self) -> str:
        """A flow-run name that says what the run matches: `train+val-vs-corpus-into-OUT`."""
        matched = "+".join(d.name for d in self.datasets if d.name not in self.reference)
        against = f"-vs-{'+'.join(self.reference)}" if self.reference else ""
        out = self.out.rstrip("/").rsplit("/", 1)[-1] or self.out
        return f"dedup-{matched}{against}-into-{out}"


def load_config(url: str, overrides: dict[str, Any] | None = None) -> DedupConfig:
    """Read a `dupflow.yaml` (local or remote), apply `overrides` on top, validate."""
    try:
        fs, path = open_fs(url, None)
        with fs.open(path, "rb") as f:
            body = yaml.safe_load(f)
    except OSError as exc:
        raise storage_error(exc, url, "read the config") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{url} is not valid YAML: {exc}") from exc
    if not isinstance(body, dict):
        raise ConfigError(f"{url} must hold a mapping of settings (datasets:, store:, out:, ...)")
    return validate_config({**body, **(overrides or {})}, source=url)


def validate_config(body: dict[str, Any], source: str = "the settings") -> DedupConfig:
    """A DedupConfig from plain data, with every problem listed in one ConfigError."""
    if isinstance(body.get("storage_options"), list):
        body = {**body, "storage_options": parse_storage_options(body["storage_options"])}
    try:
        return DedupConfig.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings in {source}: {problems}") from exc
