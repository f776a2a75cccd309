#!/usr/bin/env bash
# Issue 7's measurement: does multi-organ pre-training lift BUSI Dice at 10 % and 25 % of the labels?
# BUSI (leakage-safe split), 64 px, resnet18 U-Net, 3 seeds; every arm evaluated on the test split.
# Usage: studies/pretraining/pretraining_study.sh [SHARED_DATA_DIR] [WORKDIR]     (resumable: rerun to continue)
set -euo pipefail
DATA=${1:-../shared/data}
WORK=${2:-pretraining_study}
SEEDS=${SEEDS:-"0 1 2"}
FRACTIONS=${FRACTIONS:-"0.1 0.25"}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-15}
FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-20}
mkdir -p "$WORK" && cd "$WORK"
[ -f busi/manifest.json ] || mosl prepare "$DATA/busi" --out busi --size 256
[ -f hc18/manifest.json ] || mosl prepare "$DATA/hc18" --out hc18 --size 256 --splits 1,0,0
[ -f pocus/manifest.json ] || mosl prepare "$DATA/pocus" --out pocus --size 256 --splits 1,0,0

pretrain() {  # NAME, then mosl pretrain options
  local name=$1; shift
  [ -f pre/$name/metrics.json ] || mosl pretrain --encoder resnet18 --size 64 --batch-size 64 \
      --data busi --data hc18 --data pocus --out pre/$name --resume "$@"
}
finetune() {  # NAME INIT, then extra mosl finetune options
  local name=$1 init=$2; shift 2
  for f in $FRACTIONS; do for s in $SEEDS; do
    local run=ft/$name/f${f}_s${s}
    [ -f $run/metrics.json ] || mosl finetune --data busi --init $init --encoder resnet18 --size 64 \
        --label-fraction $f --seed $s --epochs $FINETUNE_EPOCHS --out $run --resume "$@"
    [ -f $run/eval/metrics.json ] || mosl evaluate --model $run/model.safetensors --data busi --split test --out $run/eval
  done; done
}

finetune supervised none
pretrain simclr_mo --method simclr --temperature 0.2 --epochs $PRETRAIN_EPOCHS
finetune simclr_mo pre/simclr_mo/model.safetensors
[ -z "${EXTRA_ARMS:-}" ] || finetune simclr_mo_enc0.1 pre/simclr_mo/model.safetensors --encoder-lr-scale 0.1
if [ -n "${CURVE:-}" ]; then  # more points of gain against pre-training time (5 and 30 epochs), and 5 or 10 frozen encoder epochs
  pretrain simclr_mo_e30 --method simclr --temperature 0.2 --epochs 30
  finetune simclr_mo_e30 pre/simclr_mo_e30/model.safetensors
  finetune simclr_mo_e30_freeze5 pre/simclr_mo_e30/model.safetensors --freeze-encoder-epochs 5
  finetune simclr_mo_e30_freeze10 pre/simclr_mo_e30/model.safetensors --freeze-encoder-epochs 10
  pretrain simclr_mo_e5 --method simclr --temperature 0.2 --epochs 5 --warmup-epochs 1
  finetune simclr_mo_e5 pre/simclr_mo_e5/model.safetensors
fi
if [ -n "${LEVERS:-}" ]; then  # session 3: one lever at a time against the SimCLR arm above
  [ -f cifar10/manifest.json ] || mosl prepare "$DATA/natural/cifar10" --out cifar10 --size 256 --splits 1,0,0
  [ -f miniimagenet/manifest.json ] || mosl prepare "$DATA/natural/mini-imagenet" --out miniimagenet --size 256 --splits 1,0,0
  pretrain simclr_mo_ed --method simclr --temperature 0.2 --epochs $PRETRAIN_EPOCHS --scope encoder-decoder
  finetune simclr_mo_ed pre/simclr_mo_ed/model.safetensors
  pretrain simclr_mon --method simclr --temperature 0.2 --epochs $PRETRAIN_EPOCHS --data cifar10 --data miniimagenet --steps-per-epoch 28
  finetune simclr_mon pre/simclr_mon/model.safetensors
  pretrain simclr_mo_crop0.5 --method simclr --temperature 0.2 --epochs $PRETRAIN_EPOCHS --crop-min 0.5
  finetune simclr_mo_crop0.5 pre/simclr_mo_crop0.5/model.safetensors
  pretrain simclr_mo_lr1 --method simclr --temperature 0.2 --epochs $PRETRAIN_EPOCHS --lr 1.0
  finetune simclr_mo_lr1 pre/simclr_mo_lr1/model.safetensors
  SEEDS="$SEEDS 3 4" finetune supervised none
  pretrain moco_mo --method moco --temperature 0.2 --epochs $PRETRAIN_EPOCHS --momentum 0.99
  SEEDS="$SEEDS 3 4" finetune moco_mo pre/moco_mo/model.safetensors
  pretrain moco_mo_e30 --method moco --temperature 0.2 --epochs 30 --momentum 0.99
  finetune moco_mo_e30 pre/moco_mo_e30/model.safetensors
  pretrain simsiam_mo --method simsiam --epochs $PRETRAIN_EPOCHS
  finetune simsiam_mo pre/simsiam_mo/model.safetensors
fi
if [ -n "${DECODER_BN:-}" ]; then  # session 4: a pixel-level loss for the decoder, pre-trained BN statistics, milder jitter, 40 fine-tuning epochs
  pretrain simclr_mo_dense --method simclr --temperature 0.2 --epochs $PRETRAIN_EPOCHS --scope encoder-decoder --dense-weight 1
  finetune simclr_mo_dense pre/simclr_mo_dense/model.safetensors
  SEEDS="$SEEDS 3 4" finetune simclr_mo_bn pre/simclr_mo/model.safetensors --freeze-encoder-bn
  SEEDS="$SEEDS 3" FINETUNE_EPOCHS=40 finetune supervised_ft40 none
  SEEDS="$SEEDS 3" FINETUNE_EPOCHS=40 finetune simclr_mo_ft40 pre/simclr_mo/model.safetensors
  pretrain simclr_mo_e30 --method simclr --temperature 0.2 --epochs 30   # the CURVE=1 weights (skipped when present)
  FINETUNE_EPOCHS=40 finetune simclr_mo_e30_ft40 pre/simclr_mo_e30/model.safetensors
  FINETUNE_EPOCHS=40 finetune simclr_mo_bn_ft40 pre/simclr_mo/model.safetensors --freeze-encoder-bn
  FINETUNE_EPOCHS=40 finetune simclr_mo_dense_ft40 pre/simclr_mo_dense/model.safetensors
  FINETUNE_EPOCHS=40 finetune simclr_mo_dense_bn_ft40 pre/simclr_mo_dense/model.safetensors --freeze-encoder-bn
  pretrain simclr_mo_j0.1 --method simclr --temperature 0.2 --epochs $PRETRAIN_EPOCHS --jitter 0.1
  FINETUNE_EPOCHS=40 finetune simclr_mo_j0.1_ft40 pre/simclr_mo_j0.1/model.safetensors
fi
mosl report ft --out report
