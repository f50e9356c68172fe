"""What verification costs: candidate pairs, verified pairs and seconds as the number of images grows.

    .venv/bin/python bench/accuracy.py          # first: builds bench/.work/accuracy-1 and its thorough store
    .venv/bin/python bench/verification.py      # [--seed 1]

Random subsets of the accuracy set's default and thorough stores (N = 500, 1,000, 2,000 and all of it)
are matched with that preset's rules on 2 threads, in one process: for each N, the candidate pairs the
cheap channels propose, the distinct pairs verified (each needs the two pictures' stored keypoints, no
image is read), CPU seconds per verified pair, and the match's wall time beside the store's encode
time. Results: bench/results/verification.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from dupflow.index.blocks import Block
from dupflow.match.embeddings import Embeddings
from dupflow.match.job import load_images, plan_rules
from dupflow.match.matching import Images
from dupflow.match.settings import MatchSettings
from dupflow.store.encodings import EncodingsStore

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
SIZES = (500, 1000, 2000)
THREADS = 2


def subset(images: Images, ids: np.ndarray) -> Images:
    """The images `ids` (ascending), with their embeddings (if any) and features."""
    assert images.features is not None
    e = images.embeddings
    return Images(images.table.take(ids), images.datasets, images.dataset_ix[ids], images.reference[ids],
                  None if e is None else Embeddings(e.vectors[ids], e.present[ids], e.source),
                  images.features.take(ids))


def measure(images: Images, settings: MatchSettings, hash_size: int, encoders: tuple[str, ...]) -> dict[str, float]:
    searches = plan_rules(images, settings, hash_size, encoders)
    assert images.features is not None
    blocks = 4 * THREADS
    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(THREADS) as pool:
        found = [sum(len(p) for p in pool.map(lambda k, s=s: s.block(Block(k, blocks)), range(blocks)))
                 for s in searches]
    wall = time.perf_counter() - start
    f = images.features
    return {"images": len(images), "accepted_class_pairs": int(sum(found)), "verified_pairs": f.verified,
            "verify_cpu_s": round(f.seconds, 2),
            "ms_per_verified_pair": round(1000 * f.seconds / max(1, f.verified), 3),
            "match_wall_s": round(wall, 2), "match_cpu_s": round(time.process_time() - cpu, 2),
            "verified_pairs_per_image": round(f.verified / len(images), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    work = BENCH / ".work" / f"accuracy-{args.seed}"
    accuracy = json.loads((RESULTS / "accuracy.json").read_text()) if (RESULTS / "accuracy.json").exists() else {}
    encode_s = accuracy.get("dupflow", {}).get("encode_s", {})
    rows = []
    for preset in ("default", "thorough"):
        store = EncodingsStore(str(work / f"store-{preset}"))
        rec = store.complete_record()
        settings = MatchSettings(preset=preset, datasets=("train", "val"))  # type: ignore[arg-type]
        images, _, hash_size = load_images(store, settings)
        encoders = tuple(rec.encoders)
        rng = np.random.default_rng(0)
        for n in [s for s in SIZES if s < len(images)] + [len(images)]:
            ids = np.sort(rng.choice(len(images), n, replace=False))
            rows.append({"preset": preset, **measure(subset(images, ids), settings, hash_size, encoders)})
            print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "verification.json").write_text(json.dumps({"rows": rows, "encode_s": encode_s}, indent=2) + "\n")
    lines = [f"# What verification costs — {time.strftime('%Y-%m-%d')}", "",
             f"`.venv/bin/python bench/verification.py --seed {args.seed}`: random subsets of the accuracy set "
             f"(seed {args.seed}) matched with each preset on {THREADS} threads. The whole set's encode took "
             + ", ".join(f"{k} {v} s" for k, v in encode_s.items() if v is not None)
             + " on 2 workers (bench/results/accuracy.md).", "",
             "| preset | images | accepted class pairs | pairs verified | per image | verify CPU s | ms per pair | "
             "match wall s | match CPU s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['preset']} | {r['images']:,} | {r['accepted_class_pairs']:,} | {r['verified_pairs']:,} | "
              f"{r['verified_pairs_per_image']} | {r['verify_cpu_s']} | {r['ms_per_verified_pair']} | "
              f"{r['match_wall_s']} | {r['match_cpu_s']} |" for r in rows]
    (RESULTS / "verification.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
