#!/usr/bin/env bash
# Issue 7's fallback: the curve of Dice gain against pre-training length, with mosl finetune's
# default schedule (50 epochs). SimCLR on BUSI + HC18 + POCUS for each length in EPOCHS_LIST, then
# every pre-trained encoder and a from-scratch baseline fine-tuned on BUSI at 10 % and 25 % labels.
# Runs many mosl processes at once, so it is meant for a GPU (an H200 ran the session-5 curve in
# 8 min); on this repository's 2-core CPU use PARALLEL=1 and expect about 7 hours.
#
#   bash studies/pretraining/pretraining_curve.sh WORKDIR
#
# WORKDIR holds busi, hc18 and pocus made by `mosl prepare` (as in studies/pretraining/pretraining_study.sh, any
# --size). Results: WORKDIR/pre, WORKDIR/ft, WORKDIR/curve.json and WORKDIR/curve.png (gain against
# pre-training epochs; CPU_SECONDS_PER_EPOCH sets its CPU-minutes axis). Finished runs are skipped,
# so an interrupted run resumes; WORKDIR/logs/started.txt lists the fine-tunes as they start. Environment:
#   EPOCHS_LIST  pre-training lengths (default "15 50 100 200")
#   SEEDS, EXTRA_SEEDS  fine-tuning seeds; an arm's EXTRA_SEEDS start after its SEEDS
#   FRACTIONS    label fractions (default "0.1 0.25")
#   PARALLEL     fine-tunes at once (default 6); the pre-trainings run beside them
#   POLL         seconds between checks (default 2)
#   DEADLINE     a `date +%s` after which running jobs are stopped and the summary written
#   FT_EXTRA, PRE_EXTRA  more options for finetune / pretrain (the last of a repeated option wins)
#   NAME         arm prefix (default simclr); MOSL  the command (default mosl)
set -uo pipefail
cd "$1"
EPOCHS_LIST=${EPOCHS_LIST:-"15 50 100 200"}
NAME=${NAME:-simclr}  # arms are NAME_eEPOCHS
SEEDS=${SEEDS:-"0 1 2"}
EXTRA_SEEDS=${EXTRA_SEEDS:-}
FRACTIONS=${FRACTIONS:-"0.1 0.25"}
PARALLEL=${PARALLEL:-6}
DEADLINE=${DEADLINE:-0}
MOSL=${MOSL:-mosl}
POLL=${POLL:-2}  # seconds between looks at what has finished
mkdir -p pre ft logs

pre_pids=()
for e in $EPOCHS_LIST; do  # the pre-trainings, all at once
  [ -f pre/${NAME}_e$e/metrics.json ] && continue
  $MOSL pretrain --encoder resnet18 --size 64 --batch-size 64 --data busi --data hc18 --data pocus \
    --temperature 0.2 --epochs $e --out pre/${NAME}_e$e --resume ${PRE_EXTRA:-} > logs/pre_${NAME}_e$e.log 2>&1 &
  pre_pids+=($!)
done
pretraining() {  # how many of the pre-trainings are still running
  local n=0 p
  for p in "${pre_pids[@]}"; do kill -0 $p 2>/dev/null && n=$((n + 1)); done
  echo $n
}

tasks=()  # "ARM INIT FRACTION SEED", in the order they start
for seeds in "$SEEDS" "$EXTRA_SEEDS"; do
  for arm in supervised $(for e in $EPOCHS_LIST; do echo ${NAME}_e$e; done); do
    for s in $seeds; do for f in $FRACTIONS; do
      init=none; [ $arm = supervised ] || init=pre/$arm/model.safetensors
      tasks+=("$arm $init $f $s")
    done; done
  done
done

finetune() {  # ARM INIT FRACTION SEED
  local run=ft/$1/f$3_s$4
  { [ -f $run/metrics.json ] || $MOSL finetune --data busi --init $2 --encoder resnet18 --size 64 \
      --label-fraction $3 --seed $4 --out $run --resume ${FT_EXTRA:-}; } &&
    $MOSL evaluate --model $run/model.safetensors --data busi --split test --out $run/eval
}

