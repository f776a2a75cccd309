#!/usr/bin/env bash
# The whole mosl chain on the embedded synthetic ultrasound data, with default folders:
# prepare → pretrain → finetune → evaluate → predict. Small settings so it ends in minutes on a
# 2-core CPU; drop the size and epoch options for the defaults (resnet18 U-Net at 128 px).
set -euo pipefail
WORK=${WORK:-quickstart}
SCAN=$(cd "$(dirname "$0")/.." && pwd)/assets/example_scan.png
mkdir -p "$WORK" && cd "$WORK"
mosl prepare synthetic --synthetic-count ${COUNT:-600} --size 128 --overwrite
mosl pretrain --encoder resnet18 --size 64 --epochs ${PRETRAIN_EPOCHS:-6} --batch-size 64 --resume
mosl finetune --encoder resnet18 --size 64 --epochs ${FINETUNE_EPOCHS:-12} --resume
mosl evaluate
mosl predict "$SCAN" --out mask.png --overlay
echo "quick start done: $(pwd)/mask.png and mask_overlay.png; metrics in $(pwd)/mosl_eval/metrics.json"
