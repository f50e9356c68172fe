"""What is left after removing duplicates: the kept files as CSV/Parquet, and a COCO annotation file
filtered to the kept images (images, annotations and ids consistent)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dupflow.apply.journal import Journal, moved_files
from dupflow.apply.plan import read_manifest
from dupflow.errors import ConfigError
from dupflow.io.fs import atomic_write, join, open_fs, storage_error
from dupflow.schemas import parquet_bytes, read_meta

__all__ = ["CocoCounts", "coco_for_dataset", "filter_coco", "kept_files", "removed_sources", "write_table"]

KEPT_COLUMNS = ["uri", "dataset", "rel_path", "status", "uniqueness", "group", "keeper", "error"]


@dataclass(frozen=True)
class CocoCounts:
    """How a COCO file was filtered."""

    images: int
    removed_images: int
    unmatched_images: int  # file_name matched no file of the dataset (kept; check --coco-prefix)
    annotations: int
    removed_annotations: int


def removed_sources(manifest_url: str | None, journal_url: str | None,
                    storage_options: dict[str, Any] | None = None) -> set[str]:
    """The files taken out of the datasets: those the journal's runs moved (and no undo restored), or
    without a journal, every source in the manifest."""
    if journal_url:
        journal = Journal(journal_url, storage_options)
        runs = journal.runs()
        return set(moved_files(runs, {r.run: journal.read_table(r.begin.plan) for r in runs}))
    if not manifest_url:
        raise ConfigError("name the manifest or the apply journal that says which files were removed")
    return set(read_manifest(manifest_url, storage_options)[0]["source"].to_pylist())


def kept_files(out_url: str, removed: set[str], storage_options: dict[str, Any] | None = None) -> pa.Table:
    """Every listed image that stays (from OUT/scores.parquet), unreadable ones included with their error."""
    fs, root = open_fs(out_url, storage_options)
    path = join(root, "scores.parquet")
    try:
        scores = pq.read_table(io.BytesIO(fs.cat_file(path)))
    except FileNotFoundError as exc:
        raise ConfigError(f"no scores.parquet in {out_url}: run `dupflow match --out {out_url}` first") from exc
    except OSError as exc:
        raise storage_error(exc, join(out_url, "scores.parquet"), "read") from exc
    read_meta(scores.schema, "scores")
    gone = pc.is_in(scores["uri"], value_set=pa.array(sorted(removed), pa.string()))
    return scores.filter(pc.invert(gone)).select(KEPT_COLUMNS)


def write_table(table: pa.Table, url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Write a table as CSV or Parquet, chosen by the file name's extension."""
    fs, path = open_fs(url, storage_options)
    if url.endswith(".csv"):
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        data = buf.getvalue()
    elif url.endswith(".parquet"):
        data = parquet_bytes(table)
    else:
        raise ConfigError(f"{url}: name the file .csv or .parquet")
    atomic_write(fs, path, data)


def filter_coco(coco: dict[str, Any], rel_paths: set[str], removed: set[str], prefix: str = "") -> tuple[
        dict[str, Any], CocoCounts]:
    """`coco` without the removed images and their annotations. An image's file is `prefix/file_name`
    relative to its dataset; `rel_paths` are all the dataset's files, `removed` those taken out.
    Other keys (info, licenses, categories) are kept; ids are unchanged, so they stay consistent."""
    if not isinstance(coco.get("images"), list) or not isinstance(coco.get("annotations", []), list):
        raise ConfigError("not a COCO annotation file: it needs an `images` list (and an `annotations` list)")
    kept_images, gone_ids, unmatched = [], set(), 0
    for image in coco["images"]:
        if "id" not in image or "file_name" not in image:
            raise ConfigError(f"a COCO image entry lacks id or file_name: {json.dumps(image)[:200]}")
        name = str(image["file_name"]).removeprefix("./").lstrip("/")
        rel = f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name
        if rel in removed:
            gone_ids.add(image["id"])
            continue
        unmatched += rel not in rel_paths
        kept_images.append(image)
    annotations = coco.get("annotations", [])
    kept_annotations = [a for a in annotations if a.get("image_id") not in gone_ids]
    out = {**coco, "images": kept_images, "annotations": kept_annotations}
    counts = CocoCounts(len(coco["images"]), len(gone_ids), unmatched, len(annotations),
                        len(annotations) - len(kept_annotations))
    return out, counts


def coco_for_dataset(coco: dict[str, Any], kept: pa.Table, removed: set[str], dataset: str, prefix: str = "") -> tuple[
        dict[str, Any], CocoCounts]:
    """`filter_coco` for the COCO file of one dataset, given the kept table and the removed URIs."""
    rows = kept.filter(pc.equal(kept["dataset"], dataset)).select(["uri", "rel_path"]).to_pylist()
    if not rows:
        raise ConfigError(f"no kept file belongs to dataset {dataset!r}: check --coco-dataset")
    root = rows[0]["uri"][: len(rows[0]["uri"]) - len(rows[0]["rel_path"])]
    rel_removed = {u[len(root):] for u in removed if u.startswith(root)}
    return filter_coco(coco, {r["rel_path"] for r in rows} | rel_removed, rel_removed, prefix)
