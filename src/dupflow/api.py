"""dupflow from Python: the command line's stages as functions, run in this process, with the results as
Arrow tables (`.to_pandas()`, `polars.from_arrow`, DuckDB read them as they are).

    import dupflow

    dupflow.encode_images({"train": "data/train", "val": "data/val"}, "store")
    found = dupflow.find_duplicates("store", "out", reference=["val"])
    found.groups.to_pandas()                  # one row per image in a group, its keeper marked
    plan = dupflow.apply_moves(found.manifest_url)             # a dry run: nothing moves
    done = dupflow.apply_moves(found.manifest_url, execute=True)
    dupflow.undo_moves(done.journal, execute=True)              # every file back where it was

Each stage takes its settings as the same model the command line and the flow use (`EncodeSettings`,
`MatchSettings`, `ApplyOptions`, `ReportSettings`), or as keyword arguments of that model
(`encode_images(..., preset="thorough")`, `find_duplicates(..., rules=["phash<=8"])`), validated alike:
a bad value raises `ConfigError` naming it. Nothing here needs Prefect or Dask.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from dupflow.errors import ConfigError
from dupflow.io.sources import DatasetSource, parse_datasets
from dupflow.settings import validated

if TYPE_CHECKING:
    import pyarrow as pa

    from dupflow.apply.runner import ApplyReport
    from dupflow.apply.settings import ApplyOptions
    from dupflow.encode.settings import EncodeSettings
    from dupflow.match.settings import MatchSettings
    from dupflow.report.build import ReportResult
    from dupflow.report.settings import ReportSettings
    from dupflow.store.encode_job import EncodeReport

__all__ = ["Datasets", "Duplicates", "apply_moves", "encode_images", "find_duplicates", "open_duplicates",
           "undo_moves", "write_report"]

M = TypeVar("M", bound=BaseModel)

# {"train": "data/train"}, or ["train=data/train", DatasetSource(...)], or one folder (named after itself).
Datasets = Mapping[str, str] | Sequence[DatasetSource | str] | str


def encode_images(datasets: Datasets, store: str, settings: EncodeSettings | None = None, *, workers: int | None = None,
                  storage_options: dict[str, Any] | None = None, **changes: Any) -> EncodeReport:
    """Encode the datasets' images into the store, incrementally (unchanged files are not decoded again);
    `workers` processes (default: the CPU count). The first dataset's copy is kept when matching."""
    from dupflow.encode.cnn import check_device
    from dupflow.encode.settings import EncodeSettings
    from dupflow.store.encode_job import run_encode
    from dupflow.store.lease import StoreLease

    chosen = _settings(EncodeSettings, settings, changes).model_copy(update={"storage_options": storage_options or {}})
    check_device(chosen)
    with StoreLease(store, chosen.storage_options):
        return run_encode(_sources(datasets), store, chosen, workers=workers or os.cpu_count() or 1)


def find_duplicates(store: str, out: str, settings: MatchSettings | None = None, *,
                    storage_options: dict[str, Any] | None = None, **changes: Any) -> Duplicates:
    """Match the store's encodings (within and across its datasets, by the settings' rules) and write
    pairs, groups, scores, manifest and summary into `out`, as `dupflow match` does. Nothing moves."""
    from dupflow.match.job import match_store
    from dupflow.match.settings import MatchSettings
    from dupflow.store.lease import StoreLease

    chosen = _settings(MatchSettings, settings, changes)
    with StoreLease(store, storage_options):  # the store cannot change while it is matched
        report = match_store(store, out, chosen, storage_options)
    return Duplicates(report.out, storage_options or {}, seconds=report.seconds)


def open_duplicates(out: str, *, storage_options: dict[str, Any] | None = None) -> Duplicates:
    """The results of a finished match run in `out` (by any of the API, `dupflow match` or `dupflow run`)."""
    found = Duplicates(out, storage_options or {})
    found.summary  # noqa: B018 - fails now, naming the command, where `out` holds no finished run
    return found


