"""What `pip install dupflow` puts into site-packages: one `dupflow` package, its Prefect layer included as
`dupflow.tasks` and `dupflow.flows`, and no top-level `tasks` or `flows` to collide with a user's own."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """A wheel built from a copy of the project's tracked sources (the links under src/dupflow kept)."""
    tree = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    for name in ("src", "tasks", "flows"):
        shutil.copytree(ROOT / name, tree / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tree / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(out), str(tree)], capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return zipfile.ZipFile(next(out.glob("dupflow-*.whl")))


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert top == {"dupflow"}
    for module in ("dupflow/tasks/encode.py", "dupflow/flows/dedup.py", "dupflow/flows/cli.py",
                   "dupflow/report/viewer.js"):
        assert module in names


@pytest.mark.slow
def test_the_console_script_and_the_deployments_name_the_installed_modules(wheel: zipfile.ZipFile) -> None:
    entry_points = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    assert "dupflow = dupflow.flows.cli:main" in wheel.read(entry_points).decode()
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    for deployment in deployments:
        module, _, name = deployment["entrypoint"].partition(":")
        assert f"{module.replace('.', '/')}.py" in wheel.namelist()
        done = subprocess.run([sys.executable, "-c", f"import {module}; print(type({module}.{name}).__name__)"],
                              capture_output=True, text=True, check=False, timeout=120, cwd=ROOT / "tests")
        assert done.stdout.strip() == "Flow", done.stderr
