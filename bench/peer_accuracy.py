"""imagededup's side of bench/accuracy.py; runs in imagededup's own venv (bench/.venv-peer).

    bench/.venv-peer/bin/python bench/peer_accuracy.py SET_ROOT OUT.json 0,6,10,15

Each hash class encodes the whole set once (recursive, its default 2 workers), then `find_duplicates`
runs on those encodings at every threshold. File names are relative to SET_ROOT.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path


def main() -> None:
    from imagededup import methods

    logging.disable(logging.WARNING)  # it logs one warning per unreadable file; the count is what we keep
    root, out, thresholds = Path(sys.argv[1]), Path(sys.argv[2]), [int(t) for t in sys.argv[3].split(",")]
    result = {}
    for name in ("PHash", "DHash", "AHash", "WHash"):
        hasher = getattr(methods, name)(verbose=False)
        start = time.perf_counter()
        encodings = hasher.encode_images(image_dir=str(root), recursive=True)
        encode_s = time.perf_counter() - start
        encodings = {str(Path(k).relative_to(root)) if Path(k).is_absolute() else k: v
                     for k, v in encodings.items() if v}
        results, search_s = {}, {}
        for t in thresholds:
            start = time.perf_counter()
            found = hasher.find_duplicates(encoding_map=encodings, max_distance_threshold=t)
            search_s[str(t)] = round(time.perf_counter() - start, 3)
            results[str(t)] = {k: v for k, v in found.items() if v}
        result[name] = {"encode_s": round(encode_s, 2), "encoded": len(encodings), "search_s": search_s,
                        "results": results}
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