ready() { [ "$1" = none ] || [ -f "$(dirname "$1")/metrics.json" ]; }
late() { [ "$DEADLINE" -gt 0 ] && [ "$(date +%s)" -ge "$DEADLINE" ]; }
declare -A started=()
while :; do
  late && break
  left=0
  for t in "${tasks[@]}"; do
    read -r arm init f s <<< "$t"
    [ -f ft/$arm/f${f}_s$s/eval/metrics.json ] && continue
    [ -n "${started[$t]:-}" ] && continue
    left=1
    if ! ready $init; then  # its pre-training failed: leave it out
      [ "$(pretraining)" = 0 ] && { started[$t]=skipped; echo "no weights for $t"; }
      continue
    fi
    [ "$(jobs -rp | wc -l)" -lt $((PARALLEL + $(pretraining))) ] || break
    started[$t]=1
    echo "$(date +%T) $arm f$f s$s" >> logs/started.txt  # the order the fine-tunes start in
    finetune $arm $init $f $s > logs/ft_${arm}_f${f}_s$s.log 2>&1 &
  done
  [ $left = 0 ] && [ "$(jobs -rp | wc -l)" = 0 ] && break
  sleep $POLL
done
if late; then
  echo "deadline: stopping $(jobs -rp | wc -l) jobs"
  for p in $(jobs -rp); do pkill -TERM -P $p; kill $p; done 2>/dev/null
  sleep 3
fi

python3 - "$EPOCHS_LIST" "$NAME" <<'EOF'
"""curve.json and a table: test lesion Dice (mean ± sample std over seeds) and the gain over the
baseline on the same seeds, per pre-training length and label fraction."""
import json, os, pathlib, statistics as st, sys
from mosl_cli.fsutil import write_text  # atomic: a reader never sees half a file
from mosl_cli.report.figures import save_png
def dice(arm, f):
    out = {}
    for p in pathlib.Path("ft", arm).glob(f"f{f}_s*/eval/metrics.json"):
        out[int(p.parent.parent.name.split("_s")[1])] = json.loads(p.read_text())["lesion"]["dice"]["mean"]
    return out
def pre_seconds(arm):
    log = pathlib.Path("pre", arm, "log.jsonl")
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return sum(r["seconds"] for r in rows), len(rows)
curve = []
for arm in ["supervised"] + [f"{sys.argv[2]}_e{e}" for e in sys.argv[1].split()]:
    row = {"arm": arm, "pretrain_seconds": None, "pretrain_epochs_done": 0}
    if arm != "supervised":
        row["pretrain_seconds"], row["pretrain_epochs_done"] = pre_seconds(arm)
    for f in ("0.1", "0.25"):
        v, b = dice(arm, f), dice("supervised", f)
        seeds = sorted(s for s in v if s in b)
        cell = {"seeds": seeds, "dice": [v[s] for s in seeds]}
        if seeds:
            cell["mean"] = st.mean(cell["dice"])
            cell["std"] = st.stdev(cell["dice"]) if len(seeds) > 1 else None
            cell["gain"] = cell["mean"] - st.mean(b[s] for s in seeds)
        row[f] = cell
    curve.append(row)
write_text("curve.json", json.dumps(curve, indent=1))
try:  # curve.png: gain (mean and std of the per-seed differences) against pre-training epochs
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
cpu_s = float(os.environ.get("CPU_SECONDS_PER_EPOCH", "31.6"))  # one epoch on the 2-core CPU (session 5)
if plt is not None:
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for f, style in (("0.1", "o-"), ("0.25", "s-")):
        pts = [(r["pretrain_epochs_done"], r[f]) for r in curve if r["arm"] != "supervised" and r[f]["seeds"]]
        base = dice("supervised", f)
        diffs = [[d - base[s] for s, d in zip(c["seeds"], c["dice"])] for _, c in pts]
        ax.errorbar([e for e, _ in pts], [st.mean(d) for d in diffs], yerr=[st.stdev(d) if len(d) > 1 else 0 for d in diffs],
                    fmt=style, capsize=3, label=f"{float(f):.0%} labels")
    ax.axhline(0.03, color="grey", ls="--", lw=1, label="issue 7 bar (+0.03)")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlim(left=0)
    ax.axvline(3600 / cpu_s, color="grey", ls=":", lw=1, label=f"60 min of the 2-core CPU ({cpu_s:.0f} s/epoch)")
    ax.set_xlabel("SimCLR pre-training epochs (BUSI + HC18 + POCUS, 1,813 images)")
    ax.set_ylabel("test Dice gain over the baseline")
    top = ax.secondary_xaxis("top", functions=(lambda e: e * cpu_s / 60, lambda m: m * 60 / cpu_s))
    top.set_xlabel("minutes of the 2-core CPU")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, "curve.png", dpi=120)
fmt = lambda c: (f"{c['mean']:.3f} ± {c['std'] or 0:.3f} (n={len(c['seeds'])}) Δ {c['gain']:+.3f}" if c["seeds"] else "—")
for r in curve:
    print(f"{r['arm']:>12} {r['pretrain_epochs_done']:>4} ep {r['pretrain_seconds'] or 0:7.0f} s | 10 %: {fmt(r['0.1'])} | 25 %: {fmt(r['0.25'])}")
EOF
