"""`dupflow run`: the whole flow from the command line on an embedded Prefect API and a local cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from dupflow.match.job import OUTPUT_FILES
from dupflow.match.state import STATE_FOLDER
from worlds import plant_world

pytestmark = pytest.mark.slow


def test_run_leaves_the_same_files_as_encode_then_match(tmp_path: Path) -> None:
    world = plant_world(tmp_path / "data")
    train, val = world.root / "train", world.root / "val"
    config = tmp_path / "dupflow.yaml"
    config.write_text(f"datasets:\n  - {{name: train, url: {train}}}\n  - {{name: val, url: {val}}}\n"
                      f"store: {tmp_path / 'run-store'}\nout: {tmp_path / 'ignored'}\n"
                      f"match: {{duplicates_root: {tmp_path / 'dups'}}}\ncluster: {{workers: 2}}\n")
    files = sorted(p for p in world.root.rglob("*") if p.is_file())
    ran = run_cli("run", "--config", str(config), "--out", str(tmp_path / "run-out"), "--apply",
                  "--journal", str(tmp_path / "journal"))
    assert "files to move" in ran.stdout
    assert "encoded" in ran.stdout
    would = len(world.within) + len(world.leaks)
    assert f"apply dry run (nothing moved): would_move {would}" in ran.stdout
    assert sorted(p for p in world.root.rglob("*") if p.is_file()) == files
    run_cli("encode", "-d", f"train={train}", "-d", f"val={val}", "--store", str(tmp_path / "store"))
    run_cli("match", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "match-out"),
            "--datasets", "train,val", "--duplicates-root", str(tmp_path / "dups"))
    written = sorted(p.name for p in (tmp_path / "run-out").iterdir())
    assert written == sorted([*OUTPUT_FILES, STATE_FOLDER, "report.html", "report.json"])
    assert f"report: {tmp_path / 'run-out'}/report.html" in ran.stdout
    assert not (tmp_path / "ignored").exists()  # --out overrides the file's out
    for name in OUTPUT_FILES[:4]:
        assert pq.read_table(tmp_path / "run-out" / name).equals(pq.read_table(tmp_path / "match-out" / name)), name
    summary = json.loads((tmp_path / "run-out" / "summary.json").read_text())
    assert summary["intersections"]["train & val"]["shared_groups"] == len(world.leaks)


def test_run_refuses_bad_settings_before_starting_anything(tmp_path: Path) -> None:
    bad = run_cli("run", "-d", f"train={tmp_path}", "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o"),
                  "--rule", "phash<=", check=False)
    assert bad.returncode == 1
    assert "match condition" in bad.stderr
    assert "Starting temporary server" not in bad.stdout + bad.stderr
    none = run_cli("run", "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o"), check=False)
    assert none.returncode == 1
    assert "--dataset" in none.stderr
