"""Tables and figure of issue 19's study (``studies/pretraining-baseline/run.sh``).

    python studies/pretraining-baseline/summarise.py WORK

Reads ``WORK/ft/<arm>/f<fraction>_s<seed>/eval_{test,val}.json`` (``mosl evaluate --json``: the
``lesion`` group's mean Dice, benign + malignant scans) and ``WORK/pre/<arm>/metrics.json`` (its
``cost``). Every comparison is paired: arm and reference fine-tuned with the same seed, hence the same
label subset; the difference is averaged over the seeds both have, with a 95 % t-interval
(n − 1 degrees of freedom). Writes ``WORK/summary.csv``, ``WORK/summary.md``, ``WORK/gain.png``
(skipped, with a note, when matplotlib is missing) and ``WORK/runs.csv`` (one row per fine-tune).
An arm ``ARM@VARIANT`` (``ARM``'s weights fine-tuned with one more option) is compared with the
baseline like any arm, and with ``ARM`` under "fine-tuning option" (``ARM@V1@V2`` with ``ARM@V1``).

    python studies/pretraining-baseline/summarise.py WORK --runs results/pilot64_moco_breast/runs.csv

``--runs`` adds the fine-tunes of an earlier ``runs.csv`` that WORK lacks, so that a new arm pairs
with a baseline measured before. Only pair runs of the same code on the same kind of CPU or GPU: a
fine-tune is deterministic there (the 64 px baseline reproduced exactly in every fresh WORK), but the
bf16 kernels differ between processors (that baseline is 0.608 / 0.660 on an AMD EPYC, 0.610 / 0.672
on an Intel Xeon with AMX, same code).

    python studies/pretraining-baseline/summarise.py --redraw results/pilot64_moco

``--redraw`` draws a results folder's ``gain.png`` again from its ``summary.csv`` (a results folder
keeps the tables, not the fine-tunes).

    python studies/pretraining-baseline/summarise.py --overview results

``--overview`` writes ``results/overview.md``: every arm of every results folder against that folder's
own baseline, one row per arm, the three label fractions side by side.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from pathlib import Path

from scipy import stats

from mosl_cli.fsutil import write_text
from mosl_cli.report.figures import save_png
from mosl_cli.report.tables import write_csv

BASELINE = "baseline"
ORDER = [  # run.sh's arms, in the tables' order; others follow alphabetically
    "breast_simclr",
    "multiorgan_simclr",
    "multiorgan_natural_simclr",
    "multiorgan_natural_mim",
    "multiorgan_moco",
    "multiorgan_simsiam",
    "multiorgan_mim",
    "multiorgan_simclr_group",
    "breast_mim",
    "breast_moco",
    "self_training",
]
CONTRASTS = [  # (name, arm, reference) besides multi-organ vs breast-only
    ("natural images added", "multiorgan_natural_simclr", "multiorgan_simclr"),
    ("natural images added", "multiorgan_natural_mim", "multiorgan_mim"),
    ("group positives (USCL)", "multiorgan_simclr_group", "multiorgan_simclr"),
    # breast_mim_600ep: breast_mim pre-trained for 600 epochs (PRETRAIN_EPOCHS=600, a WORK of its own,
    # its ft/breast_mim linked in under this name): 5,400 steps, as many as multiorgan_natural_mim's 35 epochs
    ("6× the pre-training steps", "breast_mim_600ep", "breast_mim"),
    ("multi-organ + natural vs breast-only, same steps", "multiorgan_natural_mim", "breast_mim_600ep"),
    # self-training on top of pre-training (run.sh's @teacher) against self-training from scratch
    ("pre-training under self-training", "breast_mim_600ep@teacher", "self_training"),
    # run.sh's baseline@steps25 trains as many steps as a filtered student: the gain beyond training length
    ("self-training against a baseline as long", "self_training@keep0.7", "baseline@steps25"),
]
VARIANT = "fine-tuning option"  # ARM@VARIANT (run.sh) against ARM: the same weights, one more option
HALF_VS_ALL = "half the labels"  # an initialisation at 50 % of the labels against the baseline at 100 %
GAIN_BAR, LOW_FRACTIONS, NO_LOSS = 0.03, (0.1, 0.25), -0.005  # issue 19's acceptance
MAX_SERIES = 8
COLUMNS = [
    "comparison",
    "arm",
    "reference",
    "fraction",
    "n",
    "seeds",
    "test_arm",
    "test_ref",
    "test_diff",
    "test_diff_sd",
    "test_ci_low",
    "test_ci_high",
    "val_arm",
    "val_ref",
    "val_diff",
    "val_ci_low",
    "val_ci_high",
    "pretrain_wall_min",
    "pretrain_cpu_min",
    "pretrain_gpu_min",
]

Scores = dict[str, dict[str, dict[int, dict[str, float]]]]  # arm -> fraction -> seed -> split -> Dice


def _lesion_dice(path: Path) -> float | None:
    if not path.is_file():
        return None
    value = json.loads(path.read_text())["lesion"]["dice"]["mean"]
    return None if value is None else float(value)


def read_scores(work: Path) -> Scores:
    """Test (and val) lesion Dice of every evaluated fine-tune."""
    scores: Scores = {}
    for test_json in sorted(work.glob("ft/*/f*_s*/eval_test.json")):
        run = test_json.parent
        fraction, seed = run.name[1:].rsplit("_s", 1)
        test = _lesion_dice(test_json)
        if test is None:
            continue
        cell = {"test": test}
        val = _lesion_dice(run / "eval_val.json")
        if val is not None:
            cell["val"] = val
        scores.setdefault(run.parent.name, {}).setdefault(fraction, {})[int(seed)] = cell
    return scores


RUN_COLUMNS = ["arm", "fraction", "seed", "test", "val"]


def write_runs(scores: Scores, path: Path) -> None:
    """One row per evaluated fine-tune: its arm, label fraction, seed, test and val lesion Dice."""
    write_csv(
        path,
        RUN_COLUMNS,
        (
            {"arm": arm, "fraction": fraction, "seed": seed, **cell}
            for arm in sorted(scores)
            for fraction in sorted(scores[arm], key=float)
            for seed, cell in sorted(scores[arm][fraction].items())
        ),
    )


def add_runs(scores: Scores, path: Path) -> int:
    """Add the fine-tunes of a ``runs.csv`` that ``scores`` lacks; returns how many were added."""
    added = 0
    for row in csv.DictReader(path.open()):
        cells = scores.setdefault(row["arm"], {}).setdefault(row["fraction"], {})
        if int(row["seed"]) in cells:
            continue
        cells[int(row["seed"])] = {k: float(row[k]) for k in ("test", "val") if row.get(k)}
        added += 1
    return added


def paired(arm: dict[int, float], ref: dict[int, float]) -> dict[str, float | int | list[int]]:
    """Mean of each side and of the per-seed difference arm − ref, with its 95 % t-interval."""
    seeds = sorted(set(arm) & set(ref))
    diffs = [arm[s] - ref[s] for s in seeds]
    n = len(diffs)
    out: dict[str, float | int | list[int]] = {"n": n, "seeds": seeds}
    nan = float("nan")
    out["arm"] = statistics.mean(arm[s] for s in seeds) if n else nan
    out["ref"] = statistics.mean(ref[s] for s in seeds) if n else nan
    out["diff"] = statistics.mean(diffs) if n else nan
    out["sd"] = statistics.stdev(diffs) if n > 1 else nan
    half = stats.t.ppf(0.975, n - 1) * out["sd"] / math.sqrt(n) if n > 1 else nan  # type: ignore[operator]
    out["ci_low"], out["ci_high"] = out["diff"] - half, out["diff"] + half  # type: ignore[operator]
    return out


def _split(scores: Scores, arm: str, fraction: str, split: str) -> dict[int, float]:
    return {s: c[split] for s, c in scores.get(arm, {}).get(fraction, {}).items() if split in c}


def base_arm(arm: str) -> str:
    """The pre-training an arm fine-tunes: ``ARM`` of ``ARM@VARIANT``."""
    return arm.split("@", 1)[0]


def is_control(arm: str) -> bool:
    """``baseline@stepsN``: the baseline trained longer, a control for another arm's training length,
    not an arm to judge (``baseline@fixmatch``, a method of its own, is one)."""
    variants = arm.split("@")[1:]
    return base_arm(arm) == BASELINE and all(v.startswith("steps") for v in variants)


def pretrain_cost(work: Path, arm: str) -> dict[str, float]:
    """The arm's pre-training cost: ``mosl pretrain``'s ``cost``, or for a supervised one (a ``mosl
    finetune`` run, e.g. nerve_supervised) its wall time alone."""
    path = work / "pre" / base_arm(arm) / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    cost = metrics.get("cost", {})
    if not cost and "seconds" in metrics:
        return {"wall_minutes": metrics["seconds"] / 60}
    return {k: cost[k] for k in ("wall_minutes", "cpu_minutes", "gpu_minutes") if k in cost}


def _arms(scores: Scores) -> list[str]:
    others = sorted(a for a in scores if a not in ORDER and a != BASELINE)
    return [a for a in ORDER if a in scores] + others


def _fractions(scores: Scores) -> list[str]:
    return sorted({f for arm in scores.values() for f in arm}, key=float)


def compare(
    scores: Scores, comparison: str, arm: str, ref: str, fraction: str, cost: dict[str, float], ref_fraction: str = ""
) -> dict:
    """``arm`` against ``ref`` at ``fraction`` (``ref`` at ``ref_fraction`` when given), paired by seed."""
    theirs = ref_fraction or fraction
    test = paired(_split(scores, arm, fraction, "test"), _split(scores, ref, theirs, "test"))
    val = paired(_split(scores, arm, fraction, "val"), _split(scores, ref, theirs, "val"))
    return {
        "comparison": comparison,
        "arm": arm,
        "reference": ref,
        "fraction": fraction,
        "n": test["n"],
        "seeds": " ".join(str(s) for s in test["seeds"]),  # type: ignore[union-attr]
        "test_arm": test["arm"],
        "test_ref": test["ref"],
        "test_diff": test["diff"],
        "test_diff_sd": test["sd"],
        "test_ci_low": test["ci_low"],
        "test_ci_high": test["ci_high"],
        "val_arm": val["arm"],
        "val_ref": val["ref"],
        "val_diff": val["diff"],
        "val_ci_low": val["ci_low"],
        "val_ci_high": val["ci_high"],
        "pretrain_wall_min": cost.get("wall_minutes", ""),
        "pretrain_cpu_min": cost.get("cpu_minutes", ""),
        "pretrain_gpu_min": cost.get("gpu_minutes", ""),
    }


def rows(work: Path, scores: Scores) -> list[dict]:
    out = []
    fractions = _fractions(scores)
    for f in fractions:  # the baseline on its own: its means (no difference)
        test, val = _split(scores, BASELINE, f, "test"), _split(scores, BASELINE, f, "val")
        if test:
            base = compare(scores, "baseline", BASELINE, "", f, {})
            base.update(test_arm=statistics.mean(test.values()), n=len(test), seeds=" ".join(map(str, sorted(test))))
            base["val_arm"] = statistics.mean(val.values()) if val else float("nan")
            out.append(base)
    for arm in _arms(scores):
        cost = pretrain_cost(work, arm)
        out += [compare(scores, "vs_baseline", arm, BASELINE, f, cost) for f in fractions]
    for method, multi, breast in multiorgan_pairs(scores):
        out += [compare(scores, f"multiorgan_vs_breast_{method}", multi, breast, f, {}) for f in fractions]
    for name, arm, ref in CONTRASTS + variant_pairs(scores):
        if arm in scores and ref in scores:
            out += [compare(scores, name, arm, ref, f, {}) for f in fractions]
    return out + half_vs_all(scores)


def half_vs_all(scores: Scores) -> list[dict]:
    """The paper's claim that pre-trained models with half the labels reach the baseline with all of
    them: every initialisation at 50 % (the baseline too) against the baseline at 100 %, paired by seed
    (each seed's labelled subset differs between the two sides)."""
    half = [f for f in _fractions(scores) if float(f) == 0.5]
    full = [f for f in scores.get(BASELINE, {}) if float(f) == 1.0]
    if not half or not full:
        return []
    arms = [a for a in [BASELINE, *_arms(scores)] if half[0] in scores.get(a, {})]
    return [compare(scores, HALF_VS_ALL, a, BASELINE, half[0], {}, ref_fraction=full[0]) for a in arms]


def variant_pairs(scores: Scores) -> list[tuple[str, str, str]]:
    """(:data:`VARIANT`, ``ARM@VARIANT``, ``ARM``) for every variant arm; a chained variant
    ``ARM@V1@V2`` against ``ARM@V1``."""
    pairs = [(VARIANT, a, a.rsplit("@", 1)[0]) for a in _arms(scores) if a != base_arm(a)]
    return [p for p in pairs if p[2] != BASELINE]  # baseline@V against the baseline is its own row already


def multiorgan_pairs(scores: Scores) -> list[tuple[str, str, str]]:
    """(method, multi-organ arm, breast-only arm) for every method with both."""
    return [
        (a.removeprefix("breast_"), "multiorgan_" + a.removeprefix("breast_"), a)
        for a in _arms(scores)
        if a.startswith("breast_") and "multiorgan_" + a.removeprefix("breast_") in scores
    ]


def verdict(arm_rows: list[dict]) -> str:
    """Issue 19's bar: Δ ≥ +0.03 with the 95 % interval above 0 at 10 % and 25 %; Δ ≥ −0.005 at 100 %."""
    by_fraction = {float(r["fraction"]): r for r in arm_rows if r["n"]}
    needed = [*LOW_FRACTIONS, 1.0]
    if any(f not in by_fraction for f in needed):
        return "incomplete (needs fractions 0.1, 0.25 and 1.0)"
    if any(by_fraction[f]["n"] < 2 for f in needed):
        return "incomplete (one seed: no interval)"
    fails = [
        _pct(f)
        for f in LOW_FRACTIONS
        if not (by_fraction[f]["test_diff"] >= GAIN_BAR and by_fraction[f]["test_ci_low"] > 0)
    ]
    if by_fraction[1.0]["test_diff"] < NO_LOSS:
        fails.append("100 % (loss)")
    return "meets the bar" if not fails else "misses the bar at " + ", ".join(fails)


def _pct(fraction: str | float) -> str:
    return f"{float(fraction) * 100:g} %"


def _num(x: object, fmt: str = "{:.3f}") -> str:
    return "–" if x == "" or x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _diff(r: dict, split: str) -> str:
    d, lo, hi = r[f"{split}_diff"], r[f"{split}_ci_low"], r[f"{split}_ci_high"]
    if isinstance(lo, float) and math.isnan(lo):
        return _num(d, "{:+.3f}")
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _table(lines: list[str], rs: list[dict], first: str) -> None:
    lines += [
        f"| {first} | labels | n (seeds) | test Dice | reference | Δ test [95 % CI] | Δ val [95 % CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rs:
        lines.append(
            f"| {r['arm']} | {_pct(r['fraction'])} | {r['n']} ({r['seeds']}) | {_num(r['test_arm'])} | "
            f"{_num(r['test_ref'])} | {_diff(r, 'test')} | {_diff(r, 'val')} |"
        )


def markdown(work: Path, table: list[dict]) -> str:
    lines = [
        "# Issue 19: pre-training against the strong baseline",
        "",
        "Test lesion Dice (benign + malignant scans of BUSI's test split), mean over seeds; Δ is the mean",
        "paired difference (same seed, same label subset) with its 95 % t-interval; val alongside.",
        "",
        "## The baseline (`mosl finetune --init none`, today's defaults)",
        "",
        "| labels | n (seeds) | test Dice | val Dice |",
        "|---|---|---|---|",
    ]
    for r in (r for r in table if r["comparison"] == "baseline"):
        lines.append(
            f"| {_pct(r['fraction'])} | {r['n']} ({r['seeds']}) | {_num(r['test_arm'])} | {_num(r['val_arm'])} |"
        )
    lines += ["", "## Each arm against the baseline", ""]
    vs = [r for r in table if r["comparison"] == "vs_baseline"]
    _table(lines, vs, "arm")
    lines += ["", "Issue 19's bar: Δ ≥ +0.03 with the interval above 0 at 10 % and 25 %, Δ ≥ −0.005 at 100 %.", ""]
    judged = [a for a in dict.fromkeys(r["arm"] for r in vs) if not is_control(a)]
    for arm in judged:
        lines.append(f"- {arm}: {verdict([r for r in vs if r['arm'] == arm])}")
    lines += ["", "## Multi-organ against breast-only, per method", ""]
    mo = [r for r in table if r["comparison"].startswith("multiorgan_vs_breast_")]
    if mo:
        _table(lines, mo, "multi-organ arm (reference: breast-only)")
    else:
        lines.append("No method has both a breast-only and a multi-organ arm yet.")
    half = [r for r in table if r["comparison"] == HALF_VS_ALL]
    if half:
        lines += ["", "## Half the labels against the baseline with all of them", ""]
        _table(lines, half, "at 50 % (reference: the baseline at 100 %)")
    other = [r for r in table if r["comparison"] in {c[0] for c in CONTRASTS} | {VARIANT}]
    if other:
        lines += ["", "## Other contrasts", ""]
        for name in dict.fromkeys(r["comparison"] for r in other):
            lines += [f"{name}:", ""]
            _table(lines, [r for r in other if r["comparison"] == name], "arm")
            lines.append("")
    lines += [
        "",
        "## Pre-training cost (metrics.json's `cost`, minutes)",
        "",
        "| arm | wall | CPU | GPU |",
        "|---|---|---|---|",
    ]
    for arm in judged:
        c = pretrain_cost(work, arm)
        lines.append(
            f"| {arm} | {_num(c.get('wall_minutes'), '{:.1f}')} | {_num(c.get('cpu_minutes'), '{:.1f}')} | "
            f"{_num(c.get('gpu_minutes'), '{:.1f}')} |"
        )
    return "\n".join(lines) + "\n"


def panel_rows(arms: list[str]) -> list[list[str]]:
    """The figure's rows of arms: one row when they fit a panel (:data:`MAX_SERIES`), else the
    breast-only arms in one row and the others in rows of at most :data:`MAX_SERIES`."""
    if len(arms) <= MAX_SERIES:
        return [arms]
    breast = [a for a in arms if a.startswith("breast_")]
    other = [a for a in arms if not a.startswith("breast_")]
    return [r for r in [breast] + [other[i : i + MAX_SERIES] for i in range(0, len(other), MAX_SERIES)] if r]


def _label(r: dict) -> str:
    """An x tick: the arm, or for a contrast the arm over its reference."""
    if r["comparison"] == HALF_VS_ALL:
        return f"{r['arm']} at 50 %\n− baseline at 100 %"
    return r["arm"] if r["comparison"] == "vs_baseline" else f"{r['arm']}\n− {r['reference']}"


def figure(table: list[dict], path: Path) -> bool:
    """One panel per label fraction (columns) and row of arms (:func:`panel_rows`): each arm's paired
    test gain over the baseline with its 95 % CI; then rows of the contrasts (multi-organ against
    breast-only, natural images added, fine-tuning options), each arm against its reference."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no gain.png (pip install matplotlib)")
        return False
    vs = [r for r in table if r["comparison"] == "vs_baseline" and r["n"]]
    fractions = sorted({r["fraction"] for r in vs}, key=float)
    if not fractions:
        return False
    contrasts = [r for r in table if r["comparison"] not in {"baseline", "vs_baseline"} and r["n"]]
    pairs = list(dict.fromkeys((r["arm"], r["reference"]) for r in contrasts))
    panel_sets = [[r for r in vs if r["arm"] in arms] for arms in panel_rows(list(dict.fromkeys(r["arm"] for r in vs)))]
    panel_sets += [
        [r for r in contrasts if (r["arm"], r["reference"]) in pairs[i : i + MAX_SERIES]]
        for i in range(0, len(pairs), MAX_SERIES)
    ]
    fig, axes = plt.subplots(
        len(panel_sets),
        len(fractions),
        figsize=(4.5 * len(fractions), 4.8 * len(panel_sets)),
        sharey=True,
        squeeze=False,
    )
    for ax_row, row_set in zip(axes, panel_sets):
        against_baseline = row_set[0]["comparison"] == "vs_baseline"
        for ax, f in zip(ax_row, fractions):
            rs = [r for r in row_set if r["fraction"] == f]
            if not rs:
                ax.set_visible(False)
                continue
            x = range(len(rs))
            y = [r["test_diff"] for r in rs]
            err = [[0 if math.isnan(r["test_ci_low"]) else r["test_diff"] - r["test_ci_low"] for r in rs]]
            err.append([0 if math.isnan(r["test_ci_high"]) else r["test_ci_high"] - r["test_diff"] for r in rs])
            ax.errorbar(x, y, yerr=err, fmt="o", capsize=3, label="test Δ, 95 % CI")
            ax.axhline(0, color="black", lw=0.5)
            if against_baseline and (float(f) in LOW_FRACTIONS or float(f) == 1.0):
                bar = NO_LOSS if float(f) == 1.0 else GAIN_BAR
                ax.axhline(bar, color="grey", ls="--", lw=1, label="issue 19 bar")
            ax.set_xticks(
                list(x), [_label(r) for r in rs], rotation=45, ha="right", fontsize=8 if against_baseline else 7
            )
            ax.margins(x=0.15)
            what = "" if against_baseline else "contrasts, "
            low, high = min(r["n"] for r in rs), max(r["n"] for r in rs)
            seeds = f"{low}–{high}" if low != high else f"{high}"
            ax.set_title(f"{what}{_pct(f)} labels (n = {seeds} seeds)")
        # short: rotated arm names take the panel's height; on the row's first drawn panel, whose left
        # neighbour may be hidden (a contrast measured at one fraction only), with its tick labels
        first = next(ax for ax in ax_row if ax.get_visible())
        first.set_ylabel("Δ test lesion Dice" if against_baseline else "Δ test Dice, arm − reference")
        first.tick_params(labelleft=True)
    # one legend above the panels, where it cannot hide a whisker
    handles, names = next(ax for ax in axes[0] if ax.get_visible()).get_legend_handles_labels()
    low = [_pct(f) for f in fractions if float(f) in LOW_FRACTIONS]
    bars = ([f"{GAIN_BAR:+.3f} at " + " and ".join(low)] if low else []) + (
        [f"{NO_LOSS:+.3f} at 100 %"] if any(float(f) == 1.0 for f in fractions) else []
    )
    labels = [n + ": " + ", ".join(bars) if n == "issue 19 bar" else n for n in names]
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    save_png(fig, path, dpi=120)
    plt.close(fig)
    return True


def read_summary(path: Path) -> list[dict]:
    """The rows of a ``summary.csv`` written by this script, numbers as numbers."""
    with path.open(newline="") as f:
        table = list(csv.DictReader(f))
    for r in table:
        r["n"] = int(r["n"] or 0)
        for k in ("test_diff", "test_ci_low", "test_ci_high", "val_diff", "val_ci_low", "val_ci_high"):
            r[k] = float(r[k]) if r[k] else float("nan")
    return table


SUPERSEDED = {"pilot64"}  # fine-tuned with the batch-Dice default of its time; pilot64_dice_image re-ran it


def overview(results: Path) -> str:
    """Markdown: each ``results/<folder>/summary.csv``'s arms against its baseline (test Δ [95 % CI] and
    seeds per fraction, val Δ alongside), the folders in name order, the arms in each in its order."""
    fractions = ["0.1", "0.25", "1.0"]
    lines = [
        "# Every arm against its baseline (generated by `summarise.py --overview results`)",
        "",
        "Test lesion Dice, paired by seed with the baseline fine-tuned in the same folder (same code, same",
        "kind of processor): Δ [95 % t-interval] (seeds), and val Δ below it. The folder names the size",
        "(`pilot64`: 64 px on the CPU; `cpu128`, `gpu128`: 128 px) and the README section that ran it.",
        f"Left out: {', '.join(sorted(SUPERSEDED))} (the batch-Dice fine-tuning of its time), and a row that",
        "an earlier folder already shows with the same numbers (a later folder re-used its fine-tunes).",
        "Bar (issue 19): Δ ≥ +0.03 with the interval above 0 at 10 % and 25 %, Δ ≥ −0.005 at 100 %.",
        "",
        "| folder | arm | " + " | ".join(f"{_pct(f)} labels" for f in fractions) + " |",
        "|---|---|" + "---|" * len(fractions),
    ]
    shown: set[tuple[str, ...]] = set()
    for path in sorted(results.glob("*/summary.csv")):
        if path.parent.name in SUPERSEDED:
            continue
        table = [r for r in read_summary(path) if r["comparison"] == "vs_baseline" and r["n"]]
        for arm in dict.fromkeys(r["arm"] for r in table):
            cells = []
            for f in fractions:
                r = next((r for r in table if r["arm"] == arm and float(r["fraction"]) == float(f)), None)
                if r is None:
                    cells.append("–")
                else:
                    cells.append(f"{_diff(r, 'test')} ({r['n']})<br>val {_num(r['val_diff'], '{:+.3f}')}")
            if (arm, *cells) not in shown:  # a folder that re-used an arm's fine-tunes for pairing repeats it
                shown.add((arm, *cells))
                lines.append(f"| {path.parent.name} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Tables and figure of issue 19's study (run.sh's WORK_DIR).")
    parser.add_argument(
        "work", type=Path, help="the study's work folder (holds ft/ and pre/); with --redraw, a results folder"
    )
    parser.add_argument(
        "--runs", type=Path, action="append", default=[], help="an earlier runs.csv whose fine-tunes WORK lacks"
    )
    parser.add_argument(
        "--redraw", action="store_true", help="WORK is a results folder: draw its gain.png again from its summary.csv"
    )
    parser.add_argument(
        "--overview", action="store_true", help="WORK is the results/ folder: write its overview.md of every arm"
    )
    args = parser.parse_args()
    work = args.work
    if args.overview:
        text = overview(work)
        write_text(work / "overview.md", text)
        print(text)
        return
    if args.redraw:
        if not (work / "summary.csv").is_file():
            parser.error(f"{work}: no summary.csv; give a folder this script wrote")
        figure(read_summary(work / "summary.csv"), work / "gain.png")
        return
    if not (work / "ft").is_dir():
        parser.error(f"{work}: no ft/ folder; give the WORK_DIR of studies/pretraining-baseline/run.sh")
    scores = read_scores(work)
    write_runs(scores, work / "runs.csv")  # WORK's own fine-tunes only
    for extra in args.runs:
        if not extra.is_file():
            parser.error(f"{extra}: no such runs.csv; give one written by this script")
        print(f"{extra}: {add_runs(scores, extra)} fine-tunes added")
    table = rows(work, scores)
    write_csv(work / "summary.csv", COLUMNS, table)
    text = markdown(work, table)
    write_text(work / "summary.md", text)
    figure(table, work / "gain.png")
    print(text)


if __name__ == "__main__":
    main()
