#!/usr/bin/env bash
# Issue 19's comparison at 128 px on a GPU machine that gets a copy of the repository (64 MiB at most)
# but not ../shared/data, has no package index, and is held for about 10 minutes:
# the default pre-training (MIM on every ultrasound set + natural images) against fine-tuning from
# scratch, 10 % and 25 % of BUSI's labels, 5 seeds; then 100 % for the time that is left.
#
#   bash studies/pretraining-baseline/device128.sh ARCHIVE WORK OUT [SECONDS]
#
# ARCHIVE: a .tar.xz of WORK/data made beforehand where the data is, every set prepared by
#          `mosl prepare` at 128 px (BUSI with its default leakage-safe split; the pool with
#          --splits 1,0,0; CIFAR-10 at its native 32 px and mini-ImageNet at 84 px, which pre-training
#          brings to 128 once; commands in README.md), e.g.
#            tar -C STAGE -cf - data | xz -6 -T2 > .devdata/data.tar.xz
# WHEELS (.whl): kornia, kornia_rs and segmentation_models_pytorch wheels (the machine lacks them),
#          installed into /tmp/site; WHEELS= (empty) uses the installed packages.
# PRETRAIN_EPOCHS (35: 5,915 steps of 64 on this pool, as the 64 px pilot's default arm)
# SECONDS: the wall-clock budget for both phases (default 480); a phase cut short keeps what finished,
#          and the same command again on the same machine (WORK kept) resumes it.
#
# OUT gets runs.csv, summary.md, summary.csv, gain.png, the pre-training's metrics.json and logs.tar.xz.
set -uo pipefail
archive=$1 work=$2 out=$3 budget=${4:-480} epochs=${PRETRAIN_EPOCHS:-35}
here=$(cd "$(dirname "$0")" && pwd)
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }

wheels=${WHEELS-.whl}
if [ -n "$wheels" ] && [ -d "$wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
export MOSL="python3 -m mosl_cli" PYTHON=python3
nvidia-smi -L
mkdir -p "$work" "$out"
python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" "$archive" "$work" || exit 1
du -sh "$work"/data/*

# preflight: two steps of each command on this machine's torch, so that a broken install costs seconds
pf=/tmp/preflight
$MOSL finetune --data "$work/data/busi" --size 32 --epochs 1 --steps-per-epoch 2 --out "$pf/ft" --overwrite > "$pf.log" 2>&1 &&
  $MOSL pretrain --method mim --data "$work/data/busi" --encoder resnet18 --size 32 --epochs 1 --steps-per-epoch 2 \
    --out "$pf/pre" --overwrite >> "$pf.log" 2>&1 || { tail -30 "$pf.log"; exit 1; }
echo "preflight ok after $(( $(date +%s) - start )) s"

phase() {  # FRACTIONS PARALLEL: run.sh on the default arm, stopped (TERM) when the budget is spent
  local s=$(left)
  [ "$s" -gt 30 ] || return 0
  echo "== $(date +%T) fractions $1, $s s left"
  OMP_NUM_THREADS=1 PRETRAIN_THREADS=2 SIZE=128 PRETRAIN_EPOCHS=$epochs ARMS=multiorgan_natural_mim FRACTIONS=$1 SEEDS="0 1 2 3 4" \
    PARALLEL=$2 POLL=2 timeout -s TERM "$s" bash "$here/run.sh" /nonexistent "$work" 2>&1 | grep -v '^== ' | tail -20
}
phase "0.1 0.25" 11  # the pre-training and the 10 baseline fine-tunes at once; the arm's as slots free up
phase "1.0" 10

python3 "$here/summarise.py" "$work" > /dev/null 2>&1 || echo "summarise.py failed"
cp "$work"/runs.csv "$work"/summary.md "$work"/summary.csv "$work"/gain.png "$out"/ 2>/dev/null
cp "$work"/pre/multiorgan_natural_mim/metrics.json "$out"/pre_metrics.json 2>/dev/null
tar -C "$work" -cJf "$out/logs.tar.xz" logs $(cd "$work" && ls -d ft/*/*/metrics.json pre/*/config.json 2>/dev/null)
cat "$work/summary.md" 2>/dev/null | head -40
echo "done after $(( $(date +%s) - start )) s"