@dataclass(frozen=True)
class Duplicates:
    """A match run's results in `out`, each table read when first used."""

    out: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)
    seconds: dict[str, float] = field(default_factory=dict, compare=False)

    @cached_property
    def summary(self) -> dict[str, Any]:
        """summary.json: totals, per dataset, across datasets (train/val leakage), settings."""
        from dupflow.report.outputs import read_summary

        return read_summary(self.out, self.storage_options)

    @cached_property
    def pairs(self) -> pa.Table:
        """Every accepted pair: a, b, method, distance, similarity in [0, 1]."""
        return self._table("pairs")

    @cached_property
    def groups(self) -> pa.Table:
        """Every image in a group of duplicates, with its group, its keeper and why it is kept."""
        return self._table("groups")

    @cached_property
    def scores(self) -> pa.Table:
        """Every image with its uniqueness score and its nearest neighbour."""
        return self._table("scores")

    @cached_property
    def manifest(self) -> pa.Table:
        """The files to move (every non-keeper of a group), source and destination: review it, then
        `apply_moves(self.manifest_url)`."""
        return self._table("manifest")

    @property
    def manifest_url(self) -> str:
        return f"{self.out.rstrip('/')}/manifest.parquet"

    @property
    def group_count(self) -> int:
        return int(self.summary["totals"]["groups"])

    def _table(self, name: str) -> pa.Table:
        from dupflow.report.outputs import read_output_table

        self.summary  # noqa: B018 - a run without summary.json is unfinished: say so, not "no such table"
        return read_output_table(self.out, name, self.storage_options)


def apply_moves(manifest: str, settings: ApplyOptions | None = None, *, journal: str | None = None,
                execute: bool = False, resume: bool = False, storage_options: dict[str, Any] | None = None,
                **changes: Any) -> ApplyReport:
    """Move the manifest's files into the duplicates folder, journaled; a dry run unless `execute` (the
    report's `results` table says what would happen to each file). `journal` defaults to
    apply-journal beside the manifest; `resume` finishes a killed run first."""
    from dupflow.apply.runner import apply_manifest
    from dupflow.apply.settings import ApplyOptions, default_journal

    chosen = _settings(ApplyOptions, settings, changes)
    return apply_manifest(manifest, journal or default_journal(manifest), chosen, execute=execute, resume=resume,
                          storage_options=storage_options)


def undo_moves(journal: str, *, execute: bool = False, resume: bool = False, threads: int = 8,
               storage_options: dict[str, Any] | None = None) -> ApplyReport:
    """Put every file the journal's runs moved back where it was; a dry run unless `execute`."""
    from dupflow.apply.runner import undo_journal

    return undo_journal(journal, execute=execute, resume=resume, threads=threads, storage_options=storage_options)


def write_report(out: str, settings: ReportSettings | None = None, *, store: str | None = None,
                 storage_options: dict[str, Any] | None = None, **changes: Any) -> ReportResult:
    """Write OUT/report.html, the self-contained page to review the match run in `out` (its store is the
    one its summary names, unless `store` is given)."""
    from dupflow.report.build import write_report as build_report
    from dupflow.report.settings import ReportSettings

    return build_report(out, _settings(ReportSettings, settings, changes), store, storage_options=storage_options)


def _settings(model: type[M], given: M | None, changes: dict[str, Any]) -> M:
    """`given` (default: the model's defaults) with `changes` applied and validated like a config file's."""
    if given is not None and not isinstance(given, model):
        raise ConfigError(f"settings must be a {model.__name__}, not {type(given).__name__}")
    if not changes:
        return given if given is not None else validated(model, {}, f"{model.__name__}()")
    base = given.model_dump(exclude_unset=True) if given is not None else {}
    return validated(model, {**base, **changes}, f"{model.__name__} keyword arguments")


def _sources(datasets: Datasets) -> list[DatasetSource]:
    """Datasets as a mapping of name to URL, a list of NAME=URL strings or DatasetSources, or one URL; checked
    as the command line's --dataset values are."""
    if isinstance(datasets, str):
        specs = [datasets]
    elif isinstance(datasets, Mapping):
        specs = [f"{name}={url}" for name, url in datasets.items()]
    else:
        specs = [f"{d.name}={d.url}" if isinstance(d, DatasetSource) else d for d in datasets]
    return parse_datasets(specs)
