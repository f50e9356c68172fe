"""The whole dedup job as one validated model: the flow's only parameter, `dupflow run`'s flags and
`dupflow.yaml` all become a `DedupConfig`. It nests one settings model per stage (encode, match,
apply, report), each declared once in its stage's `settings` module, and adds what only the job
knows: the datasets, the store, the outputs, the cluster."""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dupflow.apply.settings import ApplyOptions
from dupflow.encode.settings import EncodeSettings
from dupflow.errors import ConfigError
from dupflow.io.fs import open_fs, parse_storage_options, storage_error
from dupflow.io.secrets import SAFE_WAYS, secret_keys
from dupflow.io.sources import DatasetSource
from dupflow.match.settings import MatchSettings
from dupflow.report.settings import ReportSettings
from dupflow.settings import Preset, paths_of, setting, validated, with_paths

__all__ = [
    "ADDRESS_ENV",
    "ApplyStep",
    "ClusterConfig",
    "DatasetConfig",
    "DedupConfig",
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
    url: str = setting(help="a local folder, an s3:// prefix, any fsspec URL, or a .txt/.parquet file listing the "
                       "images", path=True)

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


class ApplyStep(ApplyOptions):
    """The apply step at the end of a run: the apply stage's options, a dry run unless `execute`."""

    execute: bool = setting(False, "apply for real: move the files (implies --apply)")
    journal: str | None = setting(None, "the apply journal [default: OUT/apply-journal]", metavar="URL",
                                  path=True)

    def options(self) -> ApplyOptions:
        """The apply stage's own options."""
        return ApplyOptions(**self.model_dump(exclude={"execute", "journal"}))


class DedupConfig(_Strict):
    """Datasets to encode into `store`, how to match them, where the outputs go, and whether to apply."""

    datasets: list[DatasetConfig] = Field(min_length=1)  # in keep priority order
    preset: Preset | None = None  # the encode and match sections' preset, unless they name their own
    store: str = setting(help="the encodings store: a local folder or S3 prefix", path=True)
    out: str = setting(help="where pairs, groups, scores, manifest, summary and report go", path=True)
    encode: EncodeSettings = Field(default_factory=EncodeSettings)
    match: MatchSettings = Field(default_factory=MatchSettings)
    storage_options: dict[str, Any] = Field(default_factory=dict)  # never credentials: see storage_secret
    storage_secret: str | None = None  # a Prefect Secret block holding a JSON mapping of credential options
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    apply: ApplyStep | None = None  # None: nothing moves; the manifest waits for review
    report: ReportSettings | None = Field(default_factory=ReportSettings)  # None: no report.html

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("preset"):
            return data
        out = dict(data)
        for section in ("encode", "match"):
            body = out.get(section) or {}
            if isinstance(body, dict) and "preset" not in body:
                out[section] = {**body, "preset": data["preset"]}
        return out

    @field_validator("storage_options", mode="before")
    @classmethod
    def _options(cls, value: Any) -> Any:
        return parse_storage_options(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _consistent(self) -> DedupConfig:
        names = [d.name for d in self.datasets]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"dataset name(s) {', '.join(twice)} used twice: give each dataset its own name")
        if self.match.datasets:
            raise ValueError("match.datasets comes from datasets: list the datasets there, in keep priority order")
        if self.encode.storage_options:
            raise ValueError("encode.storage_options: give storage options once, as storage_options")
        secrets = secret_keys(self.storage_options)
        if secrets:
            raise ValueError(f"storage_options {', '.join(secrets)} hold credentials, which must never be a flow "
                             f"parameter (Prefect stores parameters in its database): {SAFE_WAYS}")
        unknown = sorted(set(self.match.reference) - set(names))
        if self.apply is not None:
            unknown += sorted(set(self.apply.annotations) - set(names))
        if unknown:
            raise ValueError(f"dataset(s) {', '.join(unknown)} named in match.reference or apply.annotations are not "
                             f"among the datasets {names}")
        if set(self.match.reference) == set(names):
            raise ValueError("every dataset is a reference: at least one must be matched (leave it out of reference)")
        self.match_settings().parsed_rules(self.encode.hash_size, self.encode.encoders)
        return self

    def journal(self) -> str:
        """Where the apply step journals its moves."""
        if self.apply is not None and self.apply.journal:
            return self.apply.journal
        return f"{self.out.rstrip('/')}/apply-journal"

    def sources(self) -> list[DatasetSource]:
        return [DatasetSource(d.name, d.url) for d in self.datasets]

    def encode_settings(self, storage_options: dict[str, Any] | None = None) -> EncodeSettings:
        """The encode stage's settings, with the run's storage options (default: the config's)."""
        options = self.storage_options if storage_options is None else storage_options
        return self.encode.model_copy(update={"storage_options": dict(options)})

    def with_absolute_paths(self, cwd: str | None = None) -> DedupConfig:
        """This config with every relative local path made absolute against `cwd` (default: this
        process's folder), so that workers elsewhere read and write the same places."""
        base = cwd or os.getcwd()
        return with_paths(self, lambda p: p if not _relative_local(p) else os.path.normpath(os.path.join(base, p)))

    def relative_paths(self) -> list[str]:
        """The settings that hold a relative local path (`name=value`)."""
        return [f"{name}={value}" for name, value in paths_of(self) if _relative_local(value)]

    def match_settings(self, threads: int = 0) -> MatchSettings:
        """The match stage's settings: the datasets in keep priority order, `threads` search threads
        (0: the config's)."""
        return self.match.model_copy(update={"datasets": tuple(d.name for d in self.datasets),
                                             "threads": threads or self.match.threads})

    def report_settings(self) -> ReportSettings | None:
        """The report stage's settings (None: no report), with the encode stage's pixel limit."""
        if self.report is None:
            return None
        return self.report.model_copy(update={"max_pixels": self.encode.max_pixels})

    def run_name(self) -> str:
        """A flow-run name that says what the run matches: `train+val-vs-corpus-into-OUT`."""
        reference = self.match.reference
        matched = "+".join(d.name for d in self.datasets if d.name not in reference)
        against = f"-vs-{'+'.join(reference)}" if reference else ""
        out = self.out.rstrip("/").rsplit("/", 1)[-1] or self.out
        return f"dedup-{matched}{against}-into-{out}"


def _relative_local(path: str) -> bool:
    """A local path that is not absolute (no URL scheme, or file:// with a relative path)."""
    return "://" not in path and not os.path.isabs(os.path.expanduser(path))


def load_config(url: str, overrides: dict[str, Any] | None = None) -> DedupConfig:
    """Read a `dupflow.yaml` (local or remote), apply `overrides` on top (section by section), validate."""
    import yaml  # here: only a run from a config file reads YAML

    try:
        fs, path = open_fs(url, None)
        with fs.open(path, "rb") as f:
            body = yaml.safe_load(f)
    except OSError as exc:
        raise storage_error(exc, url, "read the config") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{url} is not valid YAML: {exc}") from exc
    if not isinstance(body, dict):
        raise ConfigError(f"{url} must hold a mapping of settings (datasets:, store:, out:, encode:, match:, ...)")
    return validate_config(merged(body, overrides or {}), source=url)


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`; a section given in both (a mapping) is merged key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def validate_config(body: dict[str, Any], source: str = "the settings") -> DedupConfig:
    """A DedupConfig from plain data, with every problem listed in one ConfigError."""
    return validated(DedupConfig, body, source)
