"""Exports after removing duplicates: the kept files, and a COCO file filtered to the kept images."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from applyworld import matched_world
from conftest import run_cli
from dupflow.apply import ApplyOptions, apply_manifest
from dupflow.apply.exports import coco_for_dataset, filter_coco, kept_files, removed_sources
from dupflow.errors import ConfigError


def _coco(files: list[str]) -> dict[str, object]:
    """A COCO file describing these files: two boxes each, ids that are not the row numbers."""
    images = [{"id": 100 + i, "file_name": f, "width": 320, "height": 240} for i, f in enumerate(files)]
    annotations = [{"id": 1000 + 2 * i + k, "image_id": 100 + i, "category_id": 1 + k, "bbox": [1, 2, 3, 4]}
                   for i in range(len(files)) for k in range(2)]
    return {"info": {"description": "test"}, "images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def _valid(coco: dict[str, list[dict[str, object]]]) -> None:
    ids = {i["id"] for i in coco["images"]}
    assert len(ids) == len(coco["images"])
    assert all(a["image_id"] in ids for a in coco["annotations"])


def test_coco_export_keeps_exactly_the_kept_images_and_their_annotations(tmp_path: Path) -> None:
    m = matched_world(tmp_path / "w")
    val = m.root / "val"
    files = sorted(str(p.relative_to(val)) for p in val.rglob("*.jpg"))
    coco = _coco(files)
    journal = str(tmp_path / "journal")
    apply_manifest(str(m.manifest), journal, ApplyOptions(), execute=True)

    removed = removed_sources(None, journal)
    kept = kept_files(str(m.out), removed)
    out, counts = coco_for_dataset(coco, kept, removed, "val")
    _valid(out)
    gone = {str(p.relative_to(val)) for p in m.moving if p.is_relative_to(val)}
    assert gone
    assert {i["file_name"] for i in out["images"]} == set(files) - gone
    assert counts.removed_images == len(gone)
    assert counts.removed_annotations == 2 * len(gone)
    assert len(out["annotations"]) == 2 * len(out["images"])
    assert counts.unmatched_images == 0
    assert out["categories"] == coco["categories"]
    assert out["info"] == coco["info"]


def test_kept_files_are_every_scored_image_but_the_manifest_sources(tmp_path: Path) -> None:
    m = matched_world(tmp_path / "w")
    removed = removed_sources(str(m.manifest), None)
    kept = kept_files(str(m.out), removed)
    scores = pq.read_table(m.out / "scores.parquet")
    assert kept.num_rows + len(removed) == scores.num_rows
    assert removed == {str(p) for p in m.moving}
    assert not removed & set(kept["uri"].to_pylist())


def test_coco_entries_the_dataset_lacks_are_counted_not_dropped() -> None:
    coco = _coco(["a.jpg", "sub/b.jpg", "elsewhere.jpg"])
    out, counts = filter_coco(coco, {"img/a.jpg", "img/sub/b.jpg"}, {"img/sub/b.jpg"}, prefix="img")
    assert [i["file_name"] for i in out["images"]] == ["a.jpg", "elsewhere.jpg"]
    assert counts.unmatched_images == 1
    assert counts.removed_annotations == 2
    with pytest.raises(ConfigError, match="images"):
        filter_coco({"annotations": []}, set(), set())


def test_cli_export_writes_kept_parquet_and_filtered_coco(tmp_path: Path) -> None:
    m = matched_world(tmp_path / "w")
    train = m.root / "train"
    coco_in = tmp_path / "train.json"
    coco_in.write_text(json.dumps(_coco(sorted(str(p.relative_to(train)) for p in train.rglob("*.*g")))))
    run_cli("apply", str(m.manifest), "--execute")
    result = run_cli("export", "--out", str(m.out), "--journal", str(m.out / "apply-journal"), "--kept",
                     str(tmp_path / "kept.parquet"), "--coco", str(coco_in), "--coco-dataset", "train",
                     "--coco-out", str(tmp_path / "train-kept.json"))
    filtered = json.loads((tmp_path / "train-kept.json").read_text())
    _valid(filtered)
    moved_train = [p for p in m.moving if p.is_relative_to(train)]
    assert len(filtered["images"]) == len(list(train.rglob("*.*g")))
    assert moved_train
    assert "COCO:" in result.stdout
    assert pq.read_table(tmp_path / "kept.parquet").num_rows == pq.read_table(m.out / "scores.parquet").num_rows - len(
        m.moving)
