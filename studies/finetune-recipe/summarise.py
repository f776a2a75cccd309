"""Table of the fine-tuning recipe study: one row per arm, mean ± std over its seeds.

    python studies/finetune-recipe/summarise.py WORK/SIZE [--csv RUNS.csv]

Reads ``ARM/sSEED/eval_val/metrics.json`` and ``eval_test/metrics.json`` (written by ``mosl
evaluate``), ``metrics.json`` of the fine-tune (val Dice before and after TTA and post-processing,
seconds) and, for the reference loop, ``reference/sSEED/reference.json``; prints a Markdown table.
``--csv`` also writes one row per run (arm, seed, val and test lesion Dice, test IoU, test normal
Dice, training minutes; the reference loop's val and IoU cells are empty). A ``folds_K`` arm
(``ARM/sSEED/fold_<k>/``, cross-validation over train+val) has no val score: its row is the ensemble
on test with the folds' training minutes summed, and a second row, ``folds_K one fold``, averages
its single fold models on test.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from pathlib import Path


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


RUN_COLUMNS = ["arm", "seed", "val_lesion_dice", "test_lesion_dice", "test_lesion_iou", "test_normal_dice", "minutes"]


def rows(root: Path, runs: list[list[object]] | None = None) -> list[list[str]]:
    """One table row per arm under ``root``; each run's figures are appended to ``runs`` when given."""
    table = []
    for arm in sorted(p for p in root.iterdir() if p.is_dir()):
        val, test, normal, minutes, seeds = [], [], [], [], []
        if arm.name.startswith("folds_"):
            table += _folds_rows(arm, runs)
            continue
        for run in sorted(arm.glob("s*")):
            if arm.name == "reference":
                ref = _read(run / "reference.json")
                if ref:
                    seeds.append(run.name[1:])
                    test.append(ref["lesion_dice"])
                    normal.append(ref["normal_dice"])
                    minutes.append(ref["seconds"] / 60)
                    if runs is not None:  # the reference is scored on test only
                        runs.append([arm.name, run.name[1:], "", test[-1], "", normal[-1], minutes[-1]])
                continue
            ev_test, ev_val, ft = (
                _read(run / "eval_test" / "metrics.json"),
                _read(run / "eval_val" / "metrics.json"),
                _read(run / "metrics.json"),
            )
            if not (ev_test and ev_val and ft):
                continue
            seeds.append(run.name[1:])
            val.append(ev_val["lesion"]["dice"]["mean"])
            test.append(ev_test["lesion"]["dice"]["mean"])
            normal.append(_normal_dice(ev_test))
            minutes.append(ft["seconds"] / 60)
            if runs is not None:
                iou = ev_test["lesion"]["iou"]["mean"]
                runs.append([arm.name, run.name[1:], val[-1], test[-1], iou, normal[-1], minutes[-1]])
        if seeds:
            table.append(
                [arm.name, ",".join(seeds), _fmt(val), _fmt(test), _fmt(normal), f"{statistics.mean(minutes):.0f}"]
            )
    return table


def _normal_dice(ev: dict) -> float:
    """The normal scans' Dice (empty-mask rule) of an evaluation; NaN for a dataset without them."""
    return ev["per_class"]["normal"]["dice"]["mean"] if "normal" in ev["per_class"] else math.nan


def _test_scores(ev: dict) -> list[float]:
    """Test lesion Dice, lesion IoU and normal-scan Dice of an ``eval_test/metrics.json``."""
    return [ev["lesion"]["dice"]["mean"], ev["lesion"]["iou"]["mean"], _normal_dice(ev)]


def _folds_rows(arm: Path, runs: list[list[object]] | None) -> list[list[str]]:
    """The ensemble row and the single-fold row of a ``folds_K`` arm (test only)."""
    seeds, test, normal, minutes, single, single_normal, single_minutes = [], [], [], [], [], [], []
    for run in sorted(arm.glob("s*")):
        ensemble = _read(run / "eval_test" / "metrics.json")
        folds = sorted(run.glob("fold_*"))
        members = [(_read(f / "eval_test" / "metrics.json"), _read(f / "metrics.json")) for f in folds]
        if not (ensemble and members and all(ev and ft for ev, ft in members)):
            continue
        dice, iou, normal_dice = _test_scores(ensemble)
        fold_scores = [_test_scores(ev) for ev, _ in members]
        fold_minutes = [ft["seconds"] / 60 for _, ft in members]
        seeds.append(run.name[1:])
        test.append(dice)
        normal.append(normal_dice)
        minutes.append(sum(fold_minutes))
        single_minutes.append(statistics.mean(fold_minutes))
        single.append(statistics.mean(f[0] for f in fold_scores))
        single_normal.append(statistics.mean(f[2] for f in fold_scores))
        if runs is not None:
            runs.append([arm.name, run.name[1:], "", dice, iou, normal_dice, minutes[-1]])
            for folder, scores, mins in zip(folds, fold_scores, fold_minutes, strict=True):
                runs.append([f"{arm.name}/{folder.name}", run.name[1:], "", *scores, mins])
    if not seeds:
        return []
    ids = ",".join(seeds)
    return [
        [arm.name, ids, "–", _fmt(test), _fmt(normal), f"{statistics.mean(minutes):.0f}"],
        [f"{arm.name} one fold", ids, "–", _fmt(single), _fmt(single_normal), f"{statistics.mean(single_minutes):.0f}"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="WORK/SIZE: one folder per arm, run.sh's layout")
    parser.add_argument("--csv", type=Path, help="also write one row per run here")
    args = parser.parse_args()
    root = args.root
    if not root.is_dir():
        parser.error(f"{root}: no such folder; give WORK/SIZE as run.sh writes it, e.g. work/128")
    runs: list[list[object]] = []
    header = ["arm", "seeds", "val lesion Dice", "test lesion Dice", "test normal Dice (empty-mask rule)", "train min"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows(root, runs):
        print("| " + " | ".join(row) + " |")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(RUN_COLUMNS)
            out.writerows([[c if isinstance(c, str) else f"{c:.4f}" for c in r] for r in runs])


if __name__ == "__main__":
    main()
