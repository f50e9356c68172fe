#!/usr/bin/env bash
# One command: set everything up, then run the main job (the Prefect dedup flow on a local Dask
# cluster and an embedded Prefect API: encode, match, then a dry run of the apply step) on a
# generated sample set. Nothing moves: review demo-out/manifest.parquet, then add --execute.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
# Prefect's own database (in PREFECT_HOME) is created once per machine: its migrations take ~10 s.
[ -n "${PREFECT_API_URL:-}" ] || [ -f "${PREFECT_HOME:-$HOME/.prefect}/prefect.db" ] \
    || prefect server database upgrade -y >/dev/null
[ -d demo-data ] || dupflow sample-data demo-data
dupflow run --dataset train=demo-data/train --dataset val=demo-data/val --store demo-store --out demo-out \
    --apply --sidecars .txt,.json
dupflow info --store demo-store
