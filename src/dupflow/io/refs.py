"""What listing produces: one `ImageRef` per file, the `ListingStats` of what it skipped, and the
version tokens (mtime, ETag) read from fsspec's file info."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["ImageRef", "ListingStats", "info_etag", "info_mtime_ns"]


@dataclass(frozen=True)
class ImageRef:
    """One listed file: what identifies it and the version token used for incremental runs."""

    uri: str
    dataset: str
    rel_path: str
    size: int
    mtime_ns: int | None
    etag: str | None


@dataclass
class ListingStats:
    """What listing skipped (and how it found what it did not skip), so a summary can say it."""

    listed: int = 0
    skipped_extension: int = 0  # neither an image extension nor (when sniffing) an image's first bytes
    skipped_hidden: int = 0
    skipped_links: int = 0  # links to files outside the root
    skipped_loops: int = 0  # links that never resolve (a -> b -> a) or lead back to a folder above them
    sniffed: int = 0  # of the listed: images by their first bytes, whose name has no image extension
    missing: int = 0  # of the listed: file-list entries that do not exist (each becomes an error row)
    repeated: int = 0  # file-list entries naming a file listed already (listed once)
    unreadable_dirs: list[str] | None = None

    @classmethod
    def merged(cls, parts: Iterable[ListingStats]) -> ListingStats:
        """One listing's counts from those of several datasets."""
        total = cls(unreadable_dirs=[])
        for part in parts:
            total.add(part)
        return total

    def add(self, other: ListingStats) -> None:
        """Fold another listing's counts into these."""
        self.listed += other.listed
        self.skipped_extension += other.skipped_extension
        self.skipped_hidden += other.skipped_hidden
        self.skipped_links += other.skipped_links
        self.skipped_loops += other.skipped_loops
        self.sniffed += other.sniffed
        self.missing += other.missing
        self.repeated += other.repeated
        self.unreadable_dirs = [*(self.unreadable_dirs or []), *(other.unreadable_dirs or [])]


def info_mtime_ns(info: dict[str, Any]) -> int | None:
    """A file's modification time from fsspec `info`, in ns rounded to microseconds (every store's grain)."""
    value = info.get("mtime", info.get("LastModified"))
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1_000_000) * 1000
    if isinstance(value, str):
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1_000_000) * 1000
    return round(float(value) * 1_000_000) * 1000


def info_etag(info: dict[str, Any]) -> str | None:
    """An object's ETag from fsspec `info`, without quotes; None for local files."""
    value = info.get("ETag") or info.get("etag")
    return str(value).strip('"') if value else None
