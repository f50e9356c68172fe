#!/usr/bin/env bash
# One command: set everything up, then run the whole test suite (lint and types included).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test,cnn,heif
scripts/install-browser.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check src tests tasks flows bench
mypy
# With coverage of dupflow, tasks and flows ([tool.coverage.run] in pyproject.toml): a table ending in TOTAL.
pytest -p no:cacheprovider --cov --cov-report=term:skip-covered "$@"
