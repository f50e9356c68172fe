"""Applying manifests on local disks: dry run, moves with sidecars, reasons for every refusal, undo."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from applyworld import Matched, matched_world, rewrite_manifest, tree
from conftest import run_cli
from dupflow.apply import ApplyOptions, apply_manifest, undo_journal
from dupflow.apply.journal import Journal
from dupflow.errors import ConfigError
from dupflow.schemas import manifest_metadata
from imagegen import natural, write

SIDECARS = ApplyOptions(sidecars=(".txt", ".json"))


@pytest.fixture
def m(tmp_path: Path) -> Matched:
    return matched_world(tmp_path / "w")


def _outcomes(report_table: pa.Table) -> dict[str, tuple[str, str | None]]:
    return {r["source"]: (r["outcome"], r["reason"]) for r in report_table.to_pylist()}


def _dup(m: Matched) -> Path:
    return m.out / "duplicates"


def test_dry_run_changes_nothing_and_lists_every_file_that_would_move(m: Matched, tmp_path: Path) -> None:
    before = tree(*m.data, m.out)
    report = apply_manifest(str(m.manifest), str(tmp_path / "journal"), SIDECARS)

    assert tree(*m.data, m.out) == before
    would = report.results.filter(pc.equal(report.results["outcome"], "would_move")).to_pylist()
    assert {r["source"] for r in would if r["kind"] == "image"} == {str(p) for p in m.moving}
    assert len([r for r in would if r["kind"] == "sidecar"]) == len(m.moving)
    assert report.counts == {"would_move": 2 * len(m.moving)}
    assert not report.executed
    assert pq.read_table(report.results_url).equals(report.results)
    assert Journal(str(tmp_path / "journal")).records() == []  # a dry run journals nothing


def test_execute_moves_images_and_sidecars_and_undo_restores_the_tree_byte_for_byte(m: Matched, tmp_path: Path) -> None:
    before = tree(*m.data)
    mtimes = {p: p.stat().st_mtime_ns for p in m.moving}
    journal = str(tmp_path / "journal")
    report = apply_manifest(str(m.manifest), journal, SIDECARS, execute=True)

    assert report.counts == {"moved": 2 * len(m.moving)}
    for row in pq.read_table(m.manifest).to_pylist():
        src, dst = Path(row["source"]), Path(row["destination"])
        assert not src.exists()
        assert dst.is_file()
        assert dst == _dup(m) / row["dataset"] / row["rel_path"]
        assert before[str(src.relative_to(m.root))] == tree(dst.parent)[f"{dst.parent.name}/{dst.name}"]
    moved_sidecars = [p for p in _dup(m).rglob("*") if p.suffix in (".txt", ".json")]
    assert len(moved_sidecars) == len(m.moving)
    # Nothing lost, nothing duplicated.
    assert sorted(tree(*m.data, _dup(m)).values()) == sorted(before.values())

    assert undo_journal(journal).counts == {"would_restore": 2 * len(m.moving)}  # dry by default
    assert not any(p.exists() for p in m.moving)
    undone = undo_journal(journal, execute=True)
    assert undone.counts == {"restored": 2 * len(m.moving)}
    assert tree(*m.data) == before
    assert {p: p.stat().st_mtime_ns for p in m.moving} == mtimes
    assert not [p for p in _dup(m).rglob("*") if p.is_file()]
    assert undo_journal(journal, execute=True).counts == {}  # nothing left to undo


def test_applying_a_completed_manifest_again_moves_nothing(m: Matched, tmp_path: Path) -> None:
    journal = str(tmp_path / "journal")
    apply_manifest(str(m.manifest), journal, SIDECARS, execute=True)
    after = tree(*m.data, _dup(m))
    again = apply_manifest(str(m.manifest), journal, SIDECARS, execute=True)
    assert again.counts == {"already_moved": len(m.moving)}
    assert tree(*m.data, _dup(m)) == after


def test_each_bad_row_gets_its_reason_and_the_others_still_move(m: Matched, tmp_path: Path) -> None:
    rows = sorted(pq.read_table(m.manifest).to_pylist(), key=lambda r: r["source"])
    stale, conflict, escape, missing, elsewhere, *fine = rows
    Path(stale["source"]).write_bytes(Path(stale["source"]).read_bytes() + b"edited")
    Path(conflict["destination"]).parent.mkdir(parents=True)
    Path(conflict["destination"]).write_bytes(b"someone else's file")
    escape["destination"] = f"{_dup(m)}/../escaped.jpg"
    Path(missing["source"]).unlink()
    elsewhere["destination"] = str(tmp_path / "elsewhere" / "x.jpg")
    rewrite_manifest(m.manifest, [stale, conflict, escape, missing, elsewhere, *fine])

    report = apply_manifest(str(m.manifest), str(tmp_path / "journal"), execute=True)
    got = _outcomes(report.results)
    assert got[stale["source"]][0] == "skipped"
    assert "stale manifest" in str(got[stale["source"]][1])
    assert got[conflict["source"]] == ("skipped", f"destination exists: {conflict['destination']}")
    assert got[escape["source"]][0] == "refused"
    assert "escapes the duplicates root" in str(got[escape["source"]][1])
    assert got[missing["source"]] == ("skipped", "source missing")
    assert got[elsewhere["source"]][0] == "refused"
    assert all(got[r["source"]] == ("moved", None) for r in fine)
    assert fine
    assert Path(conflict["destination"]).read_bytes() == b"someone else's file"
    assert Path(stale["source"]).read_bytes().endswith(b"edited")
    assert Path(conflict["source"]).exists()
    assert not (m.out / "escaped.jpg").exists()
    assert not (tmp_path / "elsewhere").exists()


def test_a_symbolic_link_inside_the_duplicates_root_cannot_lead_outside(m: Matched, tmp_path: Path) -> None:
    row = pq.read_table(m.manifest).to_pylist()[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    _dup(m).mkdir(parents=True)
    (_dup(m) / row["dataset"]).symlink_to(outside)
    report = apply_manifest(str(m.manifest), str(tmp_path / "journal"), execute=True)
    got = _outcomes(report.results)[row["source"]]
    assert got[0] == "refused"
    assert "symbolic link" in str(got[1])
    assert not list(outside.rglob("*"))
    assert Path(row["source"]).exists()


def test_suffix_moves_beside_an_existing_destination_with_its_sidecar(m: Matched, tmp_path: Path) -> None:
    row = next(r for r in pq.read_table(m.manifest).to_pylist() if Path(r["source"]).with_suffix(".txt").exists())
    dst = Path(row["destination"])
    dst.parent.mkdir(parents=True)
    dst.write_bytes(b"taken")
    options = ApplyOptions(sidecars=(".txt",), on_conflict="suffix")
    report = apply_manifest(str(m.manifest), str(tmp_path / "journal"), options, execute=True)
    renamed = dst.with_name(f"{dst.stem}.dup1{dst.suffix}")
    assert _outcomes(report.results)[row["source"]] == ("moved", None)
    assert renamed.is_file()
    assert dst.read_bytes() == b"taken"
    assert dst.with_name(f"{dst.stem}.dup1.txt").is_file()


def _manifest(path: Path, root: Path, rows: list[tuple[Path, Path]], **extra: list[object]) -> Path:
    """A hand-made manifest with only the required columns (and dupflow's metadata)."""
    table = pa.table({"source": [str(s) for s, _ in rows], "destination": [str(d) for _, d in rows], **extra})
    pq.write_table(table.replace_schema_metadata(manifest_metadata(str(root), {})), path)
    return path


def test_a_sidecar_shared_by_two_images_stays_with_the_one_left(tmp_path: Path) -> None:
    data, root = tmp_path / "data", tmp_path / "dups"
    a_jpg = write(data / "a.jpg", natural(1, 64, 48))
    write(data / "a.png", natural(1, 64, 48))
    (data / "a.txt").write_text("shared label")
    (data / "a.jpg.xmp").write_text("only a.jpg's")
    manifest = _manifest(tmp_path / "m.parquet", root, [(a_jpg, root / "d" / "a.jpg")])
    report = apply_manifest(str(manifest), str(tmp_path / "j"), ApplyOptions(sidecars=(".txt", ".xmp")), execute=True)
    got = _outcomes(report.results)
    assert got[str(a_jpg)] == ("moved", None)
    assert got[str(data / "a.jpg.xmp")] == ("moved", None)
    assert got[str(data / "a.txt")][0] == "refused"
    assert "shared with a.png" in str(got[str(data / "a.txt")][1])
    assert (data / "a.txt").exists()
    assert (root / "d" / "a.jpg.xmp").exists()


def test_an_annotation_folder_mirroring_the_dataset_moves_with_its_images(tmp_path: Path) -> None:
    images, labels, root = tmp_path / "ds" / "images", tmp_path / "ds" / "labels", tmp_path / "dups"
    img = write(images / "x" / "a.jpg", natural(2, 64, 48))
    (labels / "x").mkdir(parents=True)
    (labels / "x" / "a.txt").write_text("0 0.5 0.5 0.1 0.1")
    (labels / "x" / "b.txt").write_text("not a's")
    manifest = _manifest(tmp_path / "m.parquet", root, [(img, root / "ds" / "x" / "a.jpg")],
                         dataset=["ds"], rel_path=["x/a.jpg"])
    journal = str(tmp_path / "j")
    options = ApplyOptions(annotations={"ds": str(labels)})
    assert apply_manifest(str(manifest), journal, options, execute=True).counts == {"moved": 2}
    assert (root / "_annotations" / "ds" / "x" / "a.txt").read_text() == "0 0.5 0.5 0.1 0.1"
    assert (labels / "x" / "b.txt").exists()
    assert not (labels / "x" / "a.txt").exists()
    undo_journal(journal, execute=True)
    assert (labels / "x" / "a.txt").exists()
    assert img.exists()


def test_a_manifest_without_metadata_needs_the_duplicates_root(tmp_path: Path) -> None:
    img = write(tmp_path / "d" / "a.jpg", natural(3, 64, 48))
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"source": [str(img)], "destination": [str(tmp_path / "dups" / "a.jpg")]}), path)
    with pytest.raises(ConfigError, match="--duplicates-root"):
        apply_manifest(str(path), str(tmp_path / "j"))
    options = ApplyOptions(duplicates_root=str(tmp_path / "dups"))
    assert apply_manifest(str(path), str(tmp_path / "j"), options, execute=True).counts == {"moved": 1}


