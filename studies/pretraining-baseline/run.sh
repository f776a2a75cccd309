#!/usr/bin/env bash
# Issue 19: does self-supervised pre-training pay on the strong baseline (today's `mosl finetune`
# defaults: resnet18 U-Net at 128 px, 100 epochs)? Every arm pre-trains with `mosl pretrain`, then
# fine-tunes on BUSI's leakage-safe split at each label fraction and seed with the baseline's options
# plus `--init <its weights>`; every fine-tune is scored by `mosl evaluate` on val and test. The arm
# self_training pre-trains nothing: it fine-tunes from scratch with `--teacher` the baseline's model of
# the same fraction and seed (the unlabelled train scans with that model's masks).
#
#   bash studies/pretraining-baseline/run.sh [DATA_DIR] [WORK_DIR]      (defaults: ../shared/data pretraining_baseline)
#
# Resumable: rerun the same command. A finished step (its metrics.json / eval json present) is
# skipped, a killed pre-training or fine-tune resumes from its checkpoint with --resume. Run one copy
# per WORK_DIR. Ends with summarise.py: WORK_DIR/summary.csv, summary.md and gain.png.
#
# Settings (environment):
#   SIZE (128)  PRETRAIN_EPOCHS (100)  SEEDS ("0 1 2 3 4")  FRACTIONS ("0.1 0.25 1.0")
#   ARMS (all below)  PARALLEL (1: jobs at once; 8 on one H200)  OMP_NUM_THREADS (2 per job)
#   PRETRAIN_THREADS (OMP_NUM_THREADS: the threads of a pre-training job; more than a fine-tune's
#              where pre-trainings run alone, e.g. one arm on a 2-core CPU: 2, with OMP_NUM_THREADS=1)
#   EPOCHS_FT (unset: finetune's default)  MOSL (mosl)  PYTHON (python)
#   BASELINE=0 skip the baseline's fine-tunes (new arms then pair with an earlier run's baseline:
#              summarise.py WORK --runs EARLIER/runs.csv, same code and the same kind of processor)
#   DRY_RUN=1  print the commands (the whole grid), run nothing
#   TINY=1     smoke run: one synthetic set (40 scans, 64 px) in place of every dataset, 32 px,
#              1 epoch of 2 steps, seed 0, fractions "0.5 1.0", arms breast_simclr multiorgan_simclr
#
# An arm ARM@VARIANT fine-tunes ARM's pre-trained weights with one more fine-tuning option (it shares
# WORK/pre/ARM): @enc0.1 --encoder-lr-scale 0.1, @lr3e-4 --lr 3e-4, @freeze10 --freeze-encoder-epochs 10,
# @encoder --init-part encoder (the decoder of a MIM pre-training left out), @teacher --teacher ARM's own
# fine-tune of the same fraction and seed (self-training on top of ARM: breast_mim@teacher starts from
# breast_mim's weights and learns from its fine-tune's masks; self_training@teacher is a second round),
# @keepQ --teacher-keep Q (self_training@keep0.7: only the 70 % of the teacher's masks it is surest of).
# Variants chain, read left to right: self_training@keep0.7@teacher is a second round of the filtered
# arm (its teacher is self_training@keep0.7's student, and it keeps 70 % of that student's masks).
# @stepsN --steps-per-epoch N; baseline@steps25 is the baseline trained as long as a filtered student
# (25 steps an epoch at 10 % and 25 % of the labels instead of 10): does self-training gain only steps?
# @fixmatch --semi fixmatch; baseline@fixmatch learns from the unlabelled train scans online instead.
# @shareS --labelled-share S; self_training@keep0.7@share0.5 draws half of each batch from the labelled scans.
# @resnetN --encoder resnetN: self_training@keep0.7@resnet50 is a larger student than its resnet18 teacher
# (as Noisy Student's), baseline@resnet50 the same encoder without the unlabelled scans.
# @sureP --teacher-sure P: self_training@keep0.7@sure0.9 leaves out of the loss the pixels its teacher gave
# a probability between 0.1 and 0.9.
# @cutmixP --cutmix P: CutMix on the training batch (ST++'s strong augmentation of pseudo-labelled scans):
# self_training@keep0.7@cutmix0.5 pastes a box of another scan, with its mask, into half of them.
# @refine fine-tunes ARM's own fine-tune of the same fraction and seed again on the labelled scans alone
# (--init that model, the baseline's options, no teacher): self_training@keep0.7@steps40@refine trains a
# student on pseudo-labels, then lets the true labels have the last word (pre-training by self-training);
# variants after it apply to the second fine-tune (...@refine@lr3e-4).
# nerve_supervised (not in the default ARMS) pre-trains with labels of another organ: the default
# fine-tune on every USGRA-seg nerve scan's mask, whose whole U-Net each fine-tune starts from; a
# @teacher after other variants takes the arm before it: nerve_supervised@teacher@keep0.7 starts from
# the nerve weights and keeps 70 % of the masks of nerve_supervised's fine-tune of its fraction and seed.
# multiorgan_simclr_dense (not in the default ARMS) pre-trains the whole U-Net with SimCLR plus a
# pixel-level contrastive loss on the decoder (--dense-weight 1, methods/dense.py).
#
# Layout: WORK/data/<dataset>, WORK/pre/<arm>, WORK/ft/<arm|baseline>/f<fraction>_s<seed>/ with
# eval_val.json and eval_test.json (`mosl evaluate --json`; eval_val/, eval_test/ hold per_case.csv),
# WORK/logs/.
set -euo pipefail
DATA=${1:-../shared/data}
WORK=${2:-pretraining_baseline}
TINY=${TINY:-0}
DRY_RUN=${DRY_RUN:-0}
BASELINE=${BASELINE:-1}
MOSL=${MOSL:-mosl}
PYTHON=${PYTHON:-python}
PARALLEL=${PARALLEL:-1}
POLL=${POLL:-5}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
PRETRAIN_THREADS=${PRETRAIN_THREADS:-$OMP_NUM_THREADS}
ALL_ARMS="breast_simclr multiorgan_simclr multiorgan_natural_simclr multiorgan_natural_mim multiorgan_moco multiorgan_simsiam multiorgan_mim multiorgan_simclr_group breast_mim breast_moco self_training"
TEACHER_ARM=self_training  # no pre-training: the baseline's model of its fraction and seed is its --teacher
if [ "$TINY" = 1 ]; then
  SIZE=${SIZE:-32}
  PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-1}
  EPOCHS_FT=${EPOCHS_FT:-1}
  SEEDS=${SEEDS:-0}
  FRACTIONS=${FRACTIONS:-"0.5 1.0"}
  ARMS=${ARMS:-"breast_simclr multiorgan_simclr"}
  PRE_OPTS=(--steps-per-epoch 2)
  FT_OPTS=(--encoder resnet18 --steps-per-epoch 2)
