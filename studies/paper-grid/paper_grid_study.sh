#!/usr/bin/env bash
# Issue 6's measured small study: the paper's grid at 32 px with a resnet18 U-Net on this 2-core CPU.
# SimCLR, MoCo v2 and SimSiam, each pre-trained (encoder scope, 15 epochs) on breast-only data (BUSI
# train + val images) and on multi-organ data (BUSI + HC18 + POCUS), then fine-tuned on BUSI against
# the supervised baseline at 100, 50, 25 and 10 % of the labels, seeds 0, 1, 2, 10 fine-tune epochs;
# every model evaluated on the BUSI test split; ends with `mosl report`.
# Usage: studies/paper-grid/paper_grid_study.sh [SHARED_DATA_DIR] [WORKDIR]     (resumable: rerun to continue)
# It runs two copies of studies/paper-grid/paper_grid.sh side by side, one thread each (they share the grid
# through per-run locks): on 2 cores that is faster than one copy with two threads.
set -euo pipefail
DATA=${1:-../shared/data}
WORK=${2:-paper_grid_study}
GRID=$(cd "$(dirname "$0")" && pwd)/paper_grid.sh
mkdir -p "$WORK" && cd "$WORK"
[ -f busi/manifest.json ] || mosl prepare "$DATA/busi" --out busi --size 256
[ -f hc18/manifest.json ] || mosl prepare "$DATA/hc18" --out hc18 --size 256 --splits 1,0,0
[ -f pocus/manifest.json ] || mosl prepare "$DATA/pocus" --out pocus --size 256 --splits 1,0,0

export OMP_NUM_THREADS=1 METHODS="simclr moco simsiam" DATA_GROUPS="breast multiorgan" SCOPES=encoder SIZES=32 \
  FRACTIONS="1.0 0.5 0.25 0.1" SEEDS="0 1 2" ENCODER=resnet18 PRETRAIN_EPOCHS=15 FINETUNE_EPOCHS=10 WORKDIR=grid
bash "$GRID" busi hc18 pocus &   # each copy ends when the whole grid is done, with grid/report
bash "$GRID" busi hc18 pocus
wait