def test_a_journal_in_use_is_refused(m: Matched, tmp_path: Path) -> None:
    journal = str(tmp_path / "journal")
    with Journal(journal).lock(), pytest.raises(ConfigError, match="another dupflow apply"):
        apply_manifest(str(m.manifest), journal, execute=True)
    assert all(p.exists() for p in m.moving)


def test_cli_apply_is_a_dry_run_until_execute_then_undo_and_export(m: Matched, tmp_path: Path) -> None:
    before = tree(*m.data)
    dry = run_cli("apply", str(m.manifest), "--sidecars", ".txt,.json")
    assert "dry run: nothing was changed" in dry.stdout
    assert "add --execute" in dry.stdout
    assert tree(*m.data) == before

    done = run_cli("apply", str(m.manifest), "--sidecars", ".txt,.json", "--execute")
    assert f"moved{' ' * 12}{2 * len(m.moving):>9,}" in done.stdout
    journal = m.out / "apply-journal"
    assert not any(p.exists() for p in m.moving)

    kept = tmp_path / "kept.csv"
    run_cli("export", "--out", str(m.out), "--journal", str(journal), "--kept", str(kept))
    listed = set(pacsv.read_csv(kept)["uri"].to_pylist())
    assert listed
    assert not listed & {str(p) for p in m.moving}
    assert all(Path(u).exists() or "broken" in u for u in listed)

    run_cli("undo", str(journal), "--execute")
    assert tree(*m.data) == before
    bad = run_cli("apply", str(tmp_path / "nope.parquet"), check=False)
    assert bad.returncode == 1
    assert "no manifest at" in bad.stderr


def test_an_existing_destination_is_never_replaced_even_by_a_same_filesystem_move(tmp_path: Path) -> None:
    a = write(tmp_path / "d" / "a.jpg", natural(4, 64, 48))
    target = tmp_path / "dups" / "a.jpg"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"keep me")
    manifest = _manifest(tmp_path / "m.parquet", tmp_path / "dups", [(a, target)])
    for conflict in ("skip", "suffix"):
        apply_manifest(str(manifest), str(tmp_path / f"j-{conflict}"), ApplyOptions(on_conflict=conflict),
                       execute=True)
        assert target.read_bytes() == b"keep me"
    assert sorted(os.listdir(tmp_path / "dups")) == ["a.dup1.jpg", "a.jpg"]
    assert not a.exists()
