"""Start-up cost: `dupflow --help` builds every command from the settings models without importing the
library's heavy dependencies, `info` reads a store's record without pyarrow, and `encode` and `match`
run without Prefect or Dask. Each command runs in a fresh interpreter, which then reports what it
imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imagegen import natural, write

# What `--help` must not import: the array, image, storage and model libraries, and the orchestration layer.
LIBRARIES = {"numpy", "pyarrow", "fsspec", "PIL", "imagehash", "scipy", "sklearn", "numba", "cv2", "onnxruntime",
             "torch"}
ORCHESTRATION = {"prefect", "prefect_dask", "dask", "distributed"}

# Runs `dupflow ARGS...` through the console script's entry point, then writes the top-level packages
# imported (those of interest) to OUT: python -c PROBE OUT ARGS...
PROBE = """
import json, sys
from dupflow.flows.cli import main
out, args = sys.argv[1], sys.argv[2:]
main(args, standalone_mode=False)
watched = set(json.loads('{watched}'))
with open(out, "w") as fh:
    json.dump(sorted({{m.split(".")[0] for m in sys.modules}} & watched), fh)
"""

# Calls --help on every command and sub-command of the tree, then reports like PROBE.
HELP_PROBE = """
import json, sys
import click
from dupflow.flows.cli import main

def walk(group, path):
    yield path
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from walk(command, [*path, name])
        else:
            yield [*path, name]

for path in walk(main, []):
    main([*path, "--help"], standalone_mode=False)
watched = set(json.loads('{watched}'))
with open(sys.argv[1], "w") as fh:
    json.dump(sorted({{m.split(".")[0] for m in sys.modules}} & watched), fh)
"""

WATCHED = LIBRARIES | ORCHESTRATION


def imported(tmp_path: Path, probe: str, *args: str) -> set[str]:
    """The watched packages a fresh interpreter imported running `probe` with `args`."""
    out = tmp_path / "imported.json"
    code = probe.format(watched=json.dumps(sorted(WATCHED)))
    done = subprocess.run([sys.executable, "-c", code, str(out), *args], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    found: list[str] = json.loads(out.read_text())
    return set(found)


def test_help_of_every_command_imports_no_heavy_package(tmp_path: Path) -> None:
    assert imported(tmp_path, HELP_PROBE) == set()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """A store encoded from three pictures (two of them equal), and what its `dupflow encode` imported."""
    root = tmp_path_factory.mktemp("startup")
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write(root / "images" / f"{name}.png", natural(seed, 96, 64), "PNG")
    found = imported(root, PROBE, "encode", "-d", f"images={root / 'images'}", "-s", str(root / "store"),
                     "--workers", "1", "--quiet")
    return root / "store", found


def test_encode_imports_no_prefect_or_dask(store: tuple[Path, set[str]]) -> None:
    _, found = store
    assert {"numpy", "pyarrow", "PIL"} <= found  # the probe sees what the command imports
    assert found & ORCHESTRATION == set()


def test_match_imports_no_prefect_or_dask(tmp_path: Path, store: tuple[Path, set[str]]) -> None:
    found = imported(tmp_path, PROBE, "match", "-s", str(store[0]), "--out", str(tmp_path / "out"))
    assert (tmp_path / "out" / "summary.json").is_file()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["totals"]["groups"] == 1  # a.png and b.png
    assert "pyarrow" in found
    assert found & ORCHESTRATION == set()


def test_info_reads_the_store_record_without_pyarrow(tmp_path: Path, store: tuple[Path, set[str]]) -> None:
    found = imported(tmp_path, PROBE, "info", "--store", str(store[0]))
    assert found == {"fsspec"}  # the store may be remote: its filesystem, and nothing else heavy
