#!/usr/bin/env bash
# The study grid of Figueiras et al. (arXiv 2402.14114), run by chaining the mosl subcommands:
# pre-train (method × pre-training data × scope × size), fine-tune from each pre-trained encoder and
# from scratch (the supervised baseline) at every label fraction and seed, evaluate every model on the
# test split, and end with `mosl report`.
#
#   studies/paper-grid/paper_grid.sh BUSI_DIR [PRETRAIN_DIR...]
#
# Every argument is a dataset folder written by `mosl prepare`. BUSI_DIR is fine-tuned and evaluated on
# and is the breast-only pre-training data. Each PRETRAIN_DIR is either natural images (its manifest's
# sources are all organ "natural": CIFAR-10, mini-ImageNet) or other ultrasound (HC18, POCUS, CAMUS ...).
# The pre-training data groups (DATA_GROUPS) are
#   breast      BUSI_DIR
#   multiorgan  BUSI_DIR + the ultrasound PRETRAIN_DIRs
#   natural     BUSI_DIR + the ultrasound and the natural PRETRAIN_DIRs
# (a group with the same folders as the one before it is skipped). Test-split images are never
# pre-trained on (`mosl pretrain` holds them out).
#
# Settings: the variables below; each can be overridden from the environment, e.g.
#   METHODS=simclr SEEDS=0 FRACTIONS="0.5 1.0" SIZES=32 ENCODER=resnet18 \
#   PRETRAIN_EPOCHS=1 FINETUNE_EPOCHS=1 STEPS_PER_EPOCH=2 studies/paper-grid/paper_grid.sh busi_data
# MOSL=echo prints every command instead of running it (a dry run).
#
# Resumable: a step whose metrics.json exists is skipped, a half-done one continues with --resume, so
# rerunning the same command after a kill carries on.
# Parallel: start the script several times with the same settings (say one per GPU, each with its own
# CUDA_VISIBLE_DEVICES); each run folder is locked (flock) by the copy working on it, the others move on
# to the next one, and a fine-tune whose pre-training is still running elsewhere is left for a later
# pass: each copy makes passes until the whole grid is done, then writes the report.
# Layout under WORKDIR:
#   pretrain/<group>/<method>_<scope>_<size>px/        model.safetensors, config.json, data_tag.txt
#   finetune/<size>px/<group>_<method>_<scope>/f<fraction>_s<seed>/   (+ eval/ with the test metrics)
#   finetune/<size>px/supervised/f<fraction>_s<seed>/                 (+ eval/)
#   report/                                            runs.csv, summary.csv, report.md, *.png
set -euo pipefail

METHODS=${METHODS:-"simclr moco simsiam"}
DATA_GROUPS=${DATA_GROUPS:-"breast multiorgan natural"}
SCOPES=${SCOPES:-"encoder encoder-decoder"}
SIZES=${SIZES:-"64 128"}
FRACTIONS=${FRACTIONS:-"0.1 0.25 0.5 1.0"}
SEEDS=${SEEDS:-"0 1 2"}
ENCODER=${ENCODER:-resnet50}
ARCH=${ARCH:-unet}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-100}
FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-50}
PRETRAIN_BATCH=${PRETRAIN_BATCH:-64}
FINETUNE_BATCH=${FINETUNE_BATCH:-16}
PRETRAIN_SEED=${PRETRAIN_SEED:-0}
STEPS_PER_EPOCH=${STEPS_PER_EPOCH:-}        # empty: each step's default (one pass over the data)
DEVICE=${DEVICE:-auto}
WORKDIR=${WORKDIR:-paper_grid}
REPORT_CASES=${REPORT_CASES:-4}
PASS_WAIT=${PASS_WAIT:-30}                  # seconds between passes while other copies hold runs
MOSL=${MOSL:-mosl}                          # e.g. MOSL="python -m mosl_cli"
PYTHON=${PYTHON:-python}                    # reads the dataset manifests
PRETRAIN_ARGS=${PRETRAIN_ARGS:-}            # extra options for every `mosl pretrain`
FINETUNE_ARGS=${FINETUNE_ARGS:-}            # extra options for every `mosl finetune`

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
}
[[ $# -ge 1 && $1 != -h && $1 != --help ]] || usage

read -r -a mosl <<<"$MOSL"
read -r -a pretrain_extra <<<"$PRETRAIN_ARGS"
read -r -a finetune_extra <<<"$FINETUNE_ARGS"
steps=()
[[ -n $STEPS_PER_EPOCH ]] && steps=(--steps-per-epoch "$STEPS_PER_EPOCH")

abspath() { (cd "$1" && pwd); }
say() { printf '\n== %s\n' "$*" >&2; }

# Lock run folder $1 for this copy of the script (returns 1 when another copy holds it). The lock
# file sits beside the folder and is released by unlock, or by the kernel when this copy dies.
lock() {
  command -v flock >/dev/null || return 0   # no flock: one copy at a time
  mkdir -p "$(dirname "$1")"
  exec {lock_fd}>"$1.lock"
  flock -n "$lock_fd" && return 0
  echo "running in another copy: $1" >&2
  exec {lock_fd}>&-
  return 1
}
unlock() { [[ -z ${lock_fd:-} ]] || exec {lock_fd}>&-; lock_fd=""; }

# Say that run $1 is done (on the first pass only: later passes would repeat it).
done_already() { [[ $pass -gt 1 ]] || echo "done already: $1" >&2; }

# Run one step into run folder $1 (the rest: the command), skipping it when metrics.json is there and
# continuing a half-done run (one whose config.json is written: it is, before the first epoch) with --resume.
step() {
  local out=$1; shift
  if [[ -f $out/metrics.json ]]; then
    done_already "$out"
    return 0
  fi
  local resume=()
  [[ -f $out/config.json ]] && resume=(--resume)
  say "$* ${resume[*]}"
  "$@" "${resume[@]}"
}

is_natural() {  # 0 when every source of dataset folder $1 is natural images
  "$PYTHON" - "$1/manifest.json" <<'PY'
import json, sys
sources = json.load(open(sys.argv[1], encoding="utf-8")).get("sources", [])
sys.exit(0 if sources and all(s.get("organ") == "natural" for s in sources) else 1)
PY
}

for dir in "$@"; do
  [[ -f $dir/manifest.json ]] || { echo "error: $dir is not a dataset folder; run \`mosl prepare SOURCE --out $dir\` first" >&2; exit 1; }
done
busi=$(abspath "$1"); shift
ultrasound=() natural=()
for dir in "$@"; do
  if is_natural "$dir"; then natural+=("$(abspath "$dir")"); else ultrasound+=("$(abspath "$dir")"); fi
done
mkdir -p "$WORKDIR"
work=$(abspath "$WORKDIR")

group_dirs() {  # the dataset folders of pre-training data group $1, one per line
  case $1 in
    breast) printf '%s\n' "$busi" ;;
    multiorgan) printf '%s\n' "$busi" "${ultrasound[@]}" ;;
    natural) printf '%s\n' "$busi" "${ultrasound[@]}" "${natural[@]}" ;;
    *) echo "error: unknown data group '$1' in DATA_GROUPS; use breast, multiorgan, natural" >&2; exit 1 ;;
  esac
}

