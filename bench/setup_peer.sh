#!/usr/bin/env bash
# imagededup in its own virtual env (it needs torch + torchvision even for hashing).
# torch 2.14.1 / torchvision 0.29.1 install from local files on the project machines.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv-peer/bin/python ] || python3 -m venv .venv-peer
.venv-peer/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 imagededup
