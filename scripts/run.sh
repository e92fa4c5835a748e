#!/usr/bin/env bash
# The main job on a small built-in default: set up, generate a synthetic graph,
# read Cora if its files are beside the checkout, then inspect and verify both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
gs=".venv/bin/graphsys"
data="${GRAPHSYS_DATA:-data}"
$gs info
if [ ! -f "$data/synthetic-small/manifest.json" ]; then
  $gs prepare synthetic --nodes 100000 --edges 2000000 --dim 128 --classes 16 \
      --out "$data/synthetic-small"
fi
$gs verify "$data/synthetic-small"
raw="${GRAPHSYS_PLANETOID:-../shared/data/planetoid}"
if [ -f "$raw/ind.cora.x" ]; then
  [ -f "$data/cora/manifest.json" ] || \
    $gs prepare planetoid --raw "$raw" --name cora --out "$data/cora"
  $gs verify "$data/cora"
else
  echo "Cora files not found at $raw (set GRAPHSYS_PLANETOID); skipped"
fi
