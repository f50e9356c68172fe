"""`dupflow sample-data`: the demo set's truth is what dupflow finds in it with its defaults."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import run_cli


def planted(out: Path) -> tuple[set[frozenset[str]], dict[str, int]]:
    """The groups truth.csv plants (files relative to `out`) and its files of each kind."""
    groups: dict[str, set[str]] = {}
    kinds: dict[str, int] = {}
    with (out / "truth.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
            if row["group"]:
                groups.setdefault(row["group"], set()).add(row["file"])
    return {frozenset(g) for g in groups.values()}, kinds


def found(out: Path, matches: Path) -> set[frozenset[str]]:
    """The groups a match run found, as files relative to `out`."""
    groups: dict[int, set[str]] = {}
    for row in pq.read_table(matches / "groups.parquet").to_pylist():
        groups.setdefault(row["group"], set()).add(Path(row["uri"]).relative_to(out.resolve()).as_posix())
    return {frozenset(g) for g in groups.values()}


@pytest.mark.parametrize("images", [60, pytest.param(400, marks=pytest.mark.slow)])
def test_the_default_match_finds_exactly_the_planted_groups(tmp_path: Path, images: int) -> None:
    out, store, matches = tmp_path / "set", tmp_path / "store", tmp_path / "matches"
    said = run_cli("sample-data", str(out), "--images", str(images)).stdout
    truth, kinds = planted(out)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "truth.csv")
    with (out / "truth.csv").open(newline="", encoding="utf-8") as fh:
        assert sorted(row["file"] for row in csv.DictReader(fh)) == files  # every file written, once
    assert kinds["base"] == images
    assert kinds["corrupt"] == 1
    assert {"exact_copy", "resized", "brightened", "mirrored", "leak"} <= set(kinds)
    grouped = sum(len(g) for g in truth)
    assert len(truth) == images // 4
    assert f"planted {len(truth)} duplicate groups of {grouped} files ({grouped - len(truth)} duplicates" in said
    assert f"truth: {out}/truth.csv" in said
    assert re.search(rf"wrote {len(files)} files to .*: {images} base, ", said)

    run_cli("encode", "--dataset", f"train={out}/train", "--dataset", f"val={out}/val", "--store", str(store))
    # the planted truth is what pHash finds in every orientation: the default's verified crops also join
    # bases cut from overlapping parts of the two photographs (they do share content)
    run_cli("match", "--store", str(store), "--out", str(matches), "--rule", "exact | phash<=10", "--orientations")
    assert found(out, matches) == truth
    scores = pq.read_table(matches / "scores.parquet").to_pylist()
    assert [Path(r["uri"]).name for r in scores if r["status"] == "error"] == ["corrupt.jpg"]
    leaked = [g for g in truth if any(f.startswith("val/leaked/") for f in g)]
    assert len(leaked) == 3
    assert all(any(f.startswith("train/") for f in g) for g in leaked)  # leaks cross from train into val
