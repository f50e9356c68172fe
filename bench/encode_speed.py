"""Encode throughput: dupflow vs imagededup vs the bare reduced-scale decode, on the same JPEGs.

Every method runs in its own subprocess, in turn, `--repeat` times; each reports the CPU seconds
(its own and its children's) spent on the work alone, wall time and peak RSS. Figures are medians;
ratios are taken pairwise within each repetition, since the machine is shared and noisy.

    python bench/encode_speed.py --images 2000 --peer-python bench/.venv-peer/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS = {
    "decode 1/8 (bare)": "bare_eighth",
    "decode dupflow scale (bare)": "bare_dupflow",
    "dupflow phash": "dupflow:phash",
    "dupflow ahash+dhash+phash": "dupflow:ahash,dhash,phash",
    "imagededup PHash": "imagededup",
}


def _usage() -> tuple[float, int]:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime, max(s.ru_maxrss, c.ru_maxrss)


def worker(method: str, folder: Path) -> dict[str, float]:
    """Run one method over `folder` in this process; the measured section excludes imports."""
    files = sorted(p for p in folder.iterdir() if p.suffix == ".jpg")
    if method.startswith("bare"):
        import io

        from PIL import Image

        from dupflow.io.decoding import reduction_factor

        cpu0, wall0 = _usage()[0], time.perf_counter()
        for p in files:
            im = Image.open(io.BytesIO(p.read_bytes()))
            w, h = im.size
            f = 8 if method == "bare_eighth" else reduction_factor(w, h, 64)
            im.draft("L", (w // f, h // f))
            im.load()
    elif method.startswith("dupflow:"):
        from dupflow.encode.settings import EncodeSettings
        from dupflow.io.sources import DatasetSource
        from dupflow.store.encode_job import run_encode

        settings = EncodeSettings(encoders=tuple(method.split(":")[1].split(",")))
        with tempfile.TemporaryDirectory() as store:
            cpu0, wall0 = _usage()[0], time.perf_counter()
            report = run_encode([DatasetSource("bench", str(folder))], store, settings, workers=1)
            assert report.encoded == len(files), report
    else:
        from imagededup.methods import PHash

        hasher = PHash(verbose=False)
        cpu0, wall0 = _usage()[0], time.perf_counter()
        enc = hasher.encode_images(image_dir=str(folder))
        assert len(enc) == len(files)
    cpu, rss = _usage()
    return {"files": len(files), "cpu": cpu - cpu0, "wall": time.perf_counter() - wall0, "rss_mb": rss / 1024}


def run_one(python: str, method: str, folder: Path) -> dict[str, float]:
    out = subprocess.run([python, str(Path(__file__)), "--worker", method, str(folder)], check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peer-python", default=os.environ.get("PEER_PYTHON", str(HERE / ".venv-peer/bin/python")))
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]))))
        return
    sys.path.insert(0, str(HERE))
    from photos import make

    folder = make(HERE / ".work" / f"photos-{args.images}", args.images)
    have_peer = Path(args.peer_python).exists()
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in METHODS}
    for _ in range(args.repeat):
        for label, method in METHODS.items():
            if method == "imagededup" and not have_peer:
                continue
            runs[label].append(run_one(args.peer_python if method == "imagededup" else sys.executable, method, folder))
    rows = []
    for label, rs in runs.items():
        if not rs:
            continue
        rate = [r["files"] / r["cpu"] for r in rs]
        row = {"method": label, "images": rs[0]["files"], "cpu_s": statistics.median(r["cpu"] for r in rs),
               "images_per_cpu_s": statistics.median(rate), "wall_s": statistics.median(r["wall"] for r in rs),
               "peak_rss_mb": max(r["rss_mb"] for r in rs)}
        for ref_label in ("imagededup PHash", "decode 1/8 (bare)"):
            if runs.get(ref_label) and label != ref_label:
                ref = runs[ref_label]
                pair = [r["files"] / r["cpu"] / (q["files"] / q["cpu"]) for r, q in zip(rs, ref, strict=True)]
                row[f"x {ref_label}"] = statistics.median(pair)
        rows.append(row)
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
              "images": args.images, "repeat": args.repeat, "rows": rows}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "encode_speed.json").write_text(json.dumps(result, indent=2))
    md = _markdown(rows)
    (out / "encode_speed.md").write_text(md)
    print(md)


def _markdown(rows: list[dict[str, object]]) -> str:
    return markdown_table(rows, ["method", "images", "cpu_s", "images_per_cpu_s", "wall_s", "peak_rss_mb",
                                 "x imagededup PHash", "x decode 1/8 (bare)"])


def markdown_table(rows: list[dict[str, object]], cols: list[str]) -> str:
    """`rows` as a Markdown table of `cols`: floats with two decimals, missing cells empty."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.2f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
