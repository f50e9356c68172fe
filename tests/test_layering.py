"""The core library never imports the orchestration layer."""

from __future__ import annotations

import ast
from pathlib import Path

import dupflow

FORBIDDEN = {"prefect", "dask", "distributed", "flows", "tasks"}


def test_core_does_not_import_orchestration() -> None:
    root = Path(dupflow.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
    assert len(list(root.rglob("*.py"))) > 5  # the walk really saw the package
