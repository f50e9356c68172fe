"""The pipeline's layers hold: each stage imports only the stages below it, and the core never imports
the orchestration layer. The contracts live in pyproject.toml ([tool.importlinter]); import-linter
checks them on the real import graph."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the packages in `tree` (src/dupflow, tasks, flows) with the project's contracts."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "src"), str(tree)])}
    return subprocess.run([*LINT, "--config", str(tree / "pyproject.toml"), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's packages and contracts, to plant violations in."""
    dest = tmp_path_factory.mktemp("layers")
    for part in ("src/dupflow", "tasks", "flows"):
        shutil.copytree(ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_the_project_keeps_its_layer_contracts() -> None:
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 2 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(("module", "upward"), [
    ("src/dupflow/io/fs.py", "import dupflow.match.job"),  # a lower stage reaching up the pipeline
    ("src/dupflow/match/rules.py", "from dupflow.report import write_report"),
    ("src/dupflow/store/encodings.py", "import dupflow.config"),
    ("src/dupflow/encode/hashing.py", "import prefect"),  # the core importing the orchestration layer
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
