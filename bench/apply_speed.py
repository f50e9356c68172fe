"""Apply speed: what the journal, the checks and the verification cost over bare moves.

    .venv/bin/python bench/apply_speed.py --files 5000 --size-kb 150

Writes `--files` files of random bytes into a dataset folder and a manifest moving all of them, then
times, each on a fresh copy of the tree:
- `shutil.move loop`: the bare moves the `remove_duplicates.py` seed makes (no checks, no journal);
- `dupflow dry run`: every check, nothing moved;
- `dupflow execute, hard links`: the same filesystem (link, SHA-256, unlink; journaled);
- `dupflow execute, copy-verify-delete`: the path taken across filesystems and on object stores
  (stream + SHA-256, fsync, read back, compare, delete), forced here on one disk;
- `dupflow undo`: every file back.
Results: bench/results/apply_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dupflow.apply import ApplyOptions, apply_manifest, moves, undo_journal
from dupflow.schemas import manifest_metadata

RESULTS = Path(__file__).parent / "results"


def _world(root: Path, files: int, size: int) -> tuple[Path, list[tuple[Path, Path]]]:
    rng = os.urandom
    data, dups = root / "data", root / "dups"
    pairs = []
    for i in range(files):
        src = data / f"d{i % 50:02d}" / f"img_{i:06d}.jpg"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(rng(size))
        pairs.append((src, dups / "ds" / src.parent.name / src.name))
    rows = {"source": [str(s) for s, _ in pairs], "destination": [str(d) for _, d in pairs],
            "size": [s.stat().st_size for s, _ in pairs],
            "sha256": [hashlib.sha256(s.read_bytes()).hexdigest() for s, _ in pairs]}
    manifest = root / "manifest.parquet"
    pq.write_table(pa.table(rows).replace_schema_metadata(manifest_metadata(str(dups), {})), manifest)
    return manifest, pairs


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--size-kb", type=int, default=150)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dupflow-apply-bench-"))
    pristine = work / "pristine"
    manifest, pairs = _world(pristine, args.files, args.size_kb * 1024)
    options = ApplyOptions(threads=args.threads)
    results: dict[str, float] = {}

    def fresh() -> Path:
        tree = work / "tree"
        shutil.rmtree(tree, ignore_errors=True)
        shutil.copytree(pristine, tree)
        return tree

    def rebased(tree: Path) -> list[tuple[Path, Path]]:
        return [(tree / s.relative_to(pristine), tree / d.relative_to(pristine)) for s, d in pairs]

    tree = fresh()

    def bare() -> None:
        for s, d in rebased(tree):
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(s, d)

    results["shutil.move loop (no checks, no journal)"] = _timed(bare)
    shutil.rmtree(tree)
    # the manifest names the pristine paths: dupflow moves them, undo brings them back, then the copy path
    results["dupflow dry run"] = _timed(lambda: apply_manifest(str(manifest), str(work / "j-dry"), options))
    results["dupflow execute, hard links"] = _timed(
        lambda: apply_manifest(str(manifest), str(work / "j-link"), options, execute=True))
    results["dupflow undo"] = _timed(lambda: undo_journal(str(work / "j-link"), execute=True, threads=args.threads))
    original = moves._move_by_link
    moves._move_by_link = lambda *_args: None  # type: ignore[assignment]
    results["dupflow execute, copy-verify-delete"] = _timed(
        lambda: apply_manifest(str(manifest), str(work / "j-copy"), options, execute=True))
    moves._move_by_link = original
    shutil.rmtree(work)

    mb = args.files * args.size_kb / 1024
    lines = [f"# Apply speed: {args.files:,} files of {args.size_kb} KB ({mb:,.0f} MB), {args.threads} threads, "
             f"{os.cpu_count()} cores", "", "| what | seconds | files/s | MB/s |", "|---|---:|---:|---:|"]
    for name, secs in results.items():
        lines.append(f"| {name} | {secs:.2f} | {args.files / secs:,.0f} | {mb / secs:,.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "apply_speed.md").write_text(text)
    (RESULTS / "apply_speed.json").write_text(json.dumps({"files": args.files, "size_kb": args.size_kb,
                                                          "threads": args.threads, "seconds": results}, indent=2))


if __name__ == "__main__":
    main()
