"""Run fastdup's default pipeline on a folder, as a benchmark peer.

Usage (inside the env that bench/setup_fastdup.sh makes):

    bench/.venv-fastdup/bin/python bench/fastdup_run.py --folder DIR --work WORKDIR [--threads N]

It does what a new user would: ``fastdup.create(input_dir=DIR, work_dir=WORKDIR).run(...)``
with fastdup's default model (the ONNX/ORT embedding model packaged in the wheel),
and prints one JSON line on stdout:

    {"images", "cpu_s", "wall_s", "peak_rss_mb", "fastdup_version", "model"}

``cpu_s`` is user+sys of this process and its children (resource.getrusage), taken
around ``run()`` only (import excluded). Everything fastdup prints goes to stderr.
Telemetry (sentry) and fastdup's PyPI version check are switched off before import,
so nothing is sent or downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import shutil
import sys
import time

# Before fastdup is imported: no crash/usage reports to sentry, no PyPI "latest
# version" request at import (fastdup skips it when FASTDUP_PRODUCTION is set).
os.environ.setdefault("SENTRY_OPT_OUT", "1")
os.environ.setdefault("FASTDUP_PRODUCTION", "1")

_libc = ctypes.CDLL(None)


@contextlib.contextmanager
def stdout_to_stderr():
    """Point fd 1 at fd 2 (Python and C output alike) for the duration."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        _libc.fflush(None)  # C stdio buffers of the native library
        os.dup2(saved, 1)
        os.close(saved)


def _cpu_s() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _count_embedded(work: str) -> int:
    """Rows of fastdup's feature file = images it computed an embedding for."""
    import pandas as pd

    path = os.path.join(work, "atrain_features.dat.csv")
    if not os.path.isfile(path):
        return 0
    return len(pd.read_csv(path))


def _model_used(work: str, fastdup) -> str | None:
    path = None
    with contextlib.suppress(Exception):
        with open(os.path.join(work, "config.json")) as fp:
            cfg = json.load(fp)
        path = (cfg.get("fastdup_kwargs") or {}).get("model_path") or cfg.get("model_path")
    if not path:
        path = getattr(fastdup, "model_path_full", None)  # the run() default
    return os.path.basename(str(path)) if path else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", required=True, help="folder of images")
    ap.add_argument("--work", required=True, help="fastdup work_dir (emptied first)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    folder = os.path.abspath(args.folder)
    work = os.path.abspath(args.work)
    if os.path.isdir(work) and os.listdir(work):
        # a fresh run every time (fastdup would reuse old results), but only ever
        # delete a folder that a previous fastdup run made
        if not os.path.isfile(os.path.join(work, "config.json")):
            ap.error(f"--work {work} is not empty and is not a fastdup work dir")
        shutil.rmtree(work)

    with stdout_to_stderr():
        import fastdup

        fd = fastdup.create(input_dir=folder, work_dir=work)
        cpu0, t0 = _cpu_s(), time.perf_counter()
        fd.run(num_threads=args.threads)
        wall = time.perf_counter() - t0
        cpu = _cpu_s() - cpu0

    s = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = {
        "images": _count_embedded(work),
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(max(s, c) / 1024, 1),  # ru_maxrss is KiB on Linux
        "fastdup_version": fastdup.__version__,
        "model": _model_used(work, fastdup),
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
