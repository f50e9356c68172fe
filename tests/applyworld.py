"""A matched world ready to apply, and ways to look at a file tree, shared by the apply tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dupflow.match.job import match_store
from dupflow.match.settings import MatchSettings
from worlds import World, build_world

__all__ = ["Matched", "digests", "matched_world", "rewrite_manifest", "tree"]


class Matched:
    """A built world (root/train, root/val), matched into root/out; sidecars beside some duplicates."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.world: World = build_world(root)
        self.out = root / "out"
        match_store(self.world.store, str(self.out), MatchSettings(threads=1))
        self.manifest = self.out / "manifest.parquet"
        self.moving = [Path(p) for p in pq.read_table(self.manifest)["source"].to_pylist()]
        # Annotations that must travel with their image: by stem, and by full name.
        for i, path in enumerate(self.moving):
            if i % 2 == 0:
                path.with_suffix(".txt").write_text(f"label {i}\n")
            else:
                Path(f"{path}.json").write_text(json.dumps({"box": [i, i, 10, 10]}))
        self.data = [root / "train", root / "val"]


def matched_world(root: Path) -> Matched:
    """Build, encode and match the planted world under `root`."""
    return Matched(root)


def tree(*roots: Path) -> dict[str, str]:
    """Every file under the roots (path relative to the first root's parent) -> SHA-256 of its bytes."""
    base = roots[0].parent
    return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
            for r in roots if r.exists() for p in sorted(r.rglob("*")) if p.is_file()}


def digests(*roots: Path) -> list[str]:
    """The multiset of file digests under the roots: nothing lost, nothing duplicated."""
    return sorted(tree(*roots).values())


def rewrite_manifest(path: Path, rows: list[dict[str, object]]) -> None:
    """Rewrite a manifest with these rows, keeping its schema and dupflow metadata (a reviewer's edit)."""
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
