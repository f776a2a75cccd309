"""Normal scans with two models: the default segmenter and a model trained to leave normal scans empty.

For each seed it reads the ``per_case.csv`` that ``mosl evaluate`` wrote (val and test) for three
evaluations of ``WORK``: ``default/sS`` (the lesion segmenter), ``lesion_head_lesion_dice/sS``
(``--lesion-head --empty-masks --dice lesion``: the normal-aware model) and ``ens_default_combo/sS``
(``mosl evaluate --model`` both: their probabilities averaged). It adds a fourth combination
computed from the first two: the normal-aware model as the detector (its mask empty: the scan is
called normal) and the default's mask where it draws a lesion, as ``mosl evaluate --detector``
does. Printed and written per seed and split: lesion Dice, normal scans under the empty-mask rule
(Dice 1 when the mask is empty), and the Dice over all scans.

    python studies/finetune-recipe/two_models.py work/128 --seeds 3 4 --csv two_models.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from mosl_cli.names import PER_CASE_FILE

RUNS = {  # combination -> the run folder under WORK (per seed) whose evaluation it is
    "default": "default",
    "normal_aware": "lesion_head_lesion_dice",
    "ensemble": "ens_default_combo",
}
Cases = dict[str, tuple[str, float, int]]  # scan id -> (class, Dice, predicted pixels)
FIELDS = ["seed", "split", "combination", "lesion_dice", "normal_dice", "all_dice", "lesion_scans_emptied"]


def read_cases(path: Path) -> Cases:
    """``per_case.csv`` as scan id -> (class, Dice, predicted pixels)."""
    with path.open(newline="") as f:
        return {r["id"]: (r["class"], float(r["dice"]), int(float(r["pred_pixels"]))) for r in csv.DictReader(f)}


def gate(segmenter: Cases, detector: Cases) -> Cases:
    """The segmenter's cases with every scan the detector leaves empty set to an empty mask: Dice 1
    on a normal scan, 0 on a lesion scan."""
    out = {}
    for scan, (cls, dice, pixels) in segmenter.items():
        if detector[scan][2] == 0:
            out[scan] = (cls, 1.0 if cls == "normal" else 0.0, 0)
        else:
            out[scan] = (cls, dice, pixels)
    return out


def scores(cases: Cases) -> dict[str, float | int]:
    """Mean Dice of the lesion scans, of the normal scans and of all, and lesion scans left empty."""
    lesion = [d for c, d, _ in cases.values() if c != "normal"]
    normal = [d for c, d, _ in cases.values() if c == "normal"]
    every = lesion + normal
    return {
        "lesion_dice": round(sum(lesion) / len(lesion), 4),
        "normal_dice": round(sum(normal) / len(normal), 4) if normal else float("nan"),
        "all_dice": round(sum(every) / len(every), 4),
        "lesion_scans_emptied": sum(1 for c, _, p in cases.values() if c != "normal" and p == 0),
    }


def combinations(work: Path, seed: int, split: str) -> dict[str, Cases]:
    """The four combinations' cases for one seed and split."""
    cases = {name: read_cases(work / run / f"s{seed}" / f"eval_{split}" / PER_CASE_FILE) for name, run in RUNS.items()}
    cases["gated"] = gate(cases["default"], cases["normal_aware"])
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="the size folder of run.sh's work directory, e.g. work/128")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--csv", type=Path, help="write one row per seed, split and combination")
    args = parser.parse_args()
    if not args.work.is_dir():
        parser.error(f"{args.work}: no such folder")
    rows = []
    for seed in args.seeds:
        for split in ("val", "test"):
            for name, cases in combinations(args.work, seed, split).items():
                rows.append({"seed": seed, "split": split, "combination": name, **scores(cases)})
    for r in rows:
        print(
            f"s{r['seed']} {r['split']:4} {r['combination']:12} lesion {r['lesion_dice']:.3f} "
            f"normal {r['normal_dice']:.2f} all {r['all_dice']:.3f} lesion scans emptied {r['lesion_scans_emptied']}"
        )
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
