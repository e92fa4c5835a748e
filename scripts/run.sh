#!/usr/bin/env bash
# The main job on a small built-in default: set up, generate a synthetic graph and
# train GraphSAGE on it mini-batch; then read Cora (if its files are beside the
# checkout) and train on it too.
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
$gs train "$data/synthetic-small" --model sage --fanouts 10,10 --batch-size 1024 --epochs 3
# Out of core: a 16 MB budget for 51 MB of features, so training packs each epoch's
# batches on disk (DiskGNN) while the epoch before trains, reads them segment by
# segment, and evaluates with hidden layers spilled to disk.
$gs train "$data/synthetic-small" --storage packed --host-cache 16MB --fanouts 5,5 \
    --batch-size 64 --epochs 2 --eval-every 2 --no-progress
raw="${GRAPHSYS_PLANETOID:-../shared/data/planetoid}"
if [ -f "$raw/ind.cora.x" ]; then
  [ -f "$data/cora/manifest.json" ] || \
    $gs prepare planetoid --raw "$raw" --name cora --out "$data/cora"
  $gs verify "$data/cora"
  $gs train "$data/cora" --model sage --fanouts 25,10 --batch-size 16 --hidden 64 \
      --lr 0.01 --epochs 50 --feature-norm row --eval-every 5 --no-progress
else
  echo "Cora files not found at $raw (set GRAPHSYS_PLANETOID); skipped"
fi
