"""A matched world for the report tests: planted copies, a hostile file name, scores of a model."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dupflow.encode.settings import EncodeSettings
from dupflow.io.sources import DatasetSource
from dupflow.match.job import match_store
from dupflow.match.settings import MatchSettings
from dupflow.store.encode_job import run_encode
from worlds import World, plant_world

__all__ = ["HOSTILE", "Reported", "components", "group_sizes", "page_data", "report_world"]

# A file name that runs script wherever a page pastes names in as HTML.
HOSTILE = "<img src=x onerror=alert(1)>.jpg"


@dataclass
class Reported:
    world: World
    out: Path
    scores_file: Path
    hostile: Path


def report_world(root: Path) -> Reported:
    """The planted world plus two byte copies of t06, one under a hostile name, encoded and matched into root/out,
    and a CSV of per-image model scores keyed by uri."""
    world = plant_world(root)
    hostile = root / "train" / HOSTILE
    shutil.copy(world.distinct[6], hostile)
    shutil.copy(world.distinct[6], root / "train" / "t06_again.jpg")  # and another: a group of three
    run_encode([DatasetSource("train", str(root / "train")), DatasetSource("val", str(root / "val"))], world.store,
               EncodeSettings(encoders=("phash", "dhash")))
    out = root / "out"
    match_store(world.store, str(out), MatchSettings())
    uris = pq.read_table(out / "scores.parquet")["uri"].to_pylist()
    scores_file = root / "model-scores.csv"
    pacsv.write_csv(pa.table({"uri": uris, "confidence": [round(i / 100, 2) for i in range(len(uris))],
                              "label": [f"class-{i % 3}" for i in range(len(uris))]}), scores_file)
    return Reported(world, out, scores_file, hostile)


def page_data(html: str, block: str = "dupflow-data") -> Any:
    """The JSON a report page carries in one of its data blocks."""
    m = re.search(rf'<script type="application/json" id="{block}">(.*?)</script>', html, re.S)
    assert m, f"no {block} block"
    return json.loads(m.group(1))


def group_sizes(pairs: pa.Table, threshold: float) -> dict[int, int]:
    """How many duplicate groups of each size the pairs at or above `threshold` make (the group-size plot)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for a, b, s in zip(pairs["a"].to_pylist(), pairs["b"].to_pylist(), pairs["similarity"].to_pylist(), strict=True):
        if s >= threshold - 1e-9:
            parent[find(a)] = find(b)
    return dict(Counter(Counter(find(x) for x in list(parent)).values()))


def components(pairs: pa.Table, threshold: float) -> int:
    """Duplicate groups among the pairs at or above `threshold` (what the viewer's slider must show)."""
    return sum(group_sizes(pairs, threshold).values())
