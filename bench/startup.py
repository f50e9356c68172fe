"""Start-up and whole-process CPU: `dupflow --help`, `info`, and a whole `dupflow encode` on small photographs,
beside imagededup's PHash in the same kind of process and a bare reduced-scale decode of the same files.

Every row is one whole process, imports and interpreter start included, timed from outside: CPU is
user + sys of the process and every process it waited for (encode workers included). Medians of
`--repeat` interleaved runs; the machine is shared, so ratios are taken within each repetition.

    python bench/startup.py --images 2000 --repeat 3 --peer-python bench/.venv-peer/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SMALL = [(480, 360), (640, 480), (800, 600)]  # web- and thumbnail-sized photographs

BARE_DECODE = """
import io, sys
from pathlib import Path
from PIL import Image
from dupflow.io.decoding import reduction_factor
for p in sorted(Path(sys.argv[1]).glob('*.jpg')):
    im = Image.open(io.BytesIO(p.read_bytes()))
    w, h = im.size
    f = reduction_factor(w, h, 64)
    im.draft('L', (w // f, h // f))
    im.load()
"""

PEER = """
import sys
from imagededup.methods import PHash
encodings = PHash(verbose=False).encode_images(image_dir=sys.argv[1], num_enc_workers=int(sys.argv[2]))
assert len(encodings) == int(sys.argv[3]), len(encodings)
"""


def measure(command: list[str], cwd: Path | None = None) -> dict[str, float]:
    """CPU seconds (the process and its waited-for children) and wall seconds of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu": cpu, "wall": wall}


def commands(folder: Path, n: int, work: Path, peer: str | None) -> dict[str, list[str] | None]:
    """What each row runs; a fresh store each time (`{store}` is replaced per run)."""
    dupflow = str(BIN / "dupflow")
    rows: dict[str, list[str] | None] = {
        "python -c pass (the interpreter)": [sys.executable, "-c", "pass"],
        "dupflow --help": [dupflow, "--help"],
        "dupflow encode --help": [dupflow, "encode", "--help"],
        "dupflow info --store S": [dupflow, "info", "--store", str(work / "info-store")],
        "bare reduced-scale decode (PIL draft, as dupflow decodes)": [sys.executable, "-c", BARE_DECODE, str(folder)],
        "dupflow encode -e phash -j 1": [dupflow, "encode", "-d", f"bench={folder}", "-s", "{store}", "-e", "phash",
                                         "-j", "1", "-q"],
        "dupflow encode -e phash -j 2": [dupflow, "encode", "-d", f"bench={folder}", "-s", "{store}", "-e", "phash",
                                         "-j", "2", "-q"],
        "dupflow encode (default encoders) -j 2": [dupflow, "encode", "-d", f"bench={folder}", "-s", "{store}",
                                                   "-j", "2", "-q"],
        "imagededup PHash, in-process (num_enc_workers=0)": None,
        "imagededup PHash, 2 workers": None,
    }
    if peer:
        rows["imagededup PHash, in-process (num_enc_workers=0)"] = [peer, "-c", PEER, str(folder), "0", str(n)]
        rows["imagededup PHash, 2 workers"] = [peer, "-c", PEER, str(folder), "2", str(n)]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--peer-python", default=os.environ.get("PEER_PYTHON", str(HERE / ".venv-peer/bin/python")))
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from photos import make

    folder = make(HERE / ".work" / f"small-photos-{args.images}", args.images, sizes=SMALL)
    files = sorted(folder.glob("*.jpg"))
    mb = sum(p.stat().st_size for p in files) / 1e6
    peer = args.peer_python if Path(args.peer_python).exists() else None
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        info_set = work / "info-set"
        info_set.mkdir()
        shutil.copy(files[0], info_set / files[0].name)
        subprocess.run([str(BIN / "dupflow"), "encode", "-d", f"a={info_set}", "-s", str(work / "info-store"), "-q"],
                       check=True, capture_output=True)
        table = commands(folder, len(files), work, peer)
        for k in range(args.repeat):
            for label, command in table.items():
                if command is None:
                    continue
                store = work / f"store-{k}-{len(runs.get(label, []))}-{abs(hash(label))}"
                runs.setdefault(label, []).append(measure([c.replace("{store}", str(store)) for c in command]))
                shutil.rmtree(store, ignore_errors=True)
    rows = []
    for label, rs in runs.items():
        row: dict[str, object] = {"what": label, "cpu_s": statistics.median(r["cpu"] for r in rs),
                                  "wall_s": statistics.median(r["wall"] for r in rs)}
        for ref in ("imagededup PHash, in-process (num_enc_workers=0)",
                    "bare reduced-scale decode (PIL draft, as dupflow decodes)"):
            if ref in runs and label.startswith(("dupflow encode -e", "dupflow encode (")):  # not --help
                row[f"x {ref.split(',')[0].split(' (')[0]}"] = statistics.median(
                    q["cpu"] / r["cpu"] for r, q in zip(rs, runs[ref], strict=True))
        rows.append(row)
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
              "images": len(files), "megabytes": round(mb, 1), "repeat": args.repeat, "rows": rows}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "startup.json").write_text(json.dumps(result, indent=2))
    md = _markdown(result)
    (out / "startup.md").write_text(md)
    print(md)


def _markdown(result: dict[str, object]) -> str:
    rows = result["rows"]
    assert isinstance(rows, list)
    from encode_speed import markdown_table  # bench/ is on sys.path (the script's folder)

    cols = ["what", "cpu_s", "wall_s", "x imagededup PHash", "x bare reduced-scale decode"]
    return (f"{result['images']:,} JPEGs of 480x360 to 800x600 ({result['megabytes']} MB), {result['cpus']} cores, "
            f"median of {result['repeat']}; x = the reference's CPU / this row's CPU (higher is better).\n\n"
            + markdown_table(rows, cols))


if __name__ == "__main__":
    main()
