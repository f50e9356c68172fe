"""Matching at scale on synthetic stores: a full match, then an incremental one after 1% new files.

The store holds what the default path encodes (SHA-256, pHash and the seven mirrored/rotated pHashes) for
N files in two datasets. The hashes are clustered like real ones: each bit is biased as pHash bits are,
2% of the files are near copies (0-8 bits off) of another, 0.5% exact copies, and each file's mirrored
pHashes are a fixed bit shuffle of its own plus noise, so that the orientation join costs what it costs on
photographs. Every measurement runs in its own process, which reports its wall time and peak memory.

    .venv/bin/python bench/scale.py --sizes 1000000,3000000,10000000 --work bench/.work/scale
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HERE = Path(__file__).resolve().parent
NEAR, EXACT = 0.02, 0.005


def hashes(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(phash, dihedral (n, 7) words, exact (n, 4) words): clustered, with planted near and exact copies."""
    bias = np.clip(rng.beta(8, 8, 64), 0.2, 0.8)
    bits = rng.random((n, 64)) < bias
    phash = np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)
    exact = rng.integers(0, 2**63, (n, 4), dtype=np.uint64)
    near = rng.choice(n, int(n * NEAR), replace=False)
    source = rng.integers(0, n, len(near))
    flips = rng.integers(0, 9, len(near))
    noise = np.zeros(len(near), np.uint64)
    for k in range(8):
        bit = (np.uint64(1) << rng.integers(0, 64, len(near)).astype(np.uint64))
        noise ^= np.where(flips > k, bit, np.uint64(0))
    phash[near] = phash[source] ^ noise
    copied = rng.choice(n, int(n * EXACT), replace=False)
    origin = rng.integers(0, n, len(copied))
    phash[copied], exact[copied] = phash[origin], exact[origin]
    shuffles = [rng.permutation(64) for _ in range(7)]
    own = np.unpackbits(phash.astype(">u8").view(np.uint8).reshape(n, 8), axis=1).astype(bool)
    views = []
    for order in shuffles:
        view = own[:, order] ^ (rng.random((n, 64)) < 0.08)
        views.append(np.packbits(view, axis=1).view(">u8").ravel().astype(np.uint64))
    return phash, np.stack(views, axis=1), exact


def table(first: int, n: int, dataset: str, seed: int) -> pa.Table:
    """Rows for files `first`..`first+n` of one dataset."""
    rng = np.random.default_rng(seed)
    return rows(first, dataset, rng, *hashes(n, rng))


def rows(first: int, dataset: str, rng: np.random.Generator, phash: np.ndarray, dihedral: np.ndarray,
         exact: np.ndarray) -> pa.Table:
    """A store's rows for files `first`.. of one dataset with these hashes (one file per row)."""
    n = len(phash)
    ids = pa.array(np.arange(first, first + n))
    rel = pc.binary_join_element_wise(pc.cast(pc.divide(ids, 1000), pa.string()), "/img",
                                      pc.cast(ids, pa.string()), ".jpg", "")
    uri = pc.binary_join_element_wise(f"s3://corpus/{dataset}/", rel, "")
    return pa.table({
        "uri": uri, "rel_path": rel,
        "size": pa.array(rng.integers(20_000, 2_000_000, n)),
        "mtime": pa.array(np.full(n, 1_700_000_000_000_000_000), pa.timestamp("ns", tz="UTC")),
        "etag": pa.array([None] * n, pa.string()),
        "width": pa.array(np.full(n, 640, np.int32)), "height": pa.array(np.full(n, 480, np.int32)),
        "format": pa.array(["JPEG"] * n), "mode": pa.array(["RGB"] * n),
        "error": pa.array([None] * n, pa.string()), "error_message": pa.array([None] * n, pa.string()),
        "exact": pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), n, [None, pa.py_buffer(exact.astype(">u8"))]),
        "phash": pa.array(phash),
        "phash_dihedral": pa.FixedSizeBinaryArray.from_buffers(pa.binary(56), n,
                                                               [None, pa.py_buffer(dihedral.astype(">u8"))]),
    })


