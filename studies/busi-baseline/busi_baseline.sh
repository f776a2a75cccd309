#!/usr/bin/env bash
# Issue 4's measured table: supervised baseline on BUSI at 64 px, resnet18, 100 % and 25 % of the
# train labels, leakage-safe split, seed 0; evaluated on the test split.
# Usage: studies/busi-baseline/busi_baseline.sh [SHARED_DATA_DIR] [WORKDIR]
set -euo pipefail
DATA=${1:-../shared/data}
WORK=${2:-busi_baseline}
mkdir -p "$WORK" && cd "$WORK"
[ -f busi/manifest.json ] || mosl prepare "$DATA/busi" --out busi --size 256
for FRAC in 1.0 0.25; do
  RUN=baseline_f${FRAC}
  [ -f $RUN/metrics.json ] || mosl finetune --data busi --init none --encoder resnet18 --size 64 --epochs 30 \
      --label-fraction $FRAC --seed 0 --out $RUN --resume
  mosl evaluate --model $RUN/model.safetensors --data busi --split test --out $RUN/eval
done
