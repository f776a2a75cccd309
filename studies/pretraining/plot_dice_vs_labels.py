"""Redraw ``results/dice_vs_labels.png`` from the committed ``results/summary.csv`` with ``mosl report``'s figure code.

``mosl report`` needs the run folders, which are not in the repository; its summary.csv holds every
number the figure shows, so this reads it back and calls the same plotting function (at most
``MAX_SERIES`` lines per panel: the 26 arms of this study are spread over several panels, each with
the supervised baselines).

    python studies/pretraining/plot_dice_vs_labels.py [SUMMARY_CSV] [OUT_PNG]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from mosl_cli.report.figures import plot_dice_vs_fraction

HERE = Path(__file__).resolve().parent


def _float(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


def read_summary(path: Path) -> list[dict]:
    """summary.csv rows with the types ``plot_dice_vs_fraction`` expects."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["size"] = int(r["size"])
        r["label_fraction"] = float(r["label_fraction"])
        r["dice_mean"], r["dice_std"] = _float(r["dice_mean"]), _float(r["dice_std"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("summary", type=Path, nargs="?", default=HERE / "results" / "summary.csv")
    parser.add_argument("out", type=Path, nargs="?", help="default: dice_vs_labels.png beside SUMMARY")
    args = parser.parse_args()
    if not args.summary.is_file():
        parser.error(f"{args.summary}: no such file; give a summary.csv written by `mosl report`")
    out = args.out or args.summary.parent / "dice_vs_labels.png"
    plot_dice_vs_fraction(read_summary(args.summary), out)
    print(out)


if __name__ == "__main__":
    main()
