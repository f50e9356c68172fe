"""A first `dupflow run` (embedded Prefect API, its own local Dask cluster) against `dupflow encode` +
`dupflow match` on the same files, whole processes timed from outside, each from an empty store.

Rows:
- the sample set (`dupflow sample-data`, 54 files; the run writes its report, as scripts/demo.sh does):
  a first run on a machine where Prefect's database exists, and a first run ever (a new PREFECT_HOME:
  Prefect creates its database first);
- photographs: the accuracy sets of seeds 0 and 1 (bench/accuracy.py; real photographs and their edits,
  two datasets): `encode` + `match` against `run --no-report` (the same work), on a PREFECT_HOME whose
  database exists, and the ratio.

    .venv/bin/python bench/cold_run.py --repeat 3

Medians of `--repeat` interleaved repetitions. Results: bench/results/cold_run.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from accuracy import _labelled

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DUPFLOW = str(Path(sys.executable).with_name("dupflow"))


def _timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([DUPFLOW, *args], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"dupflow {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds


def _photographs() -> list[str]:
    datasets = []
    for seed in (0, 1):
        _, root, _ = _labelled(seed, reuse=True)  # built once, shared with bench/accuracy.py
        datasets += ["-d", f"train{seed}={root / 'train'}", "-d", f"val{seed}={root / 'val'}"]
    return datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dupflow-cold-"))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(work / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    subprocess.run([str(Path(sys.executable).with_name("prefect")), "server", "database", "upgrade", "-y"],
                   env=env, capture_output=True, check=True)  # a machine where Prefect's database exists
    sample = work / "sample"
    _timed(["sample-data", str(sample)], env)
    sample_sets = ["-d", f"train={sample / 'train'}", "-d", f"val={sample / 'val'}"]
    photos = _photographs()
    files = sum(1 for d in photos[1::2] for p in Path(d.split("=", 1)[1]).rglob("*") if p.is_file())
    times: dict[str, list[float]] = {k: [] for k in ("sample_first_run", "sample_first_run_new_prefect_home",
                                                     "photos_encode_match", "photos_run")}
    try:
        for i in range(args.repeat):
            out = work / f"rep{i}"
            times["sample_first_run"].append(_timed(
                ["run", *sample_sets, "--store", str(out / "s1"), "--out", str(out / "o1")], env))
            fresh = {**env, "PREFECT_HOME": str(out / "new-prefect-home")}
            times["sample_first_run_new_prefect_home"].append(_timed(
                ["run", *sample_sets, "--store", str(out / "s2"), "--out", str(out / "o2")], fresh))
            times["photos_encode_match"].append(
                _timed(["encode", *photos, "--store", str(out / "s3")], env)
                + _timed(["match", "--store", str(out / "s3"), "--out", str(out / "o3")], env))
            times["photos_run"].append(_timed(
                ["run", *photos, "--store", str(out / "s4"), "--out", str(out / "o4"), "--no-report"], env))
            print(json.dumps({k: round(v[-1], 2) for k, v in times.items()}), flush=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: round(statistics.median(v), 2) for k, v in times.items()}
    result = {"repeat": args.repeat, "cores": os.cpu_count(), "photo_files": files, "median_s": med,
              "run_over_encode_match": round(med["photos_run"] / med["photos_encode_match"], 2),
              "all_s": {k: [round(x, 2) for x in v] for k, v in times.items()}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cold_run.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"{os.cpu_count()} cores, whole processes, median of {args.repeat}; each from an empty store.", "",
             "| what | wall s |", "|---|---:|",
             f"| sample set (54 files): first `dupflow run` (Prefect's database exists) | {med['sample_first_run']} |",
             f"| sample set: first run on a new PREFECT_HOME (Prefect creates its database) | "
             f"{med['sample_first_run_new_prefect_home']} |",
             f"| {files:,} photographs: `dupflow encode` + `dupflow match` | {med['photos_encode_match']} |",
             f"| {files:,} photographs: `dupflow run --no-report` (embedded API, own cluster) | {med['photos_run']} "
             f"({result['run_over_encode_match']}x) |"]
    (RESULTS / "cold_run.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
