"""Listing an S3 prefix in parts: one walk vs the same prefix split among 2, 4 and 8 listers.

    .venv/bin/python bench/listing_speed.py            # [--objects 20000] [--folders 200] [--repeat 3]

An S3-compatible server (moto, in its own process on loopback) holds `--objects` empty `.jpg` objects
spread over `--folders` top-level folders of two sub-folders each (a 2-level layout like a sharded
image bucket). Each run lists the prefix with `dupflow.store.encode_job.list_sources` (what `dupflow
encode` does; a flow runs the same parts as Dask tasks) and is timed from a fresh filesystem (no listing
cache); the median of `--repeat` runs per part count. Every run must find every object. The list
requests each run makes (ListObjectsV2 pages of at most 1,000 keys, one or more per folder) are counted
from the server's log. moto's own CPU per list request grows with the bucket (it filters every key), and
S3 answers one in tens of milliseconds; `--latency MS` puts a loopback proxy in front of moto that holds
each request for MS milliseconds, as a remote store's round trip does. Results:
bench/results/listing_speed-MSms.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from encode_speed import markdown_table

from dupflow.io.sources import DatasetSource
from dupflow.store.encode_job import list_sources

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PARTS = (1, 2, 4, 8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto_server did not start")


def _delaying_proxy(target_port: int, latency_s: float) -> int:
    """A loopback TCP proxy to `target_port` that holds each chunk a client sends for `latency_s`."""
    port = _free_port()
    ready = threading.Event()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
        try:
            while data := await reader.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_r, server_w, latency_s), pipe(server_r, client_w, 0.0),
                             return_exceptions=True)

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    threading.Thread(target=asyncio.run, args=(serve(),), daemon=True).start()
    ready.wait(10)
    return port


def _fill(endpoint: str, bucket: str, objects: int, folders: int) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    keys = [f"imgs/f{i % folders:04d}/s{i // folders % 2}/img{i:07d}.jpg" for i in range(objects)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b""), keys))
    return keys


def _list_requests(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if "list-type=2" in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--folders", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.0, help="ms added to each request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "moto.log"
        proc, endpoint = _server(log)
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
        try:
            _fill(endpoint, "bench", args.objects, args.folders)
            if args.latency:
                endpoint = f"http://127.0.0.1:{_delaying_proxy(int(endpoint.rsplit(':', 1)[1]), args.latency / 1000)}"
                os.environ["AWS_ENDPOINT_URL"] = endpoint
            source = DatasetSource("bench", "s3://bench/imgs")
            rows: list[dict[str, Any]] = []
            for parts in PARTS:
                times, requests = [], []
                for _ in range(args.repeat):
                    before = _list_requests(log)
                    start = time.perf_counter()
                    refs, _ = list_sources([source], {"client_kwargs": {"endpoint_url": endpoint}}, parts=parts)
                    times.append(time.perf_counter() - start)
                    requests.append(_list_requests(log) - before)
                    if len(refs) != args.objects:
                        raise SystemExit(f"{parts} part(s) listed {len(refs)} of {args.objects} objects")
                wall = statistics.median(times)
                rows.append({"listers": parts, "objects": args.objects, "latency_ms": args.latency,
                             "wall_s": round(wall, 2), "objects_per_s": round(args.objects / wall),
                             "list_requests": statistics.median(requests),
                             "x one walk": round(rows[0]["wall_s"] / wall, 2) if rows else 1.0})
                print(rows[-1], flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
    RESULTS.mkdir(exist_ok=True)
    name = f"listing_speed-{args.latency:g}ms"
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    md = (f"# Listing an S3 prefix in parts — {time.strftime('%Y-%m-%d')}\n\n"
          f"`.venv/bin/python bench/listing_speed.py --objects {args.objects} --folders {args.folders} --repeat "
          f"{args.repeat} --latency {args.latency:g}`: moto on loopback, {args.latency:g} ms added to each request, "
          f"{args.folders} folders of 2 sub-folders, median of {args.repeat}.\n\n"
          + markdown_table(rows, ["listers", "objects", "latency_ms", "wall_s", "objects_per_s", "list_requests",
                                  "x one walk"]))
    (RESULTS / f"{name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