else
  SIZE=${SIZE:-128}
  PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-100}
  EPOCHS_FT=${EPOCHS_FT:-}
  SEEDS=${SEEDS:-"0 1 2 3 4"}
  FRACTIONS=${FRACTIONS:-"0.1 0.25 1.0"}
  ARMS=${ARMS:-$ALL_ARMS}
  PRE_OPTS=()
  FT_OPTS=()
fi
HERE=$(cd "$(dirname "$0")" && pwd)
D=$WORK/data
ULTRASOUND="busi hc18 pocus nerve muscle lung"
NATURAL="cifar10 miniimagenet"

quoted() {  # ARGS as one line a shell reads back (quotes only where needed)
  local a out=()
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./,=:+@%-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}

mosl_() {  # run (or, with DRY_RUN=1, print) one mosl command
  if [ "$DRY_RUN" = 1 ]; then
    echo "mosl $(quoted "$@")"
  else
    echo "== $(date +%T) mosl $(quoted "$@")" >&2
    # shellcheck disable=SC2086
    $MOSL "$@"
  fi
}

source_of() {  # DATASET: its folder under DATA and its prepare options (one per line)
  case $1 in
    busi) echo "$DATA/busi" ;;  # the leakage-safe default split (0.7/0.1/0.2, near-duplicates grouped)
    hc18) echo "$DATA/hc18" ;;
    pocus) echo "$DATA/pocus" ;;  # 31 images + 8 frames of each of 44 videos (the prepare default)
    nerve) printf '%s\n' "$DATA/nerve/usgra-seg/dataset" --organ nerve ;;
    muscle) printf '%s\n' "$DATA/muscle/timtrack" --organ muscle ;;
    # 362 videos of ~88 near-identical frames: 4 per video (~1,450) keep lung from outweighing the
    # other organs and still give --positives group two or more frames of each video
    lung) printf '%s\n' "$DATA/lung-videos/covid-blues" --organ lung --frames-per-video 4 ;;
    cifar10) echo "$DATA/natural/cifar10" ;;
    miniimagenet) echo "$DATA/natural/mini-imagenet" ;;
    *) echo "unknown dataset $1" >&2; exit 2 ;;
  esac
}

