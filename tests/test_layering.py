"""The pipeline's layers hold: each stage imports only the stages below it, and the core never imports
the orchestration layer. The contracts live in pyproject.toml ([tool.importlinter]); import-linter
checks them on the real import graph."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the package in `tree` (src/dupflow, its tasks and flows linked in) with the project's
    contracts."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    return subprocess.run([*LINT, "--config", str(tree / "pyproject.toml"), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's packages and contracts, to plant violations in."""
    dest = tmp_path_factory.mktemp("layers")
    shutil.copytree(ROOT / "src/dupflow", dest / "src/dupflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_the_project_keeps_its_layer_contracts() -> None:
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 2 kept, 0 broken" in done.stdout


def test_every_core_module_is_held_to_the_no_orchestration_contract() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    forbidden = next(c for c in contracts if c["type"] == "forbidden")
    core = {f"dupflow.{p.stem}" for p in (ROOT / "src/dupflow").iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert set(forbidden["source_modules"]) == core - {"dupflow.tasks", "dupflow.flows"}


@pytest.mark.parametrize(("module", "upward"), [
    ("src/dupflow/io/fs.py", "import dupflow.match.job"),  # a lower stage reaching up the pipeline
    ("src/dupflow/match/rules.py", "from dupflow.report import write_report"),
    ("src/dupflow/store/encodings.py", "import dupflow.config"),
    ("src/dupflow/encode/hashing.py", "import prefect"),  # the core importing the orchestration layer
    ("src/dupflow/tasks/match.py", "import dupflow.flows.runtime"),  # a task reaching up to the flows
])
def test_an_import_against_the_pipeline_breaks_a_contract(tree_copy: Path, module: str, upward: str) -> None:
    path = tree_copy / module
    original = path.read_text()
    path.write_text(original + f"\n{upward}  # planted\n")
    try:
        done = lint(tree_copy)
    finally:
        path.write_text(original)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 broken" in done.stdout
