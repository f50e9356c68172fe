"""The apply journal: typed records over the on-disk format earlier releases wrote, a lock that another
process is refused at once and that a killed holder releases, and durable local writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from applyworld import Matched, matched_world
from dupflow.apply import apply_manifest
from dupflow.apply import journal as journal_module
from dupflow.apply.journal import Begin, Done, End, Intent, Journal
from dupflow.errors import ConfigError, StorageError
from dupflow.io import fs as fs_module
from dupflow.io.fs import atomic_write, open_fs

# A killed run as the previous release journaled it: begin, two intents, one done, no end.
LEGACY = [
    {"at": "2026-01-02T03:04:05+00:00", "dupflow": "0.1.0", "duplicates_root": "/d/dups", "host": "h",
     "manifest": "/d/out/manifest.parquet", "manifest_sha256": "ab" * 32, "mode": "apply",
     "options": {"annotations": {}, "on_conflict": "skip", "sidecars": [".txt"]}, "pid": 7,
     "plan": "plan-R1.parquet", "run": "R1", "t": "begin"},
    {"a": 0, "dst": "/d/dups/train/a.jpg", "run": "R1", "t": "intent"},
    {"a": 1, "dst": "/d/dups/train/a.txt", "run": "R1", "t": "intent"},
    {"a": 0, "dst": "/d/dups/train/a.jpg", "kind": "image", "outcome": "moved", "reason": None, "run": "R1",
     "sha256": "cd" * 32, "size": 1234, "t": "done"},
]


@pytest.fixture
def m(tmp_path: Path) -> Matched:
    return matched_world(tmp_path / "w")


def _legacy_log(folder: Path) -> bytes:
    data = b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in LEGACY)
    folder.mkdir(parents=True)
    (folder / "journal.jsonl").write_bytes(data)
    return data


def test_a_journal_of_the_previous_release_reads_as_typed_records_and_writes_back_byte_for_byte(
        tmp_path: Path) -> None:
    data = _legacy_log(tmp_path / "old")
    records = Journal(str(tmp_path / "old")).records()
    assert [type(r) for r in records] == [Begin, Intent, Intent, Done]
    begin, _, intent, done = records
    assert isinstance(begin, Begin)
    assert begin.plan == "plan-R1.parquet"
    assert begin.options["sidecars"] == [".txt"]
    assert intent == Intent(run="R1", action=1, destination="/d/dups/train/a.txt")
    assert done == Done(run="R1", action=0, outcome="moved", destination="/d/dups/train/a.jpg", size=1234,
                        sha256="cd" * 32)
    (state,) = Journal(str(tmp_path / "old")).runs()
    assert not state.finished
    assert set(state.intents) == {0, 1}
    assert set(state.done) == {0}

    Journal(str(tmp_path / "new")).append(records)
    assert (tmp_path / "new" / "journal.jsonl").read_bytes() == data  # what the previous release can read


def test_a_run_journals_the_keys_earlier_releases_wrote(m: Matched, tmp_path: Path) -> None:
    apply_manifest(str(m.manifest), str(tmp_path / "j"), execute=True)
    lines = [json.loads(x) for x in (tmp_path / "j" / "journal.jsonl").read_text().splitlines()]
    keys = {r["t"]: set(r) for r in lines}
    assert keys == {**{r["t"]: set(r) for r in LEGACY}, "end": {"t", "run", "counts", "at"}}


def test_a_damaged_record_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "journal.jsonl").write_text('{"t": "intent", "run": "R1"}\n')
    with pytest.raises(StorageError, match=r"damaged 'intent' record.*use a new --journal"):
        Journal(str(tmp_path / "j")).records()


def test_records_of_an_unknown_kind_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "journal.jsonl").write_text('{"t": "later-kind", "run": "R9"}\n')
    assert Journal(str(tmp_path / "j")).records() == []


def test_another_process_holding_the_journal_is_refused_at_once_and_its_death_frees_it(
        m: Matched, tmp_path: Path) -> None:
    journal = str(tmp_path / "journal")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from dupflow.apply.journal import Journal\n"
                               f"with Journal({journal!r}).lock():\n    print('held', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        start = time.monotonic()
        with pytest.raises(ConfigError, match="another dupflow apply or undo is using the journal"):
            apply_manifest(str(m.manifest), journal, execute=True)
        assert time.monotonic() - start < 5  # refused, not waited for
        assert all(p.exists() for p in m.moving)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert apply_manifest(str(m.manifest), journal, execute=True).counts == {"moved": len(m.moving)}


def test_a_new_local_log_fsyncs_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    monkeypatch.setattr(journal_module, "fsync_dir", synced.append)
    journal = Journal(str(tmp_path / "j"))
    journal.append([End("R1", {}, "now")])
    journal.append([End("R2", {}, "now")])
    assert synced == [journal.root]  # the first append made the file; later ones only add to it


def test_a_local_atomic_write_fsyncs_the_folder_after_the_rename(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str]] = []
    replace, fsync_dir = os.replace, fs_module.fsync_dir

    def replacing(src: str, dst: str) -> None:
        events.append(("replace", dst))
        replace(src, dst)

    def syncing(folder: str) -> None:
        events.append(("fsync_dir", folder))
        fsync_dir(folder)

    monkeypatch.setattr(os, "replace", replacing)
    monkeypatch.setattr(fs_module, "fsync_dir", syncing)
    fs, path = open_fs(str(tmp_path / "sub" / "x.json"))
    atomic_write(fs, path, b"{}")
    assert events == [("replace", path), ("fsync_dir", path.rsplit("/", 1)[0])]
    assert (tmp_path / "sub" / "x.json").read_bytes() == b"{}"
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "sub", "x.json"]