prepare() {  # DATASET: once, at 256 px like BUSI; every set but BUSI is an unlabelled pool (all train)
  local name=$1 splits=(--splits 1,0,0) src
  [ "$name" = busi ] && splits=()
  [ -f "$D/$name/manifest.json" ] && return 0
  if [ "$TINY" = 1 ]; then  # one synthetic set (its default split) stands in for every dataset
    [ -f "$D/synthetic/manifest.json" ] ||
      mosl_ prepare synthetic --synthetic-count 40 --size 64 --out "$D/synthetic" --overwrite
    [ "$DRY_RUN" = 1 ] || ln -sfn synthetic "$D/$name"
    return 0
  fi
  mapfile -t src < <(source_of "$name")
  mosl_ prepare "${src[@]}" --size 256 "${splits[@]}" --out "$D/$name" --overwrite
}

base_of() { echo "${1%%@*}"; }  # ARM[@VARIANT]: ARM

pre_of() {  # ARM[@VARIANT]: the pre-training whose weights it fine-tunes ("": none, it starts from scratch)
  case $(base_of "$1") in
    baseline | "$TEACHER_ARM") echo "" ;;
    *) base_of "$1" ;;
  esac
}

run_of() { echo "$WORK/ft/$1/f$2_s$3"; }  # ARM FRACTION SEED: the fine-tune's folder

ft_opts_of() {  # ARM[@VARIANT...]: the variants' fine-tuning options (one per line; none without a variant)
  local v variants=()
  IFS=@ read -ra variants <<< "${1#"$(base_of "$1")"}"
  for v in "${variants[@]}"; do
    case $v in
      "") ;;
      enc0.1) printf '%s\n' --encoder-lr-scale 0.1 ;;  # the pre-trained encoder learns at a tenth of the lr
      lr3e-4) printf '%s\n' --lr 3e-4 ;;  # the whole pre-trained U-Net at a third of the default lr
      freeze10) printf '%s\n' --freeze-encoder-epochs 10 ;;  # the decoder alone first
      encoder) printf '%s\n' --init-part encoder ;;  # only the encoder of a whole-U-Net pre-training
      teacher) ;;  # --teacher, added by finetune (teacher_arm_of)
      keep[0-9.]*) printf '%s\n' --teacher-keep "${v#keep}" ;;  # of a self-training arm: its surest masks only
      steps[0-9]*) printf '%s\n' --steps-per-epoch "${v#steps}" ;;  # baseline@steps25: a student's training length
      fixmatch) printf '%s\n' --semi fixmatch ;;  # baseline@fixmatch: consistency on the unlabelled train scans
      share[0-9.]*) printf '%s\n' --labelled-share "${v#share}" ;;  # of a student: the labelled scans' batch share
      resnet[0-9]*) printf '%s\n' --encoder "$v" ;;  # a larger student (or baseline) than the default resnet18
      sure[0-9.]*) printf '%s\n' --teacher-sure "${v#sure}" ;;  # of a student: its teacher's unsure pixels left out
      cutmix[0-9.]*) printf '%s\n' --cutmix "${v#cutmix}" ;;  # a box of another scan pasted in, with its mask
      refine) ;;  # --init the arm's own fine-tune, added by finetune (refined_of)
      *) echo "unknown variant in $1 (known: @enc0.1 @lr3e-4 @freeze10 @encoder @teacher @keepQ @stepsN @fixmatch @shareS @resnetN @sureP @cutmixP @refine)" >&2; exit 2 ;;
    esac
  done
}

data_of() {  # ARM: its pre-training datasets
  case $(base_of "$1") in
    breast_* | "$TEACHER_ARM" | baseline) echo busi ;;
    nerve_supervised) echo nerve ;;
    multiorgan_natural_*) echo "$ULTRASOUND $NATURAL" ;;
    multiorgan_*) echo "$ULTRASOUND" ;;
    *) echo "unknown arm $1" >&2; exit 2 ;;
  esac
}

method_of() {  # ARM: its method options, always explicit (mosl pretrain's default method is the best measured arm)
  case $(base_of "$1") in
    *_simclr) echo "--method simclr" ;;
    *_moco) echo "--method moco" ;;
    *_simsiam) echo "--method simsiam" ;;
    *_mim) echo "--method mim" ;;  # its default scope: the whole U-Net
    *_simclr_group) echo "--method simclr --positives group" ;;
    *_simclr_dense) echo "--method simclr --scope encoder-decoder --dense-weight 1" ;;  # + VADeR's pixel loss
    "$TEACHER_ARM" | baseline | nerve_supervised) echo "" ;;
    *) echo "unknown arm $1" >&2; exit 2 ;;
  esac
}

