"""The cnn encoder's cost: ONNX Runtime vs eager PyTorch vs fastdup, on the same photographs, in one run.

Sets (deterministic, kept under bench/.work/cnn-speed/):

- `large`: camera-size JPEG photographs, 640x480 .. 4000x3000 (bench/photos.py);
- `small`: 200 .. 640 px crops of those photographs, the size of a web or thumbnail dataset.

Every method runs as its own process, one after another: `dupflow encode -e phash,dhash[,cnn] -j 2`
(the whole command: start-up, listing, decode, hashes, network, store commit), and fastdup's whole
default run where bench/setup_fastdup.sh installed it. CPU seconds are the process's and its
children's; images per CPU-second are files / CPU seconds. Peak RSS is the largest single process
(a dupflow encode worker; fastdup's one process). The ONNX model is converted beforehand
(`dupflow model prepare`, once per machine), so its conversion is not counted.

It also reports the largest |cosine difference| between ONNX Runtime and eager PyTorch on the same
images (float32), between float32 and the float16 the store keeps, and the store's bytes per image.

    .venv/bin/python bench/cnn_speed.py [--large 600] [--small 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = Path(os.environ.get("CNN_SPEED_WORK") or HERE / ".work" / "cnn-speed")
RESULTS = HERE / "results"
DUPFLOW = ROOT / ".venv" / "bin" / "dupflow"
FASTDUP = HERE / ".venv-fastdup" / "bin" / "python"
METHODS = {
    "dupflow phash,dhash (no network)": ["-e", "phash,dhash"],
    "dupflow phash,dhash,cnn --cnn-runtime torch (eager PyTorch)": ["-e", "phash,dhash,cnn", "--cnn-runtime", "torch"],
    "dupflow phash,dhash,cnn --cnn-runtime onnx (default)": ["-e", "phash,dhash,cnn", "--cnn-runtime", "onnx"],
}


def small_set(large: Path, out: Path, n: int) -> Path:
    """`n` crops of 200..640 px from the large photographs (same seed, same files)."""
    marker = out / f".done-{n}"
    if marker.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    sources = sorted(large.glob("*.jpg"))
    for i in range(n):
        with Image.open(sources[i % len(sources)]) as im:
            side = int(rng.integers(200, 641))
            w, h = im.size
            cw, ch = int(w * rng.uniform(0.3, 0.8)), int(h * rng.uniform(0.3, 0.8))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            crop = im.crop((x, y, x + cw, y + ch))
            crop.thumbnail((side, side), Image.Resampling.LANCZOS)
            crop.save(out / f"crop_{i:05d}.jpg", quality=int(rng.integers(80, 96)))
    marker.touch()
    return out


def _children_usage() -> tuple[float, float]:
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return c.ru_utime + c.ru_stime, c.ru_maxrss / 1024


def run_dupflow(folder: Path, flags: list[str]) -> dict[str, Any]:
    """One `dupflow encode` of `folder` into a fresh store, in a child process."""
    store = WORK / "store"
    shutil.rmtree(store, ignore_errors=True)
    cpu0, _ = _children_usage()
    start = time.perf_counter()
    probe = [sys.executable, "-c", _PEAK, str(DUPFLOW), "encode", "--dataset", f"d={folder}", "-s", str(store),
             "-j", "2", "-q", *flags]
    proc = subprocess.run(probe, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"dupflow encode failed:\n{proc.stderr[-3000:]}")
    cpu1, _ = _children_usage()
    peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    parts = sorted((store / "encodings").rglob("*.parquet"))
    import pyarrow.parquet as pq

    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    cnn_bytes = sum(_column_bytes(p, "cnn") for p in parts)
    return {"images": rows, "cpu_s": round(cpu1 - cpu0, 2), "wall_s": round(wall, 2), "peak_rss_mb": round(peak),
            "cnn_bytes_per_image": round(cnn_bytes / rows) if cnn_bytes else None}


# Runs the command and prints the largest RSS of any process it started (the encode workers are its
# grandchildren under the pool, so RUSAGE_CHILDREN of this wrapper covers them once they are reaped).
_PEAK = """
import json, resource, subprocess, sys
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
sys.exit(rc)
"""


def _column_bytes(path: Path, column: str) -> int:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            if group.column(c).path_in_schema.split(".")[0] == column:
                total += group.column(c).total_compressed_size
    return total


def run_fastdup(folder: Path) -> dict[str, Any] | None:
    if not FASTDUP.exists():
        return None
    proc = subprocess.run([str(FASTDUP), str(HERE / "fastdup_run.py"), "--folder", str(folder),
                           "--work", str(WORK / "fastdup"), "--threads", "2"], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr[-500:]}
    got: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return got


def agreement(folder: Path, n: int) -> dict[str, Any]:
    """Largest |cosine difference| over every pair of `n` images: ONNX Runtime vs eager PyTorch
    (float32), and the stored float16 vs float32; also each image against itself across runtimes."""
    from dupflow.encode.cnn import Embedder
    from dupflow.encode.models import ModelSpec

    spec = ModelSpec.parse(None)
    fast, eager = Embedder(spec, 1, "onnx"), Embedder(spec, 1, "torch")
    files = sorted(folder.glob("*.jpg"))[:n]
    inputs = []
    for p in files:
        with Image.open(p) as im:
            im.draft("RGB", (448, 448))
            inputs.append(fast.prepare(im.convert("RGB")))
    a = np.concatenate([fast.embed(inputs[i:i + 32]) for i in range(0, len(inputs), 32)])
    b = np.concatenate([eager.embed(inputs[i:i + 32]) for i in range(0, len(inputs), 32)])
    h = a.astype(np.float16).astype(np.float32)
    h /= np.linalg.norm(h, axis=1, keepdims=True)
    ca, cb, ch = a @ a.T, b @ b.T, h @ h.T
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sizes = {}
    for dtype, arrow in ((np.float32, pa.float32()), (np.float16, pa.float16())):
        column = pa.FixedSizeListArray.from_arrays(pa.array(a.astype(dtype).ravel(), arrow), a.shape[1])
        buffer = io.BytesIO()
        pq.write_table(pa.table({"cnn": column}), buffer, compression="zstd")
        sizes[np.dtype(dtype).name] = round(buffer.tell() / len(a))
    return {"images": len(files), "parquet_bytes_per_image": sizes,
            "max_abs_dcos_onnx_vs_torch": float(np.abs(ca - cb).max()),
            "min_self_cos_onnx_vs_torch": float((a * b).sum(1).min()),
            "max_abs_dcos_float16_vs_float32": float(np.abs(ch - ca).max())}


def markdown(result: dict[str, Any], command: str) -> str:
    lines = [f"# cnn encoder cost — {result['date']}", "",
             f"`{command}`; {os.cpu_count()} cores. Every row is one whole command over the same files; fastdup "
             f"{result.get('fastdup_version') or '(not installed)'} runs its whole default pipeline (embedding, "
             "index, components).", ""]
    for name, rows in result["sets"].items():
        lines += [f"## {name}: {rows['files']} JPEGs ({rows['describe']})", "",
                  "| method | images | CPU s | images per CPU-second | wall s | peak RSS per process (MB) | "
                  "cnn bytes per image in the store |", "|---|---:|---:|---:|---:|---:|---:|"]
        for method, r in rows["methods"].items():
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {method} | failed: {r['error'][:80]} | | | | | |")
                continue
            rate = r["images"] / r["cpu_s"] if r["cpu_s"] else 0
            lines.append(f"| {method} | {r['images']} | {r['cpu_s']:.1f} | **{rate:.1f}** | {r['wall_s']:.1f} | "
                         f"{r['peak_rss_mb']} | {r.get('cnn_bytes_per_image') or ''} |")
        lines.append("")
    agree = result["agreement"]
    lines += ["## Same values", "",
              f"Over every pair of {agree['images']} photographs: the largest |cosine difference| between ONNX "
              f"Runtime and eager PyTorch is {agree['max_abs_dcos_onnx_vs_torch']:.2e} (each image against "
              f"itself: cosine >= {agree['min_self_cos_onnx_vs_torch']:.7f}); between the float16 the store keeps "
              f"and float32, {agree['max_abs_dcos_float16_vs_float32']:.2e}.", "",
              "Store bytes per image for the embedding (Parquet, zstd): float32 "
              f"{agree['parquet_bytes_per_image']['float32']:,} (before), float16 "
              f"{agree['parquet_bytes_per_image']['float16']:,} (now).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--large", type=int, default=600)
    parser.add_argument("--small", type=int, default=2000)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from photos import make

    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(DUPFLOW), "model", "prepare"], check=True, capture_output=True)
    large = make(WORK / "large", args.large)
    small = small_set(large, WORK / "small", args.small)
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "sets": {}}
    for name, folder, describe in (("large photographs", large, "640x480 .. 4000x3000"),
                                   ("small crops", small, "200 .. 640 px")):
        methods: dict[str, Any] = {}
        for method, flags in METHODS.items():
            methods[method] = run_dupflow(folder, flags)
            print(name, method, methods[method], flush=True)
        peer = run_fastdup(folder)
        if peer is not None:
            result["fastdup_version"] = peer.get("fastdup_version")
            methods[f"fastdup {peer.get('fastdup_version', '')} (its whole run)"] = peer
            print(name, "fastdup", peer, flush=True)
        result["sets"][name] = {"files": len(list(folder.glob("*.jpg"))), "describe": describe, "methods": methods}
    result["agreement"] = agreement(large, 200)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cnn_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result, " ".join([".venv/bin/python", "bench/cnn_speed.py", *sys.argv[1:]]))
    (RESULTS / "cnn_speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
