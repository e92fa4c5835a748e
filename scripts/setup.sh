#!/usr/bin/env bash
# Creates .venv (if needed) and installs graphsys into it with the CPU build of torch.
# Usage: bash scripts/setup.sh [extras], e.g. bash scripts/setup.sh test
# GPU users: see README ("Installing on a GPU machine").
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=".venv/bin/python -m pip"
$pip install --quiet --disable-pip-version-check --upgrade pip
# torch first and pinned: an unpinned torch would pull several GB of CUDA wheels.
$pip install --quiet --disable-pip-version-check "torch==${GRAPHSYS_TORCH:-2.13.0}"
spec="."
[ -n "$extras" ] && spec=".[$extras]"
$pip install --quiet --disable-pip-version-check -e "$spec"
