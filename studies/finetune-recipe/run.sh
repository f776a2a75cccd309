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
# An arm folds_K is a K-fold cross-validation ensemble (`--folds K`) over train+val: one job per fold
# (`--fold k`), each fold's model scored on test, then the ensemble of the K (test only: val is trained on).
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
    normal_scans_lesion_dice) echo "--empty-masks --dice lesion" ;;  # normal scans in the BCE term only
    lesion_head) echo "--lesion-head" ;;
    lesion_head_lesion_dice) echo "--lesion-head --empty-masks --dice lesion" ;;  # the mask's BCE learns normal scans too
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
    dice_log) echo "--dice log" ;;  # per image, -ln(Dice): a missed lesion weighs more
    dice_lovasz) echo "--dice lovasz" ;;  # per image, the Lovász hinge (a convex surrogate of 1 - IoU) for the soft Dice
    normalisation_image) echo "--normalisation image" ;;  # each scan standardised to mean 0, sd 1 (nnU-Net's z-score)
    unetplusplus) echo "--arch unetplusplus" ;;
    deep_supervision) echo "--deep-supervision" ;;
    deep_supervision_ema) echo "--deep-supervision --select ema" ;;  # two levers each inside the noise, together
    batch_8) echo "--batch-size 8" ;;
    poly) echo "--schedule poly" ;;
    lr_3e-3) echo "--lr 3e-3" ;;
    wd_1e-2) echo "--weight-decay 1e-2" ;;
    cutmix_0.5) echo "--cutmix 0.5" ;;  # a box of another scan pasted into half the scans, with its mask
    elastic_0.2) echo "--elastic 0.2" ;;  # a smooth random displacement field on a fifth of the scans (nnU-Net's p)
    deep_supervision_ema_elastic) echo "--deep-supervision --select ema --elastic 0.2" ;;  # three levers each inside the noise, together
    class_aux_0.5) echo "--class-aux 0.5" ;;  # a benign/malignant output on the encoder, trained beside the masks
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

run_fold() {  # ARM SEED FOLD: one fold of a folds_K arm, scored on test
  local arm=$1 seed=$2 fold=$3 dir="$WORK/$SIZE/$1/s$2"
  local run="$dir/fold_$fold"
  [ -f "$run/eval_test/metrics.json" ] && return 0
  local resume=--overwrite
  [ -f "$run/checkpoint.safetensors" ] && resume=--resume
  $MOSL finetune --data "$DATA" --init none --size "$SIZE" --seed "$seed" --folds "${arm#folds_}" --fold "$fold" \
    ${EPOCHS:+--epochs $EPOCHS} --out "$dir" $resume
  $MOSL evaluate --model "$run" --data "$DATA" --split test --out "$run/eval_test"
}

jobs_running() { jobs -rp | wc -l; }
for seed in $SEEDS; do
  for arm in $ARMS; do
    case $arm in
      folds_*)
        for fold in $(seq 0 $((${arm#folds_} - 1))); do
          while [ "$(jobs_running)" -ge "$PARALLEL" ]; do sleep 5; done
          run_fold "$arm" "$seed" "$fold" > "$WORK/log_${SIZE}_${arm}_s${seed}_fold${fold}.txt" 2>&1 &
        done ;;
      *)
        while [ "$(jobs_running)" -ge "$PARALLEL" ]; do sleep 5; done
        run_arm "$arm" "$seed" > "$WORK/log_${SIZE}_${arm}_s${seed}.txt" 2>&1 & ;;
    esac
  done
done
wait
for seed in $SEEDS; do  # the ensembles, once all their folds are trained
  for arm in $ARMS; do
    dir="$WORK/$SIZE/$arm/s$seed"
    case $arm in folds_*) [ -f "$dir/eval_test/metrics.json" ] ||
      $MOSL evaluate --model "$dir" --data "$DATA" --split test --out "$dir/eval_test" ;; esac
  done
done
python "$HERE/summarise.py" "$WORK/$SIZE"
