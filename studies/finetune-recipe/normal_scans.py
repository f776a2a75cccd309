"""Normal scans: how well can a trained segmenter tell a lesion-free scan, and at what lesion Dice?

For each fine-tuned run it scores every val and test scan with an image-level "lesion here" score,
then calls a scan lesion-free (an empty mask) when its score is below a threshold. Scores:

- ``head``: the lesion-present head's probability (runs trained with ``--lesion-head``);
- ``max``: the highest lesion probability of the mask (mirroring TTA, as ``mosl evaluate``);
- ``inside``: the mean lesion probability inside the thresholded mask (0 for an empty mask).

It prints, per run and score, the AUC of lesion vs normal scans and the operating point chosen on val
(the lowest threshold whose val normal-scan score reaches ``--normal-target``), with the test lesion
Dice and normal-scan score it gives; ``--csv`` writes those rows, ``--figure`` plots test lesion Dice
against the test normal-scan score over all thresholds (one curve per run: its ``head`` score where it
has one, else ``inside``).

    python studies/finetune-recipe/normal_scans.py busi work/128/lesion_head/s0 work/128/default/s0 \
        --csv results/normal_scans.csv --figure results/normal_scans.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from mosl_cli.data.store import Dataset, load_dataset
from mosl_cli.inference import Ensemble, load_ensemble, model_outputs
from mosl_cli.metrics import confusion, dice
from mosl_cli.pseudo_labels import confidence
from mosl_cli.report.figures import save_png


@torch.inference_mode()
def image_scores(ensemble: Ensemble, ds: Dataset, split: str) -> dict[str, torch.Tensor]:
    """Per scan of ``split`` under the first model of ``ensemble``: ``dice`` (float64 ``[N]``, ungated,
    no post-processing), ``lesion`` (bool ``[N]``, the reference mask is not empty) and the scores
    ``max``, ``inside`` and, where the model has the head, ``head`` (float ``[N]``)."""
    assert ds.masks is not None
    idx = torch.tensor(ds.indices(split, labelled=True))
    probs, heads = [], []
    for chunk in idx.split(64):
        prob, head = model_outputs(ensemble.models[0], ds.images[chunk], ensemble.meta, tta=True)
        probs.append(prob)
        heads.append(head)
    prob = torch.cat(probs)
    target = ds.masks[idx] > 0
    pred = prob > 0.5
    out = {
        "dice": dice(*confusion(pred, target)[:3]),
        "lesion": target.flatten(1).any(1),
        "max": prob.flatten(1).amax(1),
        "inside": confidence(prob, pred),
    }
    if heads[0] is not None:
        out["head"] = torch.cat(heads)[:, 0]
    return out


def auc(score: torch.Tensor, positive: torch.Tensor) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = score[positive][:, None], score[~positive][None, :]
    return float((pos > neg).double().mean() + 0.5 * (pos == neg).double().mean())


def gated(split: dict[str, torch.Tensor], score: str, threshold: float) -> tuple[float, float]:
    """Mean Dice of the lesion scans and of the normal scans when scans scoring below ``threshold``
    get an empty mask (empty-mask rule: an empty prediction on a normal scan scores 1)."""
    keep = split[score] > threshold
    per_case = torch.where(keep, split["dice"], (~split["lesion"]).double())
    lesion = split["lesion"]
    return float(per_case[lesion].mean()), float(per_case[~lesion].mean())


def operating_point(val: dict[str, torch.Tensor], score: str, normal_target: float) -> float:
    """The lowest threshold (a val score) whose val normal-scan score reaches the target."""
    for t in sorted(set(val[score].tolist())):
        if gated(val, score, t)[1] >= normal_target:
            return t
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="BUSI prepared by mosl prepare")
    parser.add_argument("runs", type=Path, nargs="+", help="mosl finetune output folders")
    parser.add_argument("--normal-target", type=float, default=0.85, help="val normal-scan score to reach")
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()

    ds = load_dataset(args.data)
    rows, curves = [], []
    for run in args.runs:
        ensemble = load_ensemble(run, torch.device("cpu"))
        val, test = (image_scores(ensemble, ds, s) for s in ("val", "test"))
        base_lesion, base_normal = gated(test, "max", float("-inf"))
        print(f"{run}: ungated test lesion Dice {base_lesion:.3f}, normal {base_normal:.3f}")
        for score in [s for s in ("head", "max", "inside") if s in val]:
            t = operating_point(val, score, args.normal_target)
            lesion, normal = gated(test, score, t)
            row = {
                "run": str(run),
                "score": score,
                "val_auc": round(auc(val[score], val["lesion"]), 3),
                "test_auc": round(auc(test[score], test["lesion"]), 3),
                "threshold": round(t, 4),
                "test_lesion_dice_ungated": round(base_lesion, 4),
                "test_lesion_dice": round(lesion, 4),
                "test_normal": round(normal, 4),
            }
            rows.append(row)
            print("  " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "run"))
            if score == ("head" if "head" in val else "inside"):
                thresholds = [float("-inf"), *sorted(set(test[score].tolist()))]
                curve = [gated(test, score, t) for t in thresholds]
                curves.append((f"{run.parent.name}/{run.name} {score}", curve, (normal, lesion)))

    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for i, (label, curve, point) in enumerate(curves):
            ax.plot([n for _, n in curve], [les for les, _ in curve], color=f"C{i}", label=label)
            ax.plot(*point, "o", color=f"C{i}")
        ax.set_ylim(0.4, 0.8)
        ax.axvline(args.normal_target, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("test normal scans called normal (Dice, empty-mask rule)")
        ax.set_ylabel("test lesion Dice")
        ax.set_title("Gating masks by an image-level score (dots: threshold chosen on val)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        fig.tight_layout()
        save_png(fig, args.figure, dpi=120)


if __name__ == "__main__":
    main()