def build(store: str, n: int, new: int = 0) -> None:
    """Write the store: N files in two datasets (train 80%, val 20%), plus `new` files in train."""
    from dupflow.encode.settings import EncodeSettings
    from dupflow.store.encodings import EncodingsStore

    s = EncodingsStore(store)
    rec = s.begin(EncodeSettings(encoders=("phash", "phash_dihedral")))
    train = int(n * 0.8)
    tables = {"train": table(0, train, "train", 1), "val": table(train, n - train, "val", 2)}
    if new:
        tables["train"] = pa.concat_tables([tables["train"], table(n, new, "train", 3)])
    s.write_tables(rec, tables, {name: f"s3://corpus/{name}" for name in tables})


def measure(task: str, *args: str) -> dict[str, Any]:
    """Run `task` in a fresh process; its wall time, peak memory and what it returned."""
    out = subprocess.run([sys.executable, __file__, "--run", task, *args], capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{task} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run_task(task: str, args: list[str]) -> dict[str, Any]:
    start = time.perf_counter()
    info: dict[str, Any] = {}
    if task == "build":
        build(args[0], int(args[1]), int(args[2]))
    elif task == "match":
        from dupflow.match.job import match_store
        from dupflow.match.settings import MatchSettings

        settings = MatchSettings(incremental=args[2] == "1", threads=2, duplicates_root=args[3])
        report = match_store(args[0], args[1], settings)
        info = {"pairs": report.summary["totals"]["pairs"], "groups": report.summary["totals"]["groups"],
                "search": report.search["mode"], "seconds": report.seconds,
                "searched": sum(r["searched"] for r in report.search["rules"]),
                "classes": sum(r["classes"] for r in report.search["rules"])}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"wall_s": round(time.perf_counter() - start, 2), "peak_gib": round(peak, 2), **info}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000")
    parser.add_argument("--work", default=str(HERE / ".work" / "scale"))
    parser.add_argument("--results", default=str(HERE / "results" / "scale.json"),
                        help="JSON; the table goes beside it (.md)")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    known, rest = parser.parse_known_args()
    if known.run:
        print(json.dumps(run_task(known.run, rest)))
        return
    work = Path(known.work)
    rows = []
    for n in (int(s) for s in known.sizes.split(",")):
        store, out = str(work / f"store-{n}"), str(work / f"out-{n}")
        subprocess.run(["rm", "-rf", store, out], check=True)
        built = measure("build", store, str(n), "0")
        moved = str(work / "moved")
        full = measure("match", store, out, "1", moved)
        grown = measure("build", store, str(n), str(n // 100))
        incremental = measure("match", store, out, "1", moved)
        again = measure("match", store, out + "-full", "0", moved)
        same = all((Path(out) / f).read_bytes() == (Path(out + "-full") / f).read_bytes()
                   for f in ("pairs.parquet", "groups.parquet", "scores.parquet", "manifest.parquet"))
        row = {"n": n, "build": built, "full": full, "grow_1pct": grown, "incremental": incremental,
               "full_after": again, "identical": same}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(known.results).write_text(json.dumps(rows, indent=2) + "\n")
    Path(known.results).with_suffix(".md").write_text(table_of(rows))


def table_of(rows: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table: each run's wall time (and its search part) and peak memory."""
    from encode_speed import markdown_table  # bench/ is on sys.path (the script's folder)

    lines = []
    for r in rows:
        full, inc = r["full"], r["incremental"]
        lines.append({
            "N": f"{r['n']:,}", "classes searched (incremental)": f"{inc['searched']:,} of {inc['classes']:,}",
            "full match": f"{full['wall_s']:.1f} s (search {full['seconds']['matched']:.1f} s)",
            "incremental, 1% new": f"{inc['wall_s']:.1f} s (search {inc['seconds']['matched']:.1f} s)",
            "incremental / full": f"{inc['wall_s'] / full['wall_s']:.0%}",
            "full match after": f"{r['full_after']['wall_s']:.1f} s",
            "peak memory full / incremental": f"{full['peak_gib']:.2f} / {inc['peak_gib']:.2f} GiB",
            "pairs": f"{inc['pairs']:,}", "same outputs": "yes" if r["identical"] else "NO",
        })
    return markdown_table(lines, list(lines[0])) if lines else ""


if __name__ == "__main__":
    main()
