"""Reported apply defects: `--resume` with nothing to resume, undo splitting an image from its sidecars,
and a destination behind a symbolic link out of the duplicates root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from applyworld import Matched, matched_world, tree
from conftest import run_cli
from dupflow.apply import ApplyOptions, apply_manifest, undo_journal

SIDECARS = ApplyOptions(sidecars=(".txt", ".json"))


@pytest.fixture
def m(tmp_path: Path) -> Matched:
    return matched_world(tmp_path / "w")


def _outcomes(table: pa.Table) -> dict[str, tuple[str, str | None]]:
    return {r["source"]: (r["outcome"], r["reason"]) for r in table.to_pylist()}


# -- 1. --resume with nothing to resume ------------------------------------------------------------
def test_resume_of_a_journal_that_never_came_to_exist_says_nothing_to_resume(m: Matched, tmp_path: Path) -> None:
    journal = tmp_path / "never-written"
    before = tree(*m.data)
    done = run_cli("apply", "--journal", str(journal), "--execute", "--resume", check=False)
    assert done.returncode == 0, done.stderr
    assert "nothing to resume" in done.stdout
    assert "--journal" in done.stdout
    assert "--execute" in done.stdout
    assert tree(*m.data) == before


def test_resume_of_a_finished_run_says_nothing_to_resume_and_how_to_apply_again(m: Matched, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    run_cli("apply", str(m.manifest), "--journal", str(journal), "--execute")
    after = tree(*m.data, m.out / "duplicates")
    done = run_cli("apply", "--journal", str(journal), "--execute", "--resume", check=False)
    assert done.returncode == 0, done.stderr
    assert "nothing to resume" in done.stdout
    assert "no unfinished run" in done.stdout
    assert f"dupflow apply {m.manifest} --journal {journal} --execute" in done.stdout
    assert tree(*m.data, m.out / "duplicates") == after


def test_resume_without_a_manifest_of_a_folder_that_is_no_journal_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not a journal")
    bad = run_cli("apply", "--journal", str(folder), "--execute", "--resume", check=False)
    assert bad.returncode == 1
    assert "not an apply journal" in bad.stderr
    assert "--journal" in bad.stderr


# -- 2. undo keeps an image and its sidecars together -------------------------------------------------
def _applied(m: Matched, tmp_path: Path) -> tuple[str, dict[str, Any], Path, Path]:
    """Apply with sidecars; the journal, the first image's manifest row, its sidecar's original place and
    where that sidecar was moved."""
    journal = str(tmp_path / "journal")
    assert apply_manifest(str(m.manifest), journal, SIDECARS, execute=True).counts == {"moved": 2 * len(m.moving)}
    row = next(r for r in pq.read_table(m.manifest).to_pylist() if r["source"] == str(m.moving[0]))
    sidecar = Path(row["source"]).with_suffix(".txt")
    return journal, row, sidecar, Path(row["destination"]).with_suffix(".txt")


def _undo_words(reason: str | None) -> None:
    assert reason
    assert "manifest" not in reason


def test_undo_leaves_the_sidecar_when_the_images_original_place_is_taken(m: Matched, tmp_path: Path) -> None:
    journal, row, sidecar, moved_sidecar = _applied(m, tmp_path)
    Path(row["source"]).write_bytes(b"a new file in the image's old place")
    got = _outcomes(undo_journal(journal, execute=True).results)
    image, side = got[row["destination"]], got[str(moved_sidecar)]
    assert image[0] == "skipped"
    assert "original place" in str(image[1])
    assert row["source"] in str(image[1])
    assert side[0] == "skipped"
    assert row["source"] in str(side[1])
    _undo_words(image[1])
    _undo_words(side[1])
    assert moved_sidecar.is_file()
    assert not sidecar.exists()
    assert Path(row["destination"]).is_file()
    assert Path(row["source"]).read_bytes() == b"a new file in the image's old place"
    others = [v for k, v in got.items() if k not in (row["destination"], str(moved_sidecar))]
    assert others
    assert all(v == ("restored", None) for v in others)


@pytest.mark.parametrize("same_size", [False, True], ids=["size-changed", "same-size-other-bytes"])
def test_undo_leaves_the_sidecar_when_the_moved_image_changed(m: Matched, tmp_path: Path, same_size: bool) -> None:
    journal, row, sidecar, moved_sidecar = _applied(m, tmp_path)
    moved = Path(row["destination"])
    data = bytearray(moved.read_bytes())
    if same_size:
        data[-3] ^= 0xFF
    else:
        data += b"edited"
    moved.write_bytes(bytes(data))
    got = _outcomes(undo_journal(journal, execute=True).results)
    image, side = got[row["destination"]], got[str(moved_sidecar)]
    assert image[0] == "skipped"
    assert "changed since it was moved" in str(image[1])
    assert side[0] == "skipped"
    assert row["source"] in str(side[1])
    _undo_words(image[1])
    _undo_words(side[1])
    assert moved.read_bytes() == bytes(data)
    assert moved_sidecar.is_file()
    assert not Path(row["source"]).exists()
    assert not sidecar.exists()


def test_undo_leaves_the_image_when_its_sidecars_original_place_is_taken(m: Matched, tmp_path: Path) -> None:
    journal, row, sidecar, moved_sidecar = _applied(m, tmp_path)
    sidecar.write_text("a new label")
    got = _outcomes(undo_journal(journal, execute=True).results)
    assert got[row["destination"]][0] == "skipped"
    assert got[str(moved_sidecar)][0] == "skipped"
    assert "original place" in str(got[row["destination"]][1])
    assert Path(row["destination"]).is_file()
    assert moved_sidecar.is_file()
    assert sidecar.read_text() == "a new label"


# -- 3. a symbolic link out of the duplicates root ------------------------------------------------
def test_a_destination_behind_a_symlink_out_of_the_root_is_refused(m: Matched, tmp_path: Path) -> None:
    row = pq.read_table(m.manifest).to_pylist()[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    dup = m.out / "duplicates"
    dup.mkdir(parents=True)
    (dup / row["dataset"]).symlink_to(outside)
    report = apply_manifest(str(m.manifest), str(tmp_path / "journal"), SIDECARS, execute=True)
    got = _outcomes(report.results)[row["source"]]
    assert got[0] == "refused"
    assert "leaves the duplicates root" in str(got[1])
    assert "symbolic link" in str(got[1])
    assert not list(outside.rglob("*"))
    assert Path(row["source"]).exists()
    assert not os.listdir(outside)
