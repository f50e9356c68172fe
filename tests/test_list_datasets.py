"""Datasets given as a list of files (a .txt or .parquet dataset URL): entries resolved, looked up for
size and mtime or ETag, missing ones recorded, rel_paths below the files' common folder."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from dupflow.encode.settings import EncodeSettings
from dupflow.errors import ConfigError
from dupflow.io.filelists import common_root, relative_path
from dupflow.io.listing import ListingStats, check_source, dataset_url, list_dataset
from dupflow.io.sources import DatasetSource
from dupflow.store.encode_job import run_encode
from dupflow.store.encodings import EncodingsStore
from imagegen import encode, natural, write


def _tree(tmp_path: Path) -> dict[str, Path]:
    """Images in several folders, one of them outside the list's folder, and a file without extension."""
    return {
        "a": write(tmp_path / "data" / "cats" / "a.jpg", natural(1, 64, 48)),
        "b": write(tmp_path / "data" / "dogs" / "deep" / "b.png", natural(2, 64, 48)),
        "c": write(tmp_path / "lists" / "here" / "c.jpg", natural(3, 64, 48)),
        "d": write(tmp_path / "data" / "cats" / "d", natural(4, 64, 48), "JPEG"),
    }


def test_a_text_list_names_files_anywhere_with_sizes_mtimes_and_missing_ones(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    listing = tmp_path / "lists" / "train.txt"
    listing.write_text("\n".join([
        "# exported from the labelling tool", "",
        "../data/cats/a.jpg",  # relative to the list's folder
        f"  {files['b']}  ",  # absolute, padded
        "here/c.jpg",
        f"file://{files['d']}",  # a URL; no extension, listed anyway: the list is the user's choice
        "../data/cats/a.jpg",  # again
        "../data/cats/gone.jpg",
    ]) + "\n", encoding="utf-8")
    stats = ListingStats()
    refs = list(list_dataset(DatasetSource("train", str(listing)), stats=stats))
    assert [r.uri for r in refs] == [str(files["a"]), str(files["b"]), str(files["c"]), str(files["d"]),
                                     str(tmp_path / "data" / "cats" / "gone.jpg")]
    assert [r.rel_path for r in refs] == ["data/cats/a.jpg", "data/dogs/deep/b.png", "lists/here/c.jpg",
                                          "data/cats/d", "data/cats/gone.jpg"]
    for ref, path in zip(refs, files.values(), strict=False):
        assert (ref.dataset, ref.size, ref.etag) == ("train", path.stat().st_size, None)
        assert ref.mtime_ns is not None
        assert abs(ref.mtime_ns - path.stat().st_mtime_ns) < 2_000
    assert (refs[-1].size, refs[-1].mtime_ns) == (0, None)
    assert (stats.listed, stats.missing, stats.repeated) == (5, 1, 1)
    assert dataset_url(DatasetSource("train", str(listing)), refs) == str(tmp_path)


def test_an_encode_over_a_list_records_each_missing_file_as_an_error_row(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    listing = tmp_path / "lists" / "val.txt"
    listing.write_text(f"{files['a']}\n{files['c']}\n{tmp_path / 'nowhere.jpg'}\n")
    report = run_encode([DatasetSource.parse(str(listing))], str(tmp_path / "store"), EncodeSettings())
    rows = {Path(r["uri"]).name: r for r in EncodingsStore(str(tmp_path / "store")).read().to_pylist()}
    assert report.listed == 3
    assert {n: (r["dataset"], r["error"]) for n, r in rows.items()} == {
        "a.jpg": ("val", None), "c.jpg": ("val", None), "nowhere.jpg": ("val", "vanished")}
    assert "nowhere.jpg" in rows["nowhere.jpg"]["error_message"]
    assert rows["a.jpg"]["phash"] is not None


@pytest.mark.parametrize("column", ["uri", "path"])
def test_a_parquet_list_reads_its_uri_or_path_column(tmp_path: Path, column: str) -> None:
    files = _tree(tmp_path)
    listing = tmp_path / "lists" / "files.parquet"
    entries = [str(files["a"]), "here/c.jpg", None, ""]
    pq.write_table(pa.table({column: pa.array(entries, pa.string()), "label": [1, 2, 3, 4]}), listing)
    refs = list(list_dataset(DatasetSource.parse(str(listing))))
    assert [(r.dataset, r.uri, r.size) for r in refs] == [
        ("files", str(files["a"]), files["a"].stat().st_size), ("files", str(files["c"]), files["c"].stat().st_size)]


def test_bad_lists_are_clear_errors(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    gone = DatasetSource("x", str(tmp_path / "missing.txt"))
    with pytest.raises(ConfigError, match=r"file list .* does not exist"):
        check_source(gone)
    with pytest.raises(ConfigError, match=r"file list .* does not exist"):
        list(list_dataset(gone))
    check_source(DatasetSource("x", str(tmp_path / "data")))
    folder = tmp_path / "folder.txt"
    folder.write_text(f"{files['a'].parent}\n")
    check_source(DatasetSource("x", str(folder)))
    with pytest.raises(ConfigError, match="which is a folder"):
        list(list_dataset(DatasetSource("x", str(folder))))
    no_column = tmp_path / "no_column.parquet"
    pq.write_table(pa.table({"file": [str(files["a"])]}), no_column)
    with pytest.raises(ConfigError, match="no `uri` or `path` column; it has: file"):
        list(list_dataset(DatasetSource("x", str(no_column))))
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"uri": [1, 2]}), numbers)
    with pytest.raises(ConfigError, match="not strings"):
        list(list_dataset(DatasetSource("x", str(numbers))))
    binary = tmp_path / "binary.txt"
    binary.write_bytes(encode(natural(1, 8, 8), "PNG"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        list(list_dataset(DatasetSource("x", str(binary))))


def test_common_root_and_relative_paths() -> None:
    assert common_root(["/d/a/x.jpg", "/d/a/y/z.jpg"]) == "/d/a"
    assert common_root(["/a.jpg", "/b/c.jpg"]) == "/"
    assert common_root(["s3://b/p/a.jpg", "s3://b/q/c.jpg"]) == "s3://b"
    assert common_root(["s3://b/p/a.jpg", "s3://other/p/a.jpg"]) == ""
    assert common_root(["s3://b/p/a.jpg", "/b/p/a.jpg"]) == ""
    assert common_root([]) == ""
    assert relative_path("/", "/a.jpg") == "a.jpg"
    assert relative_path("s3://b", "s3://b/p/a.jpg") == "p/a.jpg"
    assert relative_path("", "s3://b/p/a.jpg") == "s3/b/p/a.jpg"
    assert relative_path("", "/d/a.jpg") == "d/a.jpg"


@pytest.mark.s3
def test_a_list_on_s3_names_objects_by_key_and_url_with_etags(bucket: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    for key in ("imgs/a.jpg", "imgs/sub/b.jpg", "elsewhere/c.jpg"):
        s3.put_object(Bucket=bucket, Key=key, Body=encode(natural(len(key), 64, 48), "JPEG"))
    s3.put_object(Bucket=bucket, Key="lists/train.txt",
                  Body=f"../imgs/a.jpg\n../imgs/sub/b.jpg\ns3://{bucket}/elsewhere/c.jpg\n../imgs/gone.jpg\n".encode())
    stats = ListingStats()
    source = DatasetSource("train", f"s3://{bucket}/lists/train.txt")
    check_source(source)
    refs = list(list_dataset(source, stats=stats))
    assert [r.rel_path for r in refs] == ["imgs/a.jpg", "imgs/sub/b.jpg", "elsewhere/c.jpg", "imgs/gone.jpg"]
    assert all(r.uri == f"s3://{bucket}/{r.rel_path}" for r in refs)
    assert all(r.etag and r.size > 0 and r.mtime_ns for r in refs[:3])
    assert (refs[3].size, refs[3].etag, stats.missing) == (0, None, 1)
    assert dataset_url(source, refs) == f"s3://{bucket}"
    s3.put_object(Bucket=bucket, Key="lists/bad.txt", Body=b"/abs/a.jpg\n")
    with pytest.raises(ConfigError, match="not a path inside the list's store"):
        list(list_dataset(DatasetSource("bad", f"s3://{bucket}/lists/bad.txt")))
    local = write(tmp_path / "x" / "local.jpg", natural(9, 64, 48))
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(f"s3://{bucket}/imgs/a.jpg\n{local}\n")
    refs = list(list_dataset(DatasetSource("mixed", str(mixed))))
    assert [r.rel_path for r in refs] == [f"s3/{bucket}/imgs/a.jpg", str(local).lstrip(os.sep)]
    assert refs[0].etag
    assert refs[1].etag is None


def test_the_encode_command_takes_a_list_and_says_what_it_missed(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    listing = tmp_path / "lists" / "val.txt"
    listing.write_text(f"{files['a']}\n{files['a']}\n{files['c']}\n{tmp_path / 'nowhere.jpg'}\n")
    done = run_cli("encode", "-d", f"val={listing}", "-s", str(tmp_path / "store"), "-q")
    assert "1 listed but missing (error rows), 1 listed twice (encoded once)" in done.stdout
    shown = run_cli("info", "--store", str(tmp_path / "store")).stdout
    common = os.path.commonpath([files["a"], files["c"]])
    assert f"from {common}" in shown  # the store records the files' common folder, not the list file


def test_a_list_that_grows_past_its_folder_moves_every_rel_path_with_it(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    listing = tmp_path / "lists" / "val.txt"
    listing.write_text(f"{files['a']}\n")
    store = str(tmp_path / "store")
    run_encode([DatasetSource.parse(str(listing))], store, EncodeSettings())
    first = {r["uri"]: r["rel_path"] for r in EncodingsStore(store).read().to_pylist()}
    assert first == {str(files["a"]): files["a"].name}
    listing.write_text(f"{files['a']}\n{files['c']}\n")  # c lives elsewhere: the common folder moves up
    report = run_encode([DatasetSource.parse(str(listing))], store, EncodeSettings())
    assert report.reused == 1
    root = Path(os.path.commonpath([files["a"], files["c"]]))
    rows = {r["uri"]: r["rel_path"] for r in EncodingsStore(store).read().to_pylist()}
    assert rows == {str(p): str(p.relative_to(root)) for p in (files["a"], files["c"])}
    assert EncodingsStore(store).complete_record().datasets["val"]["url"] == str(root)