refined_of() {  # ARM: the arm whose fine-tune of the same fraction and seed ARM starts from ("": none)
  case $1 in
    *@refine | *@refine@*) echo "${1%@refine*}" ;;  # the arm before the last @refine
    *) echo "" ;;
  esac
}

teacher_arm_of() {  # ARM: the arm whose fine-tune of the same fraction and seed is ARM's --teacher ("": none)
  case $1 in
    *@refine | *@refine@*) echo "" ;;  # trained on the labelled scans alone
    *@teacher | *@teacher@*) echo "${1%@teacher*}" ;;  # the arm before the last @teacher
    "$TEACHER_ARM" | "$TEACHER_ARM"@*) echo baseline ;;
    *) echo "" ;;
  esac
}

needed_arm_of() {  # ARM: the arm whose fine-tune of the same fraction and seed ARM reads ("": none)
  local teacher
  teacher=$(teacher_arm_of "$1")
  if [ -n "$teacher" ]; then echo "$teacher"; else refined_of "$1"; fi  # its teacher, or the run it refines
}

resume_flag() {  # DIR: --resume a killed run, else start afresh (a run killed before its first checkpoint)
  if [ -f "$1/checkpoint.safetensors" ]; then echo --resume; else echo --overwrite; fi
}

pretrain() {  # ARM: the recipe's network (resnet18 U-Net) at SIZE, so arms and baseline fine-tune the same model
  local arm=$1 dir=$WORK/pre/$1 data=() d
  [ -f "$dir/metrics.json" ] && return 0
  if [ "$arm" = nerve_supervised ]; then  # supervised transfer: the default fine-tune on every nerve scan's mask
    OMP_NUM_THREADS=$PRETRAIN_THREADS mosl_ finetune --data "$D/nerve" --init none --size "$SIZE" \
      "${FT_OPTS[@]}" --out "$dir" $(resume_flag "$dir")
    return
  fi
  for d in $(data_of "$arm"); do data+=(--data "$D/$d"); done
  # shellcheck disable=SC2046
  OMP_NUM_THREADS=$PRETRAIN_THREADS mosl_ pretrain $(method_of "$arm") "${data[@]}" --encoder resnet18 --size "$SIZE" --epochs "$PRETRAIN_EPOCHS" \
    "${PRE_OPTS[@]}" --out "$dir" $(resume_flag "$dir")
}

evaluate() {  # RUN SPLIT: evaluate --json into RUN/eval_SPLIT.json (and RUN/eval_SPLIT/)
  local run=$1 split=$2
  [ -f "$run/eval_$split.json" ] && return 0
  if [ "$DRY_RUN" = 1 ]; then
    mosl_ evaluate --model "$run" --data "$D/busi" --split "$split" --out "$run/eval_$split" --json
    return 0
  fi
  mosl_ evaluate --model "$run" --data "$D/busi" --split "$split" --out "$run/eval_$split" --json \
    > "$run/eval_$split.json.part" || return 1
  mv "$run/eval_$split.json.part" "$run/eval_$split.json"
}

finetune() {  # ARM FRACTION SEED: fine-tune (baseline: --init none), then evaluate on val and test
  local arm=$1 f=$2 s=$3 run pre teacher refined init=none epochs=() variant=()
  run=$(run_of "$arm" "$f" "$s")
  pre=$(pre_of "$arm")
  teacher=$(teacher_arm_of "$arm")
  refined=$(refined_of "$arm")
  [ -z "$pre" ] || init=$WORK/pre/$pre/model.safetensors
  [ -n "$EPOCHS_FT" ] && epochs=(--epochs "$EPOCHS_FT")
  mapfile -t variant < <(ft_opts_of "${arm#"$refined"}")  # a @refine run: only the variants after it
  [ -z "$refined" ] || init=$(run_of "$refined" "$f" "$s")/model.safetensors
  if [ -n "$teacher" ]; then  # every teacher's mask (--teacher-keep 1) unless the arm is a @keepQ variant
    variant+=(--teacher "$(run_of "$teacher" "$f" "$s")/model.safetensors")
    [[ $arm == *@keep* ]] || variant+=(--teacher-keep 1)
  fi
  if [ ! -f "$run/metrics.json" ]; then
    # shellcheck disable=SC2046
    mosl_ finetune --data "$D/busi" --init "$init" --size "$SIZE" --seed "$s" --label-fraction "$f" \
      "${epochs[@]}" "${variant[@]}" "${FT_OPTS[@]}" --out "$run" $(resume_flag "$run") || return 1
  fi
  evaluate "$run" val || return 1  # (errexit is off in a job run as `finetune ... || ...`)
  evaluate "$run" test
}

