"""The HTML report at scale: 100k images in 10k duplicate groups, opened in headless Chromium.

Builds the page from synthetic match outputs (no encoding: this measures the report, not the match)
with real WebP thumbnails for every grouped image, then times in Debian's Chromium what a reviewer
waits for: the page opening, the threshold slider regrouping, "show only duplicates" off (90k more
items, paged), the all-images datagrid sorted, and the JS heap. Needs scripts/install-browser.sh.

    .venv/bin/python bench/report_scale.py --images 100000 --groups 10000
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser import chromium
from dupflow.report.outputs import MatchOutputs, StoreFacts
from dupflow.report.page import render_page
from dupflow.report.payload import build_payload
from dupflow.schemas import GROUPS, PAIRS, SCORES
from imagegen import natural

WORK = Path(__file__).parent / ".work" / "report-scale"
RESULTS = Path(__file__).parent / "results"


def synthetic(n: int, groups: int, seed: int = 0) -> tuple[MatchOutputs, StoreFacts, int]:
    """n images in two datasets, `groups` groups of 2-4 (a star around the first member, sims in [0.84, 1])."""
    rng = np.random.default_rng(seed)
    uris = [f"/data/{'train' if i % 5 else 'val'}/class_{i % 97:02d}/img_{i:07d}.jpg" for i in range(n)]
    dataset = ["train" if i % 5 else "val" for i in range(n)]
    sizes = rng.integers(2, 5, groups)
    members = rng.permutation(n)[: int(sizes.sum())]
    group = [None] * n
    a, b, sims = [], [], []
    at = 0
    for g, size in enumerate(sizes):
        ids = members[at: at + size]
        at += size
        for i in ids:
            group[i] = g
        for j in ids[1:]:
            a.append(uris[min(ids[0], j)])
            b.append(uris[max(ids[0], j)])
            sims.append(float(rng.choice([1.0, *np.round(1 - rng.integers(1, 11, 1) / 64, 6)])))
    m = len(a)
    pairs = pa.table({"a": a, "b": b, "a_dataset": ["train"] * m, "b_dataset": ["train"] * m,
                      "rule": ["phash<=10"] * m, "method": ["phash"] * m,
                      "distance": pa.array([round((1 - s) * 64) for s in sims], pa.int32()), "similarity": sims,
                      "orientation": pa.array([None] * m, pa.string())}, schema=PAIRS)
    status = ["fail" if g is not None else "pass" for g in group]
    scores = pa.table({"uri": uris, "dataset": dataset, "rel_path": [u.split("/", 3)[3] for u in uris],
                       "status": status, "uniqueness": rng.random(n),
                       "max_similarity": pa.array([None] * n, pa.float64()),
                       "nearest": pa.array([None] * n, pa.string()), "nearest_rule": pa.array([None] * n, pa.string()),
                       "group": pa.array(group, pa.int64()), "keeper": pa.array([None] * n, pa.bool_()),
                       "error": pa.array([None] * n, pa.string())}, schema=SCORES)
    summary = {"settings": {"rules": ["exact", "phash<=10"], "keep": "dataset > resolution > path", "reference": [],
                            "store": "/data/store", "duplicates_root": "/data/dups"},
               "totals": {"images": n, "encoded": n, "errors": {}, "pairs": m, "groups": groups, "leakage_groups": 0,
                          "to_move": m, "bytes_to_move": m * 150_000, "failed": int(sizes.sum())},
               "datasets": {d: {"images": dataset.count(d), "encoded": dataset.count(d), "reference": False,
                                "duplicate_groups": 0, "to_move": 0, "bytes_to_move": 0} for d in ("train", "val")},
               "intersections": {}}
    facts = pa.table({"uri": uris, "width": pa.array([640] * n, pa.int32()), "height": pa.array([480] * n, pa.int32()),
                      "size": pa.array(rng.integers(50_000, 300_000, n), pa.int64()), "format": ["JPEG"] * n,
                      "mtime": pa.array([0] * n, pa.timestamp("ns", tz="UTC")),
                      "error_message": pa.array([None] * n, pa.string())})
    vectors = pa.array(rng.integers(0, 2**63, n, dtype=np.uint64))  # pHash words
    empty = GROUPS.empty_table()
    return (MatchOutputs("/data/out", summary, pairs, empty, scores),
            StoreFacts(facts, vectors, np.arange(n), "phash", 8), int(sizes.sum()))


def thumbnails(count: int) -> list[str]:
    """`count` real 160 px WebP thumbnails (64 distinct pictures, reused)."""
    out = []
    for k in range(64):
        buf = io.BytesIO()
        natural(k, 160, 120).save(buf, "WEBP", quality=60, method=4)
        out.append("data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode())
    return [out[i % 64] for i in range(count)]


def timed(driver, script: str) -> float:  # type: ignore[no-untyped-def]
    """Run `script` on the page and wait for the viewer's next render; milliseconds."""
    before = driver.execute_script("return Number(document.body.dataset.rendered)")
    t = time.perf_counter()
    driver.execute_script(script)
    while driver.execute_script("return Number(document.body.dataset.rendered)") == before:
        time.sleep(0.002)
    return (time.perf_counter() - t) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from dupflow.report.payload import projection

    t0 = time.perf_counter()
    outputs, facts, grouped = synthetic(args.images, args.groups)
    thumbs = thumbnails(grouped)
    thumb_index = [-1] * args.images
    order = [i for i, g in enumerate(outputs.scores["group"].to_pylist()) if g is not None]
    for k, i in enumerate(order):
        thumb_index[i] = k
    t1 = time.perf_counter()
    data = build_payload(outputs, facts, thumb_index, {}, None, [None] * args.images,
                         projection(facts, outputs, 5000), {"title": "scale", "generated": "now", "version": "bench",
                                                            "thumb_size": 160, "thumbnails": len(thumbs),
                                                            "thumbnails_omitted": 0,
                                                            "thumbnail_bytes": sum(map(len, thumbs))})
    page = render_page("dupflow report at scale", data, thumbs).encode()
    build_s = time.perf_counter() - t1
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / "report.html"
    path.write_bytes(page)
    rows: dict[str, list[float]] = {k: [] for k in ("open", "slider", "only-dup off", "datagrid", "next page")}
    heap = []
    with chromium() as d:
        for _ in range(args.repeat):
            t = time.perf_counter()
            d.get(path.as_uri())
            while not d.execute_script("return Number(document.body.dataset.rendered || 0)"):
                time.sleep(0.005)
            rows["open"].append((time.perf_counter() - t) * 1000)
            rows["slider"].append(timed(d, "const s = document.getElementById('threshold'); s.value = 0.95;"
                                           " s.dispatchEvent(new Event('input'))"))
            rows["only-dup off"].append(timed(d, "document.getElementById('only-dup').click()"))
            rows["datagrid"].append(timed(d, "document.getElementById('tab-images').click()"))
            rows["next page"].append(timed(d, "document.getElementById('next-page').click()"))
            heap.append(d.execute_script("return performance.memory ? performance.memory.usedJSHeapSize : 0") / 2**20)
            assert not [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    result = {"images": args.images, "groups": args.groups, "grouped_images": grouped,
              "pairs": outputs.pairs.num_rows, "thumbnails": len(thumbs), "file_mb": round(len(page) / 2**20, 1),
              "build_s": round(build_s, 2), "synthetic_s": round(t1 - t0, 2),
              "ms": {k: round(statistics.median(v)) for k, v in rows.items()},
              "js_heap_mib": round(statistics.median(heap))}
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "report_scale.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# HTML report at scale: {args.images:,} images, {args.groups:,} groups", "",
             f"`{' '.join(['.venv/bin/python', 'bench/report_scale.py', *sys.argv[1:]])}`; median of {args.repeat} "
             "openings in headless Chromium (Debian).", "",
             f"- page: **{result['file_mb']} MB** ({len(thumbs):,} WebP thumbnails of 160 px for every grouped image), "
             f"built in {result['build_s']} s",
             f"- JS heap after the steps below: {result['js_heap_mib']} MiB", "",
             "| step | ms |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in result["ms"].items()]
    (RESULTS / "report_scale.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
