"""Missed lesions: would a "never empty" fallback recover the scans where the mask comes out empty?

For each fine-tuned run it predicts every val and test scan as ``mosl evaluate`` does (mirroring TTA,
threshold 0.5, the run's stored post-processing rule), counts the lesion scans whose mask is empty,
and re-scores with a fallback: where the mask is empty, take the largest component of
``prob > ratio × max(prob)`` instead. A normal scan that was empty can get a false lesion that way,
so both the lesion Dice and the normal-scan score (empty-mask rule) are printed, per split and ratio.

    python studies/finetune-recipe/empty_fallback.py busi work/64/default/s0 work/64/default/s1 --csv fb.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from mosl_cli.data.store import Dataset, load_dataset
from mosl_cli.inference import Ensemble, load_ensemble
from mosl_cli.metrics import confusion, dice
from mosl_cli.postprocess import largest_component

RATIOS = (None, 0.7, 0.5, 0.3)


@torch.inference_mode()
def split_masks(ensemble: Ensemble, ds: Dataset, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Probabilities float ``[N, 1, H, W]``, the post-processed masks bool ``[N, 1, H, W]`` and the
    reference masks bool ``[N, 1, H, W]`` of ``split``."""
    assert ds.masks is not None
    idx = torch.tensor(ds.indices(split, labelled=True))
    rule = ensemble.postprocess()
    probs = torch.cat([ensemble.probabilities(ds.images[chunk], tta=True) for chunk in idx.split(64)])
    return probs, rule(probs > 0.5), ds.masks[idx] > 0


def with_fallback(prob: torch.Tensor, mask: torch.Tensor, ratio: float | None) -> torch.Tensor:
    """``mask`` where it is not empty; elsewhere the largest component of ``prob > ratio × max``."""
    if ratio is None:
        return mask
    empty = ~mask.flatten(1).any(1)
    if not bool(empty.any()):
        return mask
    peak = prob.flatten(1).amax(1).view(-1, 1, 1, 1)
    fallback = largest_component((prob > ratio * peak) & (peak > 0))
    return torch.where(empty.view(-1, 1, 1, 1), fallback, mask)


def scores(mask: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Mean Dice of the lesion scans and of the normal scans, and how many of each were left empty."""
    per_case = dice(*confusion(mask, target)[:3])
    lesion = target.flatten(1).any(1)
    empty = ~mask.flatten(1).any(1)
    return {
        "lesion_dice": float(per_case[lesion].mean()),
        "normal": float(per_case[~lesion].mean()),
        "lesion_empty": int((empty & lesion).sum()),
        "normal_empty": int((empty & ~lesion).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="BUSI prepared by mosl prepare")
    parser.add_argument("runs", type=Path, nargs="+", help="mosl finetune output folders")
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    ds = load_dataset(args.data)
    rows = []
    for run in args.runs:
        ensemble = load_ensemble(run, torch.device("cpu"))
        for split in ("val", "test"):
            prob, mask, target = split_masks(ensemble, ds, split)
            for ratio in RATIOS:
                row = {"run": str(run), "split": split, "ratio": ratio}
                row |= scores(with_fallback(prob, mask, ratio), target)
                rows.append(row)
                print(", ".join(f"{k} {round(v, 4) if isinstance(v, float) else v}" for k, v in row.items()))
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
