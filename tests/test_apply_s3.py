"""Applying manifests on S3 (moto's server on 127.0.0.1): dry run, moves, undo, S3 -> local, crashes,
and credentials that never reach the journal or the terminal."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dupflow.apply import ApplyOptions, apply_manifest, undo_journal
from dupflow.encode.settings import EncodeSettings
from dupflow.io.faults import FAULTS_ENV
from dupflow.io.fs import open_fs
from dupflow.io.sources import DatasetSource
from dupflow.match.job import match_store
from dupflow.match.settings import MatchSettings
from dupflow.store.encode_job import run_encode
from worlds import plant_world

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def _listing(bucket: str, prefix: str = "imgs/") -> dict[str, str]:
    """Every object under the prefix -> SHA-256 of its bytes."""
    s3 = boto3.client("s3")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"]] = hashlib.sha256(body).hexdigest()
    return out


def _s3_world(tmp: Path, bucket: str, duplicates_root: str | None = None) -> str:
    """The planted world uploaded to s3://bucket/imgs, encoded and matched; returns the manifest URL."""
    world = plant_world(tmp / "w")
    s3 = boto3.client("s3")
    for path in sorted(p for p in world.root.rglob("*") if p.is_file() and "store" not in p.parts):
        s3.put_object(Bucket=bucket, Key=f"imgs/{path.relative_to(world.root)}", Body=path.read_bytes())
    sources = [DatasetSource(n, f"s3://{bucket}/imgs/{n}") for n in ("train", "val")]
    run_encode(sources, f"s3://{bucket}/store", EncodeSettings(), workers=1)
    out = f"s3://{bucket}/out"
    match_store(f"s3://{bucket}/store", out, MatchSettings(threads=1, duplicates_root=duplicates_root))
    manifest = f"{out}/manifest.parquet"
    fs, manifest_path = open_fs(manifest)
    for row in pq.read_table(fs.open(manifest_path, "rb")).to_pylist():  # an annotation beside every duplicate
        key = row["source"].split("/", 3)[3]
        s3.put_object(Bucket=bucket, Key=key.rsplit(".", 1)[0] + ".txt", Body=f"label of {key}".encode())
    return manifest


def test_dry_run_execute_and_undo_on_s3(tmp_path: Path, bucket: str) -> None:
    manifest = _s3_world(tmp_path, bucket)
    journal = f"s3://{bucket}/journal"
    before = _listing(bucket)
    options = ApplyOptions(sidecars=(".txt",))

    dry = apply_manifest(manifest, journal, options)
    assert _listing(bucket) == before
    assert set(dry.counts) == {"would_move"}

    done = apply_manifest(manifest, journal, options, execute=True)
    moved = done.results.to_pylist()
    assert {r["outcome"] for r in moved} == {"moved"}
    assert len(moved) == dry.counts["would_move"]
    after = _listing(bucket, "")
    for r in moved:
        src_key, dst_key = r["source"].split("/", 3)[3], r["destination"].split("/", 3)[3]
        assert src_key not in after
        assert after[dst_key] == before[src_key]
        assert dst_key.startswith("out/duplicates/")
    assert any(k.startswith("journal/journal/") for k in after)  # the log as whole objects

    assert apply_manifest(manifest, journal, options, execute=True).counts == {
        "already_moved": done.results.filter(pc.equal(done.results["kind"], "image")).num_rows}
    assert set(undo_journal(journal, execute=True).counts) == {"restored"}
    assert _listing(bucket) == before
    assert not [k for k in _listing(bucket, "out/duplicates/")]


def test_s3_sources_move_into_a_local_duplicates_folder_and_back(tmp_path: Path, bucket: str) -> None:
    local = tmp_path / "dups"
    manifest = _s3_world(tmp_path, bucket, duplicates_root=str(local))
    before = _listing(bucket)
    journal = str(tmp_path / "journal")
    report = apply_manifest(manifest, journal, ApplyOptions(sidecars=(".txt",)), execute=True)
    assert set(report.counts) == {"moved"}
    for r in report.results.to_pylist():
        landed = Path(r["destination"])
        assert landed.is_relative_to(local)
        assert hashlib.sha256(landed.read_bytes()).hexdigest() == before[r["source"].split("/", 3)[3]]
    assert len(_listing(bucket)) == len(before) - report.results.num_rows
    undo_journal(journal, execute=True)
    assert _listing(bucket) == before
    assert not [p for p in local.rglob("*") if p.is_file()]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("dupflow"))
    return subprocess.run([exe, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_credentials_never_reach_the_journal_or_the_output(tmp_path: Path, bucket: str, s3_endpoint: str) -> None:
    manifest = _s3_world(tmp_path, bucket)
    secret = "sEcReT-9f3a71-never-logged"
    journal = f"s3://{bucket}/journal"
    creds = ["-o", "key=AKIADUPFLOWTEST", "-o", f"secret={secret}", "-o", f"endpoint_url={s3_endpoint}"]
    env = {"AWS_SECRET_ACCESS_KEY": "unused", "AWS_ACCESS_KEY_ID": "unused"}
    outputs = [_cli("apply", manifest, "--journal", journal, *creds, env=env),
               _cli("apply", manifest, "--journal", journal, "--execute", *creds, env=env),
               _cli("undo", journal, "--execute", *creds, env=env)]
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="journal/")["Contents"]]
    journal_bytes = b"".join(s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys)
    assert len(keys) > 3
    assert b"AKIADUPFLOWTEST" not in journal_bytes
    assert secret.encode() not in journal_bytes
    assert not any(secret in o.stdout + o.stderr or "AKIADUPFLOWTEST" in o.stdout + o.stderr for o in outputs)


def test_apply_killed_at_many_points_on_s3_then_resumed(tmp_path: Path, bucket: str) -> None:
    manifest = _s3_world(tmp_path, bucket)
    s3 = boto3.client("s3")
    pristine = _listing(bucket)
    for key in pristine:
        s3.copy_object(Bucket=bucket, Key=f"pristine/{key}", CopySource={"Bucket": bucket, "Key": key})
    args = ["apply", manifest, "--sidecars", ".txt", "--threads", "1", "--execute", "--resume"]
    assert _cli(*args, "--journal", f"s3://{bucket}/clean").returncode == 0
    expected = {k: v for k, v in _listing(bucket, "").items() if k.startswith(("imgs/", "out/duplicates/"))}
    tried = 0
    for k in range(2, 200, 9):
        for key in _listing(bucket, "out/duplicates/"):  # back to the state before the move
            s3.delete_object(Bucket=bucket, Key=key)
        present = _listing(bucket)
        for key in pristine.keys() - present.keys():
            s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": f"pristine/{key}"})
        journal = f"s3://{bucket}/j{k}"
        killed = _cli(*args, "--journal", journal, env={FAULTS_ENV: f"*={k}"})
        if killed.returncode == 0:
            break
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        tried += 1
        resumed = _cli(*args, "--journal", journal)
        assert resumed.returncode == 0, resumed.stderr
        now = {key: v for key, v in _listing(bucket, "").items() if key.startswith(("imgs/", "out/duplicates/"))}
        assert now == expected, f"after kill {k}"
    assert tried >= 4
