"""Listing: recursion, extension filter, hidden files, symlinks, bad roots, dataset parsing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dupflow.errors import ConfigError
from dupflow.io.listing import ListingStats, list_dataset
from dupflow.io.sources import DatasetSource, parse_datasets
from imagegen import natural, write


def _names(root: Path, stats: ListingStats | None = None) -> list[str]:
    return sorted(r.rel_path for r in list_dataset(DatasetSource("d", str(root)), stats=stats))


def test_lists_recursively_with_case_insensitive_extensions(tmp_path: Path) -> None:
    for rel in ["a.jpg", "b.JPEG", "deep/x/c.png", "d.WebP", "e.bmp", "f.tif", "g.TIFF", "h.gif"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("no")
    (tmp_path / "raw.cr2").write_bytes(b"no")
    stats = ListingStats()
    assert _names(tmp_path, stats) == ["a.jpg", "b.JPEG", "d.WebP", "deep/x/c.png", "e.bmp", "f.tif", "g.TIFF", "h.gif"]
    assert stats.skipped_extension == 2


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    write(tmp_path / "ok.jpg", natural(1, 32, 32))
    write(tmp_path / ".hidden.jpg", natural(2, 32, 32))
    write(tmp_path / ".cache" / "in_hidden_dir.jpg", natural(3, 32, 32))
    assert _names(tmp_path) == ["ok.jpg"]


def test_symlinks_are_followed_only_inside_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    write(root / "real.jpg", natural(1, 32, 32))
    write(outside / "secret.jpg", natural(2, 32, 32))
    os.symlink(root / "real.jpg", root / "inside_link.jpg")
    os.symlink(outside / "secret.jpg", root / "escape_link.jpg")
    os.symlink(outside, root / "escape_dir")
    stats = ListingStats()
    assert _names(root, stats) == ["inside_link.jpg", "real.jpg"]
    assert stats.skipped_links == 1


def test_listing_carries_size_and_mtime(tmp_path: Path) -> None:
    p = write(tmp_path / "a.png", natural(1, 40, 30))
    (ref,) = list(list_dataset(DatasetSource("d", str(tmp_path))))
    assert ref.uri == str(p)
    assert ref.size == p.stat().st_size
    assert ref.etag is None
    assert ref.mtime_ns is not None
    assert abs(ref.mtime_ns - p.stat().st_mtime_ns) < 2_000


def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder or prefix that exists"):
        list(list_dataset(DatasetSource("d", str(tmp_path / "nope"))))


def test_dataset_specs_parse_names_roots_and_dirs() -> None:
    assert DatasetSource.parse("train=s3://b/x=1") == DatasetSource("train", "s3://b/x=1")
    assert DatasetSource.parse("/data/val/").name == "val"
    got = parse_datasets([], root="/r", dirs=["a", "b/c"])
    assert got == [DatasetSource("a", "/r/a"), DatasetSource("b_c", "/r/b/c")]
    with pytest.raises(ConfigError, match="used twice"):
        parse_datasets(["x=/a", "x=/b"])
    with pytest.raises(ConfigError, match="not allowed"):
        DatasetSource.parse("9lives=/a")
    with pytest.raises(ConfigError, match="--root"):
        parse_datasets([], dirs=["a"])
