"""Named datasets: where a run's images come from."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from dupflow.errors import ConfigError

__all__ = ["FILE_LIST_SUFFIXES", "DatasetSource", "parse_datasets"]

DATASET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")
# A dataset URL ending in one of these names a list of its files rather than a folder to walk.
FILE_LIST_SUFFIXES = (".txt", ".parquet")


@dataclass(frozen=True)
class DatasetSource:
    """A named image collection: a local folder, an s3:// prefix or any fsspec URL; or a file listing its
    images, when the URL ends in .txt (one path or URL a line) or .parquet (a `uri` or `path` column)."""

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

    @property
    def is_file_list(self) -> bool:
        """Whether `url` names a file listing the dataset's images (see `FILE_LIST_SUFFIXES`), not a folder."""
        return self.url.rstrip("/").lower().endswith(FILE_LIST_SUFFIXES)

    @classmethod
    def parse(cls, text: str) -> DatasetSource:
        """Parse `NAME=URL`; a bare URL is named after its last path component (a file list's without
        its suffix: `lists/train.txt` is `train`)."""
        name, sep, url = text.partition("=")
        if sep and "/" not in name and ":" not in name:
            return cls(name=name, url=url)
        base = text.rstrip("/").rsplit("/", 1)[-1]
        stem, suffix = os.path.splitext(base)
        if suffix.lower() in FILE_LIST_SUFFIXES and stem:
            base = stem
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
