"""Match-worker memory vs the number of workers, on one synthetic store with local features.

The store holds N files with SHA-256, pHash, the seven mirrored/rotated pHashes and ORB local features of
the stored size (232 keypoints and a 32x24 thumbnail: ~8.9 KB a value, what `orb` stores for a photograph).
pHash bits are uniform; 2% of the files are near copies (0-8 bits off, their features the source's with
keypoints moved by up to 1 px, so they verify), 0.5% exact copies; other descriptors are random (no
match). The rules are `exact` and `phash<=10&verified` (every orientation), so that verification runs on the
planted copies: uniform random hashes put 4e-5 of all pairs within 16 bits, which would measure
verification of random pairs instead.

For W = 1, 2, 4 the match runs as the flow runs it: a Dask LocalCluster of W worker processes (one thread
each), block k of W on worker k (`match_rules_block`), then `finish_match_blocks` on worker 0. Each
worker's peak resident set is read from the worker after the run; "features fetched" counts the values
each worker parsed.

    .venv/bin/python bench/worker_memory.py --images 200000

Run it again with PYTHONPATH naming another checkout's src/ to measure that release on the same store
(`--label`, `--reuse`).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from scale import rows  # bench/ is on sys.path (the script's folder)

HERE = Path(__file__).resolve().parent
KEYPOINTS, THUMB = 116, (32, 24)  # per view; thumbnail (width, height)
RULES = ("exact", "phash<=10&verified")


def planted(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """pHash words, the 7 mirrored/rotated pHashes, SHA-256 words, and each row's source (-1: none): 2% near
    copies (0-8 bits off), then 0.5% exact copies."""
    phash = rng.integers(0, 2**64, n, dtype=np.uint64)
    dihedral = rng.integers(0, 2**64, (n, 7), dtype=np.uint64)
    exact = rng.integers(0, 2**63, (n, 4), dtype=np.uint64)
    source = np.full(n, -1, np.int64)
    near = rng.choice(n, int(n * 0.02), replace=False)
    source[near] = rng.integers(0, n, len(near))
    noise = np.zeros(len(near), np.uint64)
    flips = rng.integers(0, 9, len(near))
    for k in range(8):
        bit = np.uint64(1) << rng.integers(0, 64, len(near)).astype(np.uint64)
        noise ^= np.where(flips > k, bit, np.uint64(0))
    phash[near] = phash[source[near]] ^ noise
    copied = rng.choice(n, int(n * 0.005), replace=False)
    source[copied] = rng.integers(0, n, len(copied))
    phash[copied], dihedral[copied], exact[copied] = (phash[source[copied]], dihedral[source[copied]],
                                                      exact[source[copied]])
    return phash, dihedral, exact, source


def table(first: int, n: int, dataset: str, seed: int) -> pa.Table:
    """Rows for files `first`..`first+n` of one dataset, with near copies planted in hashes and features."""
    rng = np.random.default_rng(seed)
    phash, dihedral, exact, source = planted(n, rng)
    k = 2 * KEYPOINTS
    points = rng.integers(0, [512 * 8, 384 * 8], (n, k, 2)).astype(np.int32)
    descriptors = rng.integers(0, 256, (n, k, 32), dtype=np.uint8)
    thumbs = rng.integers(0, 256, (n, THUMB[1] * THUMB[0]), dtype=np.uint8)
    copy = np.flatnonzero(source >= 0)
    moved = np.clip(points[source[copy]] + rng.integers(-8, 9, (len(copy), k, 2)), 0, [512 * 8 - 1, 384 * 8 - 1])
    same = (exact[copy] == exact[source[copy]]).all(axis=1)  # exact copies: the very same value
    points[copy] = np.where(same[:, None, None], points[source[copy]], moved)
    descriptors[copy], thumbs[copy] = descriptors[source[copy]], thumbs[source[copy]]
    header = struct.pack("<BHHHH", 2, 512, 384, KEYPOINTS, KEYPOINTS)
    fixed = points.astype("<u2")
    values = [header + fixed[i].tobytes() + descriptors[i].tobytes() + thumbs[i].tobytes() for i in range(n)]
    return rows(first, dataset, rng, phash, dihedral, exact).append_column("orb", pa.array(values, pa.binary()))


def build(store: str, n: int) -> None:
    """N files in two datasets (train 80%, val 20%)."""
    from dupflow.encode.settings import EncodeSettings
    from dupflow.store.encodings import EncodingsStore

    s = EncodingsStore(store)
    rec = s.begin(EncodeSettings(encoders=("phash", "phash_dihedral", "orb")))
    train = int(n * 0.8)
    tables = {"train": table(0, train, "train", 1), "val": table(train, n - train, "val", 2)}
    s.write_tables(rec, tables, {name: f"s3://corpus/{name}" for name in tables})


def _peak_gib() -> float:
    """This process's peak resident set (VmHWM: ru_maxrss would carry the parent's over exec)."""
    with open("/proc/self/status") as fh:
        kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    return kib / 2**20


def _rss_gib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**30


def _warm() -> float:
    import dupflow.match.job  # noqa: F401  # what a worker has loaded before its first block
    return _rss_gib()


def _fetched() -> int | None:
    """Feature values this worker fetched (0 for a store without local features); None for a release that
    holds every value."""
    from dupflow.match import job

    if not job._PREPARED:
        return None
    features = next(iter(job._PREPARED.values())).images.features
    return 0 if features is None else getattr(features, "fetched", None)


def run(store: str, out: str, workers: int, rules: tuple[str, ...] = RULES) -> dict[str, Any]:
    """One match on W worker processes: each worker's peak memory, and the wall time."""
    from dask.distributed import Client, LocalCluster

    from dupflow.index.blocks import Block
    from dupflow.match.job import finish_match_blocks, match_rules_block, plan_match
    from dupflow.match.settings import MatchSettings

    shutil.rmtree(out, ignore_errors=True)
    settings = MatchSettings(rules=rules, incremental=False, orientations=True, duplicates_root=out + "-moved")
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=0) as cluster, Client(cluster) as client:
        addresses = sorted(client.scheduler_info()["workers"])
        baseline = client.run(_warm)
        start = time.perf_counter()
        job = plan_match(store, out, settings)
        blocks = [client.submit(match_rules_block, job, Block(k, workers), workers=[a], pure=False)
                  for k, a in enumerate(addresses)]
        report = client.submit(finish_match_blocks, job, blocks, workers=[addresses[0]], pure=False).result()
        wall = time.perf_counter() - start
        peaks, fetched = client.run(_peak_gib), client.run(_fetched)
    return {"workers": workers, "wall_s": round(wall, 1), "pairs": report.summary["totals"]["pairs"],
            "groups": report.summary["totals"]["groups"],
            "worker_peak_gib": [round(peaks[a], 2) for a in addresses],
            "worker_start_gib": [round(baseline[a], 2) for a in addresses],
            "features_fetched": [fetched[a] for a in addresses]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--work", default=str(HERE / ".work" / "worker_memory"))
    parser.add_argument("--label", default="this release")
    parser.add_argument("--reuse", action="store_true", help="keep the store of an earlier run")
    parser.add_argument("--store", help="match this store instead of building one (e.g. bench/scale.py's, whose "
                        "images have no local features: pass --rules too); --images then only labels the run")
    parser.add_argument("--rules", default=",".join(RULES), help="comma-separated match rules")
    parser.add_argument("--results", default=str(HERE / "results" / "worker_memory.json"),
                        help="JSON, appended to; the table goes beside it (.md)")
    args = parser.parse_args()
    work = Path(args.work)
    store = args.store or str(work / f"store-{args.images}")
    if not args.store and not (args.reuse and Path(store).exists()):
        shutil.rmtree(store, ignore_errors=True)
        start = time.perf_counter()
        build(store, args.images)
        print(f"built {args.images:,} rows in {time.perf_counter() - start:.0f} s", flush=True)
    results = Path(args.results)
    rows = json.loads(results.read_text()) if results.exists() else []
    rows = [r for r in rows if (r["label"], r["images"]) != (args.label, args.images)]
    for w in (int(x) for x in args.workers.split(",")):
        row = {"label": args.label, "images": args.images,
               **run(store, str(work / f"out-{w}"), w, tuple(args.rules.split(",")))}
        print(json.dumps(row), flush=True)
        rows.append(row)
    results.write_text(json.dumps(rows, indent=2) + "\n")
    results.with_suffix(".md").write_text(table_of(rows))


def table_of(rows: list[dict[str, Any]]) -> str:
    """Each run as a row: the largest worker peak, and every worker's peak over its start."""
    from encode_speed import markdown_table

    lines = [{
        "release": r["label"], "N": f"{r['images']:,}", "workers": r["workers"], "wall": f"{r['wall_s']:.1f} s",
        "largest worker peak": f"{max(r['worker_peak_gib']):.2f} GiB",
        "each worker: peak (after imports)": ", ".join(
            f"{p:.2f} ({s:.2f})" for p, s in zip(r["worker_peak_gib"], r["worker_start_gib"], strict=True)),
        "features fetched per worker": "every value held" if None in r["features_fetched"] else ", ".join(
            f"{f:,}" for f in r["features_fetched"]),
        "pairs": f"{r['pairs']:,}", "groups": f"{r['groups']:,}",
    } for r in rows]
    return markdown_table(lines, list(lines[0])) if lines else ""


if __name__ == "__main__":
    main()