# The groups to run, dropping one that holds exactly the folders of the group before it.
groups=() previous=""
for group in $DATA_GROUPS; do
  dirs=$(group_dirs "$group")
  if [[ $dirs == "$previous" ]]; then
    echo "skipping data group $group: no other folders than the group before it" >&2
    continue
  fi
  groups+=("$group") previous=$dirs
done

# One pass over the grid; sets pending=1 when a run was left to another copy of the script.
grid_pass() {
  for size in $SIZES; do
    # Pre-training: one encoder (or U-Net) per group × method × scope at this size.
    inits=()
    for group in "${groups[@]}"; do
      data_args=()
      while read -r dir; do data_args+=(--data "$dir"); done < <(group_dirs "$group")
      for method in $METHODS; do
        for scope in $SCOPES; do
          run="$work/pretrain/$group/${method}_${scope}_${size}px"
          inits+=("${group}_${method}_${scope}=$run/model.safetensors")
          [[ -f $run/metrics.json ]] || lock "$run" || { pending=1; continue; }
          mkdir -p "$run"
          echo "$group" >"$run/data_tag.txt"
          step "$run" "${mosl[@]}" pretrain --method "$method" "${data_args[@]}" --arch "$ARCH" --encoder "$ENCODER" \
            --scope "$scope" --size "$size" --epochs "$PRETRAIN_EPOCHS" --batch-size "$PRETRAIN_BATCH" \
            --seed "$PRETRAIN_SEED" --device "$DEVICE" "${steps[@]}" "${pretrain_extra[@]}" --out "$run"
          unlock
        done
      done
    done
    inits+=("supervised=none")

    # Fine-tuning and test evaluation: every init × label fraction × seed.
    for entry in "${inits[@]}"; do
      name=${entry%%=*} init=${entry#*=}
      for fraction in $FRACTIONS; do
        for seed in $SEEDS; do
          run="$work/finetune/${size}px/$name/f${fraction}_s${seed}"
          [[ -f $run/eval/metrics.json ]] && { done_already "$run"; continue; }
          if [[ $init != none && ! -f $(dirname "$init")/metrics.json && $MOSL != echo ]]; then
            [[ $pass -gt 1 ]] || echo "left for a later pass: $run (its pre-training $(dirname "$init") is not finished)" >&2
            pending=1
            continue
          fi
          lock "$run" || { pending=1; continue; }
          step "$run" "${mosl[@]}" finetune --data "$busi" --init "$init" --arch "$ARCH" --encoder "$ENCODER" \
            --label-fraction "$fraction" --size "$size" --epochs "$FINETUNE_EPOCHS" --batch-size "$FINETUNE_BATCH" \
            --seed "$seed" --device "$DEVICE" "${steps[@]}" "${finetune_extra[@]}" --out "$run"
          if [[ ! -f $run/eval/metrics.json ]]; then
            say "evaluate $run"
            "${mosl[@]}" evaluate --model "$run/model.safetensors" --data "$busi" --split test --device "$DEVICE" --out "$run/eval"
          fi
          unlock
        done
      done
    done
  done
}

# Passes until nothing is left to other copies, so that every copy ends with the whole grid done.
pass=1
while :; do
  pending=0
  grid_pass
  [[ $pending == 1 ]] || break
  [[ $pass -gt 1 ]] || echo "waiting for the runs of other copies (a pass every ${PASS_WAIT}s) ..." >&2
  pass=$((pass + 1))
  sleep "$PASS_WAIT"
done

say "report"
"${mosl[@]}" report "$work" --out "$work/report" --cases "$REPORT_CASES"
