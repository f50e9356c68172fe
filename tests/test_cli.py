"""The `dupflow` command line as users type it: encode, info, merge, import-imagededup, errors."""

from __future__ import annotations

import json
from pathlib import Path

import imagehash
import pyarrow.compute as pc
import pyarrow.dataset as ds
from PIL import Image

from conftest import run_cli
from dupflow.store.encodings import EncodingsStore
from imagegen import dataset, natural, write


def test_encode_contract_prints_summary_and_writes_store(tmp_path: Path) -> None:
    dataset(tmp_path / "train", 5, seed=1)
    dataset(tmp_path / "val", 3, seed=2)
    (tmp_path / "val" / "broken.jpg").write_bytes(b"")
    out = run_cli("encode", "--dataset", f"train={tmp_path / 'train'}", "--dataset", f"val={tmp_path / 'val'}",
                  "--store", str(tmp_path / "store"),
                  "--encoders", "phash,dhash,ahash,phash_dihedral,phash_windows,orb")
    assert "9 listed: 8 encoded, 0 reused" in out.stdout
    assert "empty=1" in out.stdout
    assert "images per CPU-second" in out.stdout
    table = ds.dataset(str(tmp_path / "store" / "encodings"), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 9
    assert {"phash", "dhash", "ahash"} <= set(table.column_names)

    again = run_cli("encode", "-d", f"train={tmp_path / 'train'}", "-d", f"val={tmp_path / 'val'}",
                    "-s", str(tmp_path / "store"))
    assert "0 encoded, 9 reused" in again.stdout


def test_root_and_dirs_habit(tmp_path: Path) -> None:
    dataset(tmp_path / "root" / "dir_1", 2, seed=1)
    dataset(tmp_path / "root" / "dir_2", 2, seed=2)
    run_cli("encode", "--root", str(tmp_path / "root"), "--dirs", "dir_1", "dir_2", "--store", str(tmp_path / "s"))
    info = run_cli("info", "--store", str(tmp_path / "s")).stdout
    assert "dir_1: 2 rows" in info
    assert "dir_2: 2 rows" in info
    assert "state      complete" in info


def test_bad_arguments_get_helpful_errors(tmp_path: Path) -> None:
    bad_encoder = run_cli("encode", "-d", f"x={tmp_path}", "-s", str(tmp_path / "s"), "-e", "phash,nope", check=False)
    assert bad_encoder.returncode != 0
    assert "unknown encoder(s) nope; choose from" in bad_encoder.stderr
    no_dataset = run_cli("encode", "-s", str(tmp_path / "s"), check=False)
    assert no_dataset.returncode != 0
    assert "--dataset NAME=URL" in no_dataset.stderr
    missing = run_cli("encode", "-d", f"x={tmp_path / 'nope'}", "-s", str(tmp_path / "s"), check=False)
    assert missing.returncode != 0
    assert "not a folder or prefix that exists" in missing.stderr
    assert "Traceback" not in bad_encoder.stderr + no_dataset.stderr + missing.stderr


def test_merge_stores_later_input_wins(tmp_path: Path) -> None:
    dataset(tmp_path / "a", 3, seed=1)
    dataset(tmp_path / "b", 2, seed=2)
    run_cli("encode", "-d", f"a={tmp_path / 'a'}", "-s", str(tmp_path / "sa"), "-e", "phash")
    run_cli("encode", "-d", f"b={tmp_path / 'b'}", "-s", str(tmp_path / "sb"), "-e", "phash,dhash")
    done = run_cli("merge", "-i", str(tmp_path / "sa"), "-i", str(tmp_path / "sb"), "-o", str(tmp_path / "merged"))
    assert "Warning" not in done.stderr  # -o is the merged store only, as the README says
    merged = EncodingsStore(str(tmp_path / "merged")).read()
    assert sorted(set(merged["dataset"].to_pylist())) == ["a", "b"]
    assert merged.num_rows == 5
    # dhash exists only in the second store: the first store's rows carry nulls, not made-up values
    assert merged.filter(pc.equal(merged["dataset"], "a"))["dhash"].null_count == 3


def test_import_imagededup_json(tmp_path: Path) -> None:
    imgs = tmp_path / "imgs"
    paths = [write(imgs / f"{i}.png", natural(i, 64, 64)) for i in range(3)]
    enc = {p.name: str(imagehash.phash(Image.open(p))) for p in paths}
    (tmp_path / "enc.json").write_text(json.dumps(enc))
    run_cli("import-imagededup", str(tmp_path / "enc"), "--method", "phash", "--dataset", f"old={imgs}",
            "--store", str(tmp_path / "s"))
    rows = {Path(r["uri"]).name: r for r in EncodingsStore(str(tmp_path / "s")).read().to_pylist()}
    assert {n: f"{r['phash']:016x}" for n, r in rows.items()} == enc
    assert "imported" in run_cli("info", "-s", str(tmp_path / "s")).stdout
    # A real encode of the same folder replaces imported values with dupflow's own.
    out = run_cli("encode", "-d", f"old={imgs}", "-s", str(tmp_path / "s")).stdout
    assert "3 encoded" in out


def test_match_contract_writes_five_files_and_prints_a_summary(tmp_path: Path) -> None:
    files = dataset(tmp_path / "train", 6, seed=3)
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "leak.jpg").write_bytes(files[2].read_bytes())
    run_cli("encode", "-d", f"train={tmp_path / 'train'}", "-d", f"val={tmp_path / 'val'}", "-s", str(tmp_path / "st"))
    out = run_cli("match", "--store", str(tmp_path / "st"), "--out", str(tmp_path / "out"), "--rule", "phash<=10",
                  "--rule", "exact", "--keep", "dataset:train,val", "--keep", "size")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["pairs.parquet", "groups.parquet", "scores.parquet", "manifest.parquet", "summary.json", "_state"])
    assert "train & val: 1 shared groups (train 1, val 1 images)" in out.stdout
    assert "manifest: 1 files to move" in out.stdout
    assert "nothing moved" in out.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["settings"]["rules"] == ["phash<=10", "exact"]
    assert (tmp_path / "val" / "leak.jpg").exists()  # match never moves anything

    bad = run_cli("match", "--store", str(tmp_path / "st"), "--out", str(tmp_path / "o2"), "--rule", "phash<<3",
                  check=False)
    assert bad.returncode != 0
    assert "cannot read match condition" in bad.stderr
    missing = run_cli("match", "--store", str(tmp_path / "st"), "--out", str(tmp_path / "o2"), "--rule", "whash<=8",
                      check=False)
    assert missing.returncode != 0
    assert "--encoders phash,dhash,phash_dihedral,phash_windows,orb,whash" in missing.stderr