# ---------------------------------------------------------------------------------------- data
for arm in $ARMS; do data_of "$arm" > /dev/null && method_of "$arm" > /dev/null && ft_opts_of "$arm" > /dev/null; done  # unknown arms stop here
PRE_ARMS=$(for arm in $ARMS; do pre_of "$arm"; done | awk 'NF && !seen[$0]++')  # each pre-training once
needed=busi
for arm in $ARMS; do needed="$needed $(data_of "$arm")"; done
for name in $ULTRASOUND $NATURAL; do
  case " $needed " in *" $name "*) prepare "$name" ;; esac
done

# --------------------------------------------------------------- pre-trainings, then fine-tunes
tasks=()  # "ARM FRACTION SEED"; the baseline first, seeds outermost so that early results are whole seeds
FT_ARMS=$ARMS
[ "$BASELINE" = 0 ] || FT_ARMS="baseline $ARMS"
for s in $SEEDS; do for f in $FRACTIONS; do for arm in $FT_ARMS; do tasks+=("$arm $f $s"); done; done; done

if [ "$DRY_RUN" = 1 ]; then
  for arm in $PRE_ARMS; do pretrain "$arm"; done
  for t in "${tasks[@]}"; do finetune $t; done
  echo "$PYTHON $HERE/summarise.py $WORK"
  exit 0
fi

mkdir -p "$WORK/logs"
stop() {  # the jobs this script started, and the mosl process each runs
  local p
  for p in $(jobs -rp); do pkill -TERM -P "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
}
trap 'stop; exit 130' INT TERM

declare -A pre_pid=()
running() { jobs -rp | wc -l; }
for arm in $PRE_ARMS; do  # pre-trainings first: the fine-tunes of the arms wait for them
  [ -f "$WORK/pre/$arm/metrics.json" ] && continue
  while [ "$(running)" -ge "$PARALLEL" ]; do sleep "$POLL"; done
  pretrain "$arm" > "$WORK/logs/pre_$arm.log" 2>&1 &
  pre_pid[$arm]=$!
done

declare -A started=() queued=()
for t in "${tasks[@]}"; do queued[$t]=1; done
failed=0
while :; do
  left=0
  for t in "${tasks[@]}"; do
    [ -n "${started[$t]:-}" ] && continue
    read -r arm f s <<< "$t"
    pre=$(pre_of "$arm")
    needed=$(needed_arm_of "$arm")
    if [ -n "$needed" ] && [ ! -f "$(run_of "$needed" "$f" "$s")/metrics.json" ]; then
      if { [ -n "${queued[$needed $f $s]:-}" ] && [ -z "${started[$needed $f $s]:-}" ]; } || [ -n "$(jobs -rp)" ]; then
        left=1  # the run it reads is still to be trained (or may be training)
      else
        started[$t]=skipped
        failed=1
        echo "no model $(run_of "$needed" "$f" "$s")/model.safetensors (its teacher, or the run it refines): skipping $arm f$f s$s"
      fi
      continue
    fi
    if [ -n "$pre" ] && [ ! -f "$WORK/pre/$pre/metrics.json" ]; then
      if [ -n "${pre_pid[$pre]:-}" ] && kill -0 "${pre_pid[$pre]}" 2>/dev/null; then
        left=1  # its weights are still being made
      else
        started[$t]=skipped
        failed=1
        echo "no weights for $pre (see $WORK/logs/pre_$pre.log): skipping $arm f$f s$s"
      fi
      continue
    fi
    left=1
    [ "$(running)" -lt "$PARALLEL" ] || break
    started[$t]=1
    ( finetune "$arm" "$f" "$s" > "$WORK/logs/ft_${arm}_f${f}_s$s.log" 2>&1 ||
        echo "failed: $arm f$f s$s (see $WORK/logs/ft_${arm}_f${f}_s$s.log)" ) &
  done
  [ "$left" = 0 ] && [ "$(running)" = 0 ] && break
  sleep "$POLL"
done
wait
for t in "${tasks[@]}"; do
  read -r arm f s <<< "$t"
  [ -f "$(run_of "$arm" "$f" "$s")/eval_test.json" ] || { failed=1; echo "missing: $arm f$f s$s"; }
done
"$PYTHON" "$HERE/summarise.py" "$WORK"
exit "$failed"
