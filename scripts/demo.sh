#!/usr/bin/env bash
# One command: set everything up, then run dupflow's main job (encode, then match) on a generated sample set.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
[ -d demo-data ] || dupflow sample-data demo-data
dupflow encode --dataset train=demo-data/train --dataset val=demo-data/val --store demo-store
dupflow info --store demo-store
dupflow match --store demo-store --out demo-out
