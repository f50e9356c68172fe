#!/usr/bin/env bash
# fastdup 2.54 (benchmark peer) in its own virtual env: bench/.venv-fastdup.
# fastdup needs no torch: its default embedding model is an ONNX/ORT file shipped
# inside the wheel, run by the onnxruntime it bundles. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=bench/.venv-fastdup
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# keep the env out of git without touching the repo's .gitignore
[ -f "$VENV/.gitignore" ] || echo '*' > "$VENV/.gitignore"
if ! "$VENV/bin/python" -c 'import importlib.metadata as m; assert m.version("fastdup") == "2.54"' 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q fastdup==2.54
fi
# smoke: the native extension loads (telemetry and PyPI version check off)
SENTRY_OPT_OUT=1 FASTDUP_PRODUCTION=1 "$VENV/bin/python" -c 'import fastdup; print("fastdup", fastdup.__version__)' >&2
