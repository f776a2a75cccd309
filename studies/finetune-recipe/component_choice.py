"""Missed lesions: would keeping a better connected component of the mask recover them?

The post-processing rule of `mosl finetune` may keep the largest component of a mask. Where a scan's
mask has several components and the largest is in the wrong place, another choice could win. For each
fine-tuned run this predicts the val and test scans with a lesion as ``mosl evaluate`` does (mirroring
TTA, threshold 0.5, no post-processing) and scores the masks with one component kept by each rule:
the largest (``largest``), the most probability mass (``mass``), the highest peak (``peak``), the
highest mean probability (``mean``), or the one with the best Dice against the reference (``oracle``:
the ceiling of any such rule). ``none`` keeps every component.

    python studies/finetune-recipe/component_choice.py busi work/64/default/s0 work/64/default/s1 --csv cc.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from mosl_cli.data.store import load_dataset
from mosl_cli.inference import load_ensemble
from mosl_cli.metrics import confusion, dice
from mosl_cli.report.tables import write_csv

RULES = ("none", "largest", "mass", "peak", "mean", "oracle")
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def keep_one(prob: np.ndarray, target: np.ndarray, rule: str) -> np.ndarray:
    """bool ``[H, W]``: the component of ``prob > 0.5`` (float ``[H, W]``) that ``rule`` picks."""
    mask = prob > 0.5
    labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if rule == "none" or count <= 1:
        return mask
    ids = np.arange(1, count + 1)
    area = ndimage.sum(np.ones_like(prob), labels, ids)
    score = {
        "largest": lambda: area,
        "mass": lambda: ndimage.sum(prob, labels, ids),
        "peak": lambda: ndimage.maximum(prob, labels, ids),
        "mean": lambda: ndimage.mean(prob, labels, ids),
        "oracle": lambda: 2 * ndimage.sum(target.astype(float), labels, ids) / (area + target.sum()),
    }[rule]()
    return labels == ids[int(np.argmax(score))]


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="BUSI prepared by mosl prepare")
    parser.add_argument("runs", type=Path, nargs="+", help="mosl finetune output folders")
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    ds = load_dataset(args.data)
    assert ds.masks is not None
    rows = []
    for run in args.runs:
        ensemble = load_ensemble(run, torch.device("cpu"))
        for split in ("val", "test"):
            idx = torch.tensor(ds.indices(split, labelled=True))
            target = ds.masks[idx] > 0
            lesion = target.flatten(1).any(1)
            probs = torch.cat([ensemble.probabilities(ds.images[c], tta=True) for c in idx[lesion].split(64)])
            prob, ref = probs[:, 0].numpy(), target[lesion, 0].numpy()
            row = {"run": str(run), "split": split, "lesion_scans": len(prob)}
            row["several_components"] = sum(ndimage.label(p > 0.5, structure=EIGHT_CONNECTED)[1] > 1 for p in prob)
            per_scan = {}
            for rule in RULES:
                kept = torch.from_numpy(np.stack([keep_one(p, r, rule) for p, r in zip(prob, ref)]))[:, None]
                per_scan[rule] = dice(*confusion(kept, torch.from_numpy(ref)[:, None])[:3])
                row[rule] = round(float(per_scan[rule].mean()), 4)
            row["missed_oracle"] = int((per_scan["oracle"] < 0.2).sum())  # still below Dice 0.2 with the oracle
            rows.append(row)
            print(", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if args.csv:
        write_csv(args.csv, list(rows[0]), rows)


if __name__ == "__main__":
    main()
