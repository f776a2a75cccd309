#!/usr/bin/env bash
# The fine-tuning recipe study: each lever of `mosl finetune` against the default recipe, on BUSI's
# leakage-safe split, scored by `mosl evaluate` on val (where choices are made) and test.
#
#   bash studies/finetune-recipe/run.sh DATASET_DIR WORK_DIR
#
# DATASET_DIR: BUSI prepared by `mosl prepare ../shared/data/busi --out busi` (256 px, 547/77/156).
# Resumable: an arm whose test evaluation exists is skipped; a killed fine-tune resumes.
# Settings (environment): SIZE (128), SEEDS ("0 1 2"), ARMS (names below), PARALLEL (1), MOSL (mosl),
# EPOCHS (empty: each recipe's own; a small number for a quick check of the script).
set -euo pipefail
DATA=${1:?dataset directory}
WORK=${2:?work directory}
SIZE=${SIZE:-128}
SEEDS=${SEEDS:-"0 1 2"}
PARALLEL=${PARALLEL:-1}
MOSL=${MOSL:-mosl}
EPOCHS=${EPOCHS:-}
ARMS=${ARMS:-"reference default mild_augment normal_scans lesion_head select_ema resnet34 fraction_0.1 fraction_0.25"}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$WORK"

options() {  # the finetune options of an arm (added to the defaults)
  case $1 in
    default) echo "" ;;  # U-Net below 256 px, UNet++ from 256 px (--arch auto)
    unet) echo "--arch unet" ;;  # the default at every size before UNet++ won on val at 256 px
    mild_augment) echo "--augment-strength mild" ;;
    normal_scans) echo "--empty-masks" ;;
    lesion_head) echo "--lesion-head" ;;
    select_ema) echo "--select ema" ;;
    resnet34) echo "--encoder resnet34" ;;
    resnet50) echo "--encoder resnet50" ;;
    epochs_200) echo "--epochs 200" ;;
    epochs_60) echo "--epochs 60" ;;
    epochs_150) echo "--epochs 150" ;;
    scse) echo "--decoder-attention scse" ;;
    sgd) echo "--optimizer sgd --lr 0.01 --weight-decay 3e-5" ;;
    dice_image) echo "--dice image" ;;  # the default since it was measured here
    dice_batch) echo "--dice batch" ;;  # the default before
    unetplusplus) echo "--arch unetplusplus" ;;
    deep_supervision) echo "--deep-supervision" ;;
    batch_8) echo "--batch-size 8" ;;
    poly) echo "--schedule poly" ;;
    lr_3e-3) echo "--lr 3e-3" ;;
    wd_1e-2) echo "--weight-decay 1e-2" ;;
    fraction_0.1) echo "--label-fraction 0.1" ;;
    fraction_0.25) echo "--label-fraction 0.25" ;;
    *) echo "unknown arm $1" >&2; exit 2 ;;
  esac
}

run_arm() {  # ARM SEED: fine-tune, then evaluate on val and test
  local arm=$1 seed=$2 dir="$WORK/$SIZE/$1/s$2"
  if [ "$arm" = reference ]; then  # the plain loop of benchmarks/finetune_recipe.py (test split only)
    python "$HERE/../../benchmarks/finetune_recipe.py" --data "$DATA" --size "$SIZE" --seed "$seed" --work "$dir" \
      --part reference ${EPOCHS:+--epochs $EPOCHS}
    return 0
  fi
  [ -f "$dir/eval_test/metrics.json" ] && return 0
  local resume=--overwrite
  [ -f "$dir/checkpoint.safetensors" ] && resume=--resume
  # shellcheck disable=SC2046
  $MOSL finetune --data "$DATA" --init none --size "$SIZE" --seed "$seed" $(options "$arm") ${EPOCHS:+--epochs $EPOCHS} \
    --out "$dir" $resume
  $MOSL evaluate --model "$dir" --data "$DATA" --split val --out "$dir/eval_val"
  $MOSL evaluate --model "$dir" --data "$DATA" --split test --out "$dir/eval_test"
}

jobs_running() { jobs -rp | wc -l; }
for seed in $SEEDS; do
  for arm in $ARMS; do
    while [ "$(jobs_running)" -ge "$PARALLEL" ]; do sleep 5; done
    run_arm "$arm" "$seed" > "$WORK/log_${SIZE}_${arm}_s${seed}.txt" 2>&1 &
  done
done
wait
python "$HERE/summarise.py" "$WORK/$SIZE"
