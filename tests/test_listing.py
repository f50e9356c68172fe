"""Listing: recursion, extension filter, content sniffing, hidden files, symlinks, bad roots, dataset parsing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from fsspec.implementations.local import LocalFileSystem

from dupflow.errors import ConfigError
from dupflow.io.listing import ListingStats, list_dataset
from dupflow.io.sources import DatasetSource, parse_datasets
from imagegen import encode, natural, write


def _names(root: Path, stats: ListingStats | None = None) -> list[str]:
    return sorted(r.rel_path for r in list_dataset(DatasetSource("d", str(root)), stats=stats))


def test_lists_recursively_with_case_insensitive_extensions(tmp_path: Path) -> None:
    images = ["a.jpg", "b.JPEG", "deep/x/c.png", "d.WebP", "e.bmp", "f.tif", "g.TIFF", "h.gif", "i.ppm", "j.PGM",
              "k.pbm", "l.pnm", "m.MPO", "n.heic", "o.HEIF", "p.avif"]
    for rel in images:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("no")
    (tmp_path / "raw.cr2").write_bytes(b"no")
    stats = ListingStats()
    assert _names(tmp_path, stats) == sorted(images)
    assert stats.skipped_extension == 2


def _unnamed_images(root: Path) -> None:
    """Images whose names say nothing (no extension, another one), beside files that are not images."""
    picture = natural(4, 48, 32)
    write(root / "named.jpg", picture)
    (root / "camera_dump").write_bytes(encode(picture, "JPEG"))
    (root / "deep" / "scan.dat").parent.mkdir()
    (root / "deep" / "scan.dat").write_bytes(encode(picture, "PNG"))
    (root / "deep" / "frame.raw").write_bytes(encode(picture, "PPM"))
    (root / "README").write_text("a text file, not an image\n")
    (root / "notes.txt").write_text("BM is not enough to be a bitmap\n")
    (root / ".hidden").write_bytes(encode(picture, "JPEG"))


def test_files_without_an_image_extension_are_listed_by_content_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unnamed_images(tmp_path)
    plain = ListingStats()
    assert _names(tmp_path, plain) == ["named.jpg"]
    assert (plain.skipped_extension, plain.sniffed) == (5, 0)
    read: list[str] = []
    cat_ranges = LocalFileSystem.cat_ranges

    def spy(self: LocalFileSystem, paths: list[str], *args: Any, **kwargs: Any) -> list[Any]:
        read.extend(paths)
        return list(cat_ranges(self, paths, *args, **kwargs))

    monkeypatch.setattr(LocalFileSystem, "cat_ranges", spy)
    sniffed = ListingStats()
    refs = list(list_dataset(DatasetSource("d", str(tmp_path)), stats=sniffed, sniff=True))
    assert sorted(r.rel_path for r in refs) == ["camera_dump", "deep/frame.raw", "deep/scan.dat", "named.jpg"]
    assert (sniffed.listed, sniffed.sniffed, sniffed.skipped_extension, sniffed.skipped_hidden) == (4, 3, 2, 1)
    assert sorted(Path(p).name for p in read) == ["README", "camera_dump", "frame.raw", "notes.txt", "scan.dat"]
    assert {r.rel_path: r.size for r in refs}["camera_dump"] == (tmp_path / "camera_dump").stat().st_size


@pytest.mark.timeout(60)
def test_sniffing_never_reads_a_fifo_or_a_link_out_of_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.mkfifo(root / "pipe")  # reading it would block forever
    (outside / "secret").write_bytes(encode(natural(1, 32, 32), "JPEG"))
    os.symlink(outside / "secret", root / "escape")
    (root / "inside").write_bytes(encode(natural(2, 32, 32), "PNG"))
    stats = ListingStats()
    assert sorted(r.rel_path for r in list_dataset(DatasetSource("d", str(root)), stats=stats, sniff=True)) == [
        "inside"]
    # neither is read: a JPEG read through the link would count as a link out of the root instead
    assert (stats.skipped_extension, stats.skipped_links, stats.sniffed) == (2, 0, 1)


@pytest.mark.s3
def test_sniffing_on_s3_lists_objects_by_their_first_bytes(bucket: str) -> None:
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="imgs/upload_7f3a", Body=encode(natural(1, 40, 30), "JPEG"))
    s3.put_object(Bucket=bucket, Key="imgs/sub/photo.jpg", Body=encode(natural(2, 40, 30), "JPEG"))
    s3.put_object(Bucket=bucket, Key="imgs/sub/manifest.json", Body=b'{"not": "an image"}')
    stats = ListingStats()
    refs = list(list_dataset(DatasetSource("d", f"s3://{bucket}/imgs"), stats=stats, sniff=True))
    assert sorted(r.rel_path for r in refs) == ["sub/photo.jpg", "upload_7f3a"]
    assert all(r.etag for r in refs)
    assert (stats.sniffed, stats.skipped_extension) == (1, 1)


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
    listed = DatasetSource.parse("/data/lists/train.txt")
    assert (listed.name, listed.is_file_list) == ("train", True)
    assert DatasetSource.parse("val=s3://b/lists/val.PARQUET").is_file_list
    assert not DatasetSource.parse("/data/train").is_file_list


# -- listing in parts -------------------------------------------------------------------------------
def _tree(root: Path) -> None:
    """Images in the root, in nested sub-folders, in a hidden folder, a link to a folder, and a non-image."""
    images = ["top.jpg", "a/1.jpg", "a/deep/2.png", "b/3.jpg", "c/d/e/4.jpg", *(f"s{i:02d}/{i}.jpg" for i in range(20))]
    for rel in images:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / ".cache").mkdir()
    (root / ".cache" / "hidden.jpg").write_bytes(b"x")
    (root / "b" / "notes.txt").write_text("no")
    os.symlink(root / "a", root / "link-to-a")


@pytest.mark.parametrize("of", [1, 2, 3, 7])
def test_the_parts_of_a_folder_list_each_image_once_and_count_what_they_skip_once(tmp_path: Path, of: int) -> None:
    from dupflow.io.listing import ListingPart

    _tree(tmp_path)
    whole_stats = ListingStats()
    whole = sorted(r.uri for r in list_dataset(DatasetSource("d", str(tmp_path)), stats=whole_stats))
    parts, stats = [], []
    for k in range(of):
        stats.append(ListingStats())
        parts.append([r.uri for r in list_dataset(DatasetSource("d", str(tmp_path)), stats=stats[-1],
                                                   part=ListingPart(k, of))])
    assert sorted(uri for part in parts for uri in part) == whole
    assert len(whole) == 25
    assert ListingStats.merged(stats) == whole_stats
    assert all(uri.endswith("top.jpg") is False for part in parts[1:] for uri in part)  # root files: part 0
    if of == 7:
        assert sum(1 for part in parts if part) >= 4  # the sub-folders spread over the parts


def test_a_file_list_is_read_whole_by_the_first_part(tmp_path: Path) -> None:
    from dupflow.io.listing import ListingPart

    _tree(tmp_path / "pics")
    listing = tmp_path / "files.txt"
    listing.write_text(f"{tmp_path / 'pics' / 'top.jpg'}\n{tmp_path / 'pics' / 'a' / '1.jpg'}\n")
    source = DatasetSource("d", str(listing))
    assert len(list(list_dataset(source, part=ListingPart(0, 3)))) == 2
    assert list(list_dataset(source, part=ListingPart(1, 3))) == []


@pytest.mark.s3
def test_the_parts_of_an_s3_prefix_list_each_object_once(bucket: str) -> None:
    from dupflow.io.listing import ListingPart

    s3 = boto3.client("s3")
    keys = ["imgs/top.jpg", *(f"imgs/p{i % 5}/q{i % 3}/{i}.jpg" for i in range(30)), "imgs/.hidden/x.jpg"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    source = DatasetSource("d", f"s3://{bucket}/imgs")
    whole = sorted(r.rel_path for r in list_dataset(source))
    parts = [[r.rel_path for r in list_dataset(source, part=ListingPart(k, 4))] for k in range(4)]
    assert sorted(p for part in parts for p in part) == whole
    assert len(whole) == 31
    assert all(len(part) < len(whole) for part in parts)


def test_encode_lists_a_folder_in_parts_at_once_and_finds_what_one_walk_finds(tmp_path: Path) -> None:
    from dupflow.store.encode_job import list_sources

    _tree(tmp_path / "pics")
    sources = [DatasetSource("d", str(tmp_path / "pics")), DatasetSource("e", str(tmp_path / "pics" / "a"))]
    whole, whole_stats = list_sources(sources)
    split, split_stats = list_sources(sources, parts=4)
    assert sorted(split, key=lambda r: (r.dataset, r.uri)) == sorted(whole, key=lambda r: (r.dataset, r.uri))
    assert len(split) == 25 + 2
    assert split_stats == whole_stats
