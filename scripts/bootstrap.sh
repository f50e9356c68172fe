#!/usr/bin/env bash
# Create .venv (if missing) and install dupflow into it with pinned versions.
# Usage: scripts/bootstrap.sh [EXTRAS]   e.g. scripts/bootstrap.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "dupflow needs Python >= 3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
target="."
[ -n "${1:-}" ] && target=".[$1]"
# A regular (non-editable) install: what users get, console script included.
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt "$target"
