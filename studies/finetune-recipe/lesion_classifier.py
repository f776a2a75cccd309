"""A dedicated lesion-present classifier as the gate for normal scans.

`normal_scans.py` found that gating the masks by the lesion-present head (test AUC 0.95) costs about
0.05 lesion Dice by the time 85 % of the normal scans are called normal. Does a separate image-level
model, trained for that question alone, separate lesion from normal scans better, and what does it
give as the gate of the default segmenter (a run trained without the head)?

The classifier: smp's resnet18 encoder from scratch, global average pooling, one logit; trained on
every train scan (normal ones included) with the recipe's strong joint augmentation
(:class:`mosl_cli.augment.SegAugment`; the label is "the augmented mask has a lesion pixel"),
class-balanced BCE, AdamW with a linear warm-up and half-cosine decay, bf16 autocast where the CPU has
it, the last epoch kept. Its lesion probability (mirroring TTA) scores val and test. For each
segmenter run given, the masks are gated as `normal_scans.py` does: the threshold is the lowest that
calls ``--normal-target`` of the val normal scans normal.

    python studies/finetune-recipe/lesion_classifier.py busi work/128/default/s0 --size 128 --seed 0 \
        --out classifier_s0 --csv lesion_classifier_s0.csv

Prints one row per segmenter run (and writes them to ``--csv``); ``--out`` keeps the classifier's
per-scan probabilities (``scores.json``), so a rerun with the same ``--out`` skips the training.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from normal_scans import auc, gated, image_scores, operating_point  # the same gating rule and AUC
from torch import nn

from mosl_cli.augment import SegAugment
from mosl_cli.data.store import Dataset, load_dataset
from mosl_cli.device import autocast, cpu_bf16
from mosl_cli.fsutil import write_json
from mosl_cli.inference import load_ensemble
from mosl_cli.models import model_inputs
from mosl_cli.report.tables import write_csv
from mosl_cli.train import cosine_lr, set_lr


class LesionClassifier(nn.Module):
    """Normalised images float ``[B, C, S, S]`` → lesion-present logit ``[B]``."""

    def __init__(self, channels: int, encoder: str = "resnet18") -> None:
        super().__init__()
        self.encoder = smp.encoders.get_encoder(encoder, in_channels=channels, depth=5, weights=None)
        self.fc = nn.Linear(self.encoder.out_channels[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)[-1]
        return self.fc(features.mean(dim=(2, 3)))[:, 0]


def has_lesion(ds: Dataset, idx: torch.Tensor) -> torch.Tensor:
    """bool ``[N]``: the reference mask of each scan ``idx`` has a lesion pixel."""
    assert ds.masks is not None
    return ds.masks[idx].flatten(1).amax(1) > 0


def train_classifier(ds: Dataset, size: int, epochs: int, batch: int, lr: float, seed: int) -> LesionClassifier:
    """Train on every train scan; returns the last-epoch model (eval mode)."""
    assert ds.masks is not None
    torch.manual_seed(seed)
    idx = torch.tensor(ds.indices("train", labelled=True))
    lesion = has_lesion(ds, idx)
    # class-balanced BCE: each class carries half of the loss
    class_weight = {True: 0.5 / float(lesion.float().mean()), False: 0.5 / float((~lesion).float().mean())}
    model = LesionClassifier(ds.channels)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    augment = SegAugment(size)
    steps_per_epoch = len(idx) // batch
    total = epochs * steps_per_epoch
    bf16 = cpu_bf16()
    device = torch.device("cpu")
    step = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = idx[torch.randperm(len(idx))]
        running = 0.0
        for b in range(steps_per_epoch):
            chunk = order[b * batch : (b + 1) * batch]
            set_lr(opt, cosine_lr(step, total, max(1, total // 20), lr))
            with torch.no_grad():
                x, y = augment(ds.images[chunk], ds.masks[chunk])
            target = (y.flatten(1).amax(1) > 0.5).float()
            weight = torch.where(target > 0, class_weight[True], class_weight[False])
            with autocast(device, bf16):
                logit = model(x.contiguous(memory_format=torch.channels_last))
            loss = F.binary_cross_entropy_with_logits(logit.float(), target, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += float(loss.detach())
            step += 1
        if epoch % 10 == 9 or epoch == epochs - 1:
            minutes = (time.perf_counter() - start) / 60
            print(f"epoch {epoch + 1}/{epochs} loss {running / steps_per_epoch:.4f} ({minutes:.1f} min)", flush=True)
    return model.eval()


@torch.inference_mode()
def classifier_scores(model: LesionClassifier, ds: Dataset, split: str, size: int) -> list[float]:
    """Lesion-present probability per labelled scan of ``split`` (mean over the left-right mirror)."""
    out = []
    for chunk in torch.tensor(ds.indices(split, labelled=True)).split(64):
        x = model_inputs(ds.images[chunk], size)
        out += (0.5 * (torch.sigmoid(model(x)) + torch.sigmoid(model(x.flip(-1))))).tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="BUSI prepared by mosl prepare")
    parser.add_argument("runs", type=Path, nargs="*", help="mosl finetune output folders to gate")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--normal-target", type=float, default=0.85, help="val normal-scan score to reach")
    parser.add_argument("--out", type=Path, required=True, help="folder for the classifier's scores.json")
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()

    ds = load_dataset(args.data)
    scores_file = args.out / "scores.json"
    if scores_file.exists():
        scores = json.loads(scores_file.read_text())
    else:
        start = time.perf_counter()
        model = train_classifier(ds, args.size, args.epochs, args.batch_size, args.lr, args.seed)
        minutes = (time.perf_counter() - start) / 60
        scores = {s: classifier_scores(model, ds, s, args.size) for s in ("val", "test")}
        scores["train_minutes"] = round(minutes, 1)
        settings = ("size", "epochs", "batch_size", "lr", "seed")
        scores["settings"] = {k: v for k, v in vars(args).items() if k in settings}
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(scores_file, scores)
    for split in ("val", "test"):
        lesion = has_lesion(ds, torch.tensor(ds.indices(split, labelled=True)))
        print(f"classifier {split} AUC {auc(torch.tensor(scores[split]), lesion):.3f}")

    rows = []
    for run in args.runs:
        ensemble = load_ensemble(run, torch.device("cpu"))
        val, test = (image_scores(ensemble, ds, s) for s in ("val", "test"))
        val["classifier"], test["classifier"] = torch.tensor(scores["val"]), torch.tensor(scores["test"])
        t = operating_point(val, "classifier", args.normal_target)
        ungated_lesion, ungated_normal = gated(test, "classifier", float("-inf"))
        lesion, normal = gated(test, "classifier", t)
        val_ungated_lesion = gated(val, "classifier", float("-inf"))[0]
        val_lesion, val_normal = gated(val, "classifier", t)
        row = {
            "run": str(run),
            "classifier_seed": args.seed,
            "classifier_size": args.size,
            "val_auc": round(auc(val["classifier"], val["lesion"]), 3),
            "test_auc": round(auc(test["classifier"], test["lesion"]), 3),
            "threshold": round(t, 4),
            "val_lesion_dice_ungated": round(val_ungated_lesion, 4),
            "val_lesion_dice": round(val_lesion, 4),
            "val_normal": round(val_normal, 4),
            "test_lesion_dice_ungated": round(ungated_lesion, 4),
            "test_normal_ungated": round(ungated_normal, 4),
            "test_lesion_dice": round(lesion, 4),
            "test_normal": round(normal, 4),
            "test_lesion_scans_gated": int((test["lesion"] & (test["classifier"] <= t)).sum()),
        }
        rows.append(row)
        print(", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if args.csv and rows:
        write_csv(args.csv, list(rows[0]), rows)


if __name__ == "__main__":
    main()
