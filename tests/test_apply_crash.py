"""Crash injection: an apply killed (SIGKILL) at every point where it can die, then resumed, ends with
exactly the files a clean run gives: nothing lost, nothing duplicated, nothing moved twice."""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from applyworld import Matched, matched_world, rewrite_manifest, tree
from dupflow.apply import ApplyOptions, apply_manifest, undo_journal
from dupflow.apply.journal import Journal
from dupflow.errors import ConfigError
from dupflow.io.faults import FAULTS_ENV

pytestmark = pytest.mark.slow

OPTIONS = ApplyOptions(sidecars=(".txt", ".json"), threads=2, batch=3)


def _child(manifest: str, journal: str, faults: str, no_links: bool, undo: bool) -> None:
    os.environ[FAULTS_ENV] = faults
    if no_links:  # a filesystem without hard links (or two filesystems): the copy-verify-delete path
        from dupflow.apply import moves

        moves._move_by_link = lambda *_args: None
    if undo:
        undo_journal(journal, execute=True, resume=True, threads=2)
    else:
        apply_manifest(manifest, journal, OPTIONS, execute=True, resume=True)


def _run(manifest: Path, journal: Path, faults: str = "", no_links: bool = False, undo: bool = False) -> int | None:
    """Apply (or undo) in a forked process, as a separate program would; its exit code (-9: killed)."""
    proc = multiprocessing.get_context("fork").Process(
        target=_child, args=(str(manifest), str(journal), faults, no_links, undo))
    proc.start()
    proc.join(120)
    return proc.exitcode


class Scene:
    """A matched world kept pristine, restored before every attempt (same paths, same mtimes)."""

    def __init__(self, tmp: Path) -> None:
        self.m: Matched = matched_world(tmp / "w")
        self.pristine = tmp / "pristine"
        shutil.copytree(self.m.root, self.pristine, symlinks=True)

    def reset(self) -> None:
        shutil.rmtree(self.m.root)
        shutil.copytree(self.pristine, self.m.root, symlinks=True)

    def files(self) -> dict[str, str]:
        return tree(*self.m.data, self.m.out / "duplicates")


@pytest.mark.parametrize("no_links", [False, True], ids=["hard-link-moves", "copy-verify-delete"])
def test_killed_at_every_point_then_resumed_gives_exactly_the_clean_result(tmp_path: Path, no_links: bool) -> None:
    scene = Scene(tmp_path)
    manifest = scene.m.manifest
    assert _run(manifest, tmp_path / "clean", no_links=no_links) == 0
    expected = scene.files()
    original = tree(scene.pristine / "train", scene.pristine / "val")
    assert sorted(expected.values()) == sorted(original.values())
    assert expected != original

    points = 0
    for k in range(1, 500):
        scene.reset()
        journal = tmp_path / f"j{k}"
        code = _run(manifest, journal, faults=f"*={k}", no_links=no_links)
        if code == 0:
            break  # the run passes fewer than k points: every one was tried
        assert code == -signal.SIGKILL, f"attempt {k} ended with {code}"
        points += 1
        assert _run(manifest, journal, no_links=no_links) == 0, f"resume after kill {k} failed"
        assert scene.files() == expected, f"after kill {k} and resume"
        last = Journal(str(journal)).runs()[-1]
        assert last.end is not None
        assert "failed" not in last.end.counts
        assert not list((scene.m.out / "duplicates").rglob(".dupflow-partial-*"))
    assert points >= 40


def test_undo_killed_at_every_point_then_resumed_restores_the_original_tree(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    original = tree(*scene.m.data)
    assert _run(scene.m.manifest, tmp_path / "journal") == 0
    moved_state = tmp_path / "moved"
    shutil.copytree(scene.m.root, moved_state, symlinks=True)
    shutil.copytree(tmp_path / "journal", tmp_path / "journal-moved")
    for k in range(1, 500):
        shutil.rmtree(scene.m.root)
        shutil.copytree(moved_state, scene.m.root, symlinks=True)
        journal = tmp_path / f"undo{k}"
        shutil.copytree(tmp_path / "journal-moved", journal)
        code = _run(scene.m.manifest, journal, faults=f"*={k}", undo=True)
        if code == 0:
            break
        assert code == -signal.SIGKILL
        assert _run(scene.m.manifest, journal, undo=True) == 0
        assert tree(*scene.m.data) == original, f"after kill {k} and resume"
    assert k > 10


def test_an_unfinished_run_must_be_resumed_and_only_with_its_own_manifest(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    journal = tmp_path / "journal"
    assert _run(scene.m.manifest, journal, faults="apply.source-removed=2") == -signal.SIGKILL
    with pytest.raises(ConfigError, match="add --resume"):
        apply_manifest(str(scene.m.manifest), str(journal), OPTIONS, execute=True)
    other = tmp_path / "other.parquet"
    shutil.copy(scene.m.manifest, other)
    rewrite_manifest(other, pq.read_table(other).to_pylist()[1:])  # a reviewer dropped a row: another manifest
    with pytest.raises(ConfigError, match="of another manifest"):
        apply_manifest(str(other), str(journal), OPTIONS, execute=True, resume=True)
    with pytest.raises(ConfigError, match="did not finish"):
        undo_journal(str(journal), execute=True)
    dry = apply_manifest(str(scene.m.manifest), str(journal), OPTIONS)
    assert dry.unfinished is not None
    report = apply_manifest(None, str(journal), execute=True, resume=True)  # the manifest comes from the journal
    assert report.resumed
    assert "failed" not in report.counts
    assert not any(p.exists() for p in scene.m.moving)


def test_sigkill_at_random_moments_of_the_real_command_then_resume(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    dupflow = str(Path(sys.executable).with_name("dupflow"))
    command = [dupflow, "apply", str(scene.m.manifest), "--sidecars", ".txt,.json", "--threads", "1", "--execute",
               "--resume"]
    assert subprocess.run([*command, "--journal", str(tmp_path / "clean")], capture_output=True).returncode == 0
    expected = scene.files()
    rng = random.Random(7)
    killed = 0
    for attempt in range(6):
        scene.reset()
        journal = tmp_path / f"j{attempt}"
        proc = subprocess.Popen([*command, "--journal", str(journal)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        log = journal / "journal.jsonl"
        deadline = time.monotonic() + 60
        while not log.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
        finish = subprocess.run([*command, "--journal", str(journal)], capture_output=True, text=True)
        assert finish.returncode == 0, finish.stderr
        assert scene.files() == expected, f"attempt {attempt}"
    assert killed >= 3


def test_a_stale_source_caught_mid_move_stays_in_place_after_resume(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    for path in scene.m.moving:  # same size, same mtime, other bytes: only the SHA-256 can tell
        st = path.stat()
        data = bytearray(path.read_bytes())
        data[-3] ^= 0xFF
        path.write_bytes(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    edited = tree(*scene.m.data)
    journal = tmp_path / "journal"
    assert _run(scene.m.manifest, journal, faults="apply.linked=1") == -signal.SIGKILL
    assert _run(scene.m.manifest, journal) == 0
    results = Journal(str(journal)).runs()[-1].done.values()
    images = [r for r in results if r.kind == "image"]
    assert images
    assert all(r.outcome == "skipped" and "stale" in (r.reason or "") for r in images)
    assert tree(*scene.m.data) == edited
    assert not [p for p in (scene.m.out / "duplicates").rglob("*") if p.is_file()]
