"""Exact cosine threshold search: dupflow's tiled upper-triangle search vs scikit-learn's radius search.

Embeddings like a CNN's (clusters of related pictures, 1% planted near-copies), unit length, written once
to `bench/.work/cosine-N-D.npy` (float32) and `-f16.npy` (float16); each method then runs in its own process,
which reports its wall time, pairs found, the embeddings' bytes and its peak memory above what it held before
loading them (VmHWM - VmRSS). dupflow holds the store's cnn column as float16 ("dupflow"), a user's float32
file as float32 ("dupflow float32"). Pair counts are checked equal between methods. scikit-learn is skipped
above --peer-limit images.

    .venv/bin/python bench/cosine_speed.py --sizes 20000,100000 --dims 576 --threshold 0.9
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

WORK = Path(__file__).parent / ".work"
# the table's name of each method: its child process's name
METHODS = {"dupflow": "dupflow", "dupflow float32": "dupflow-float32", "scikit-learn radius_neighbors": "scikit-learn"}


def make(n: int, d: int, seed: int = 0) -> Path:
    path = WORK / f"cosine-{n}-{d}.npy"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 50), d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] * 0.8 + rng.normal(size=(n, d)).astype(np.float32)
    planted = rng.choice(n, n // 100, replace=False)
    x[planted] = x[(planted + 1) % n] + rng.normal(scale=0.15, size=(len(planted), d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    WORK.mkdir(parents=True, exist_ok=True)
    np.save(path, x.astype(np.float32))
    np.save(_half(path), x.astype(np.float16))
    return path


def _half(path: Path) -> Path:
    return path.with_name(path.stem + "-f16.npy")


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


def child(method: str, path: str, threshold: float, threads: int) -> None:
    base = _rss("VmRSS")
    x = np.load(_half(Path(path)) if method == "dupflow" else path)
    start = time.perf_counter()
    if method.startswith("dupflow"):
        from concurrent.futures import ThreadPoolExecutor

        import pyarrow as pa

        from dupflow.index import Block
        from dupflow.match.embeddings import Embeddings
        from dupflow.match.matching import Images, prepare_search
        from dupflow.match.rules import parse_rule

        # what `dupflow match --rule cosine>=T` runs: classes, then blocks on a thread pool
        n = len(x)
        images = Images(pa.table({"uri": [str(i) for i in range(n)]}), ("d",), np.zeros(n, np.int64),
                        np.zeros(n, bool), Embeddings(x, np.ones(n, bool), "bench"))
        search = prepare_search(images, parse_rule(f"cosine>={threshold}"))
        blocks = 4 * threads
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(lambda k: search.block(Block(k, blocks)), range(blocks)))
        pairs = sum(len(p) for p in parts)
    else:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(radius=1 - threshold, metric="cosine", algorithm="brute", n_jobs=threads).fit(x)
        neighbours = nn.radius_neighbors(x, return_distance=False)
        pairs = sum(int((row > i).sum()) for i, row in enumerate(neighbours))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "pairs": pairs, "held_bytes": x.nbytes,
                      "peak_extra_bytes": _rss("VmHWM") - base}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="20000,100000")
    parser.add_argument("--dims", default="576")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peer-limit", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per method, interleaved; medians reported")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cosine_speed.md")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "NPY"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.threshold, args.threads)
        return
    rows = []
    for d in (int(v) for v in args.dims.split(",")):
        for n in (int(v) for v in args.sizes.split(",")):
            path = make(n, d)
            runs: dict[str, list[dict[str, Any]]] = {}
            for _ in range(args.repeat):
                for method, name in METHODS.items():
                    if not name.startswith("dupflow") and n > args.peer_limit:
                        continue
                    done = subprocess.run([sys.executable, __file__, "--threshold", str(args.threshold), "--threads",
                                           str(args.threads), "--child", name, str(path)],
                                          capture_output=True, text=True, check=True)
                    runs.setdefault(method, []).append(json.loads(done.stdout.strip().splitlines()[-1]))
                    print(method, n, d, runs[method][-1], flush=True)
            for method, got in runs.items():
                seconds = statistics.median(r["seconds"] for r in got)
                pairs = zip(got, runs["dupflow"], strict=False)
                ratio = statistics.median(r["seconds"] / f["seconds"] for r, f in pairs)
                rows.append({"n": n, "d": d, "method": method, "runs": len(got), "seconds": seconds,
                             "pairs": got[0]["pairs"], "held_bytes": got[0]["held_bytes"],
                             "peak_extra_bytes": max(r["peak_extra_bytes"] for r in got),
                             "pairs_per_second": n * (n - 1) / 2 / seconds, "x_dupflow": ratio})
    for n, d in {(r["n"], r["d"]) for r in rows}:
        counts = {r["pairs"] for r in rows if (r["n"], r["d"]) == (n, d)}
        assert len(counts) == 1, f"methods disagree on {n} x {d}: {counts}"
    lines = [f"# Cosine threshold search ({time.strftime('%Y-%m-%d')}, {args.threads} threads, threshold "
             f"{args.threshold})", "", f"Command: `.venv/bin/python bench/cosine_speed.py --sizes {args.sizes} --dims "
             f"{args.dims} --threshold {args.threshold} --repeat {args.repeat}`; medians, ratios taken per "
             "repetition", "",
             "| images | dims | method | runs | median seconds | pairs found | M pairs compared/s "
             "| embeddings held | peak memory above start (imports, embeddings, search) | x dupflow |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['d']} | {r['method']} | {r['runs']} | {r['seconds']:.1f} | {r['pairs']:,} | "
                     f"{r['pairs_per_second'] / 1e6:.0f} | {r['held_bytes'] / 2**20:.0f} MiB | "
                     f"{r['peak_extra_bytes'] / 2**20:.0f} MiB | "
                     f"{r['x_dupflow']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
