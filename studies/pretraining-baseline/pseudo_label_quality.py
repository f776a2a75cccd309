"""How good are the masks a teacher gives a self-trained arm? (README.md's self-training sections)

For each run ``WORK/ft/ARM/f<fraction>_s<seed>`` (ARM: ``--teacher-arm``, the baseline by default, the
teacher of ``self_training``; ``breast_mim`` teaches ``breast_mim@teacher``; repeated, the arms' runs of
one fraction and seed teach together, their mean probabilities) it draws the masks that ``mosl finetune
--teacher MODEL --teacher-keep Q`` would train on (``pseudo_labels.teacher_masks`` on the same pool; Q
is ``--keep``, 1 by default: every mask, as run.sh's ``self_training`` arm) and scores them against the
reference masks the run never reads: the Dice of the kept lesion scans (empty-mask rule), the lesion
scans dropped (the teacher drew nothing or, with ``--keep Q``, was among the unsure masks
``--teacher-keep Q`` leaves out), and the normal scans kept (a false lesion the student learns).
``--split val`` draws and scores the teacher's masks of the val split instead, where ``--keep`` can be
chosen without reading a train label. ``--sure P`` adds where the kept lesion masks' wrong pixels lie:
the share of them that ``--teacher-sure P`` would leave out of the loss (probability strictly between 1
− P and P), those unsure pixels per reference lesion pixel, and the Dice over the sure pixels alone.
Prints one JSON line per run; ``--csv`` writes the rows.

    python studies/pretraining-baseline/pseudo_label_quality.py WORK [--teacher-arm ARM] [--keep Q] [--split val] \
        [--sure P] --csv OUT.csv
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from mosl_cli.augment import UNSURE_PIXEL
from mosl_cli.data.store import Dataset, load_dataset
from mosl_cli.finetune import label_subset, teacher_pool
from mosl_cli.metrics import confusion, dice
from mosl_cli.pseudo_labels import teacher_masks
from mosl_cli.report.tables import write_csv

RUN = re.compile(r"f(?P<fraction>[0-9.]+)_s(?P<seed>\d+)$")


def quality(
    ds: Dataset,
    runs: list[Path],
    fraction: float,
    seed: int,
    keep: float = 1.0,
    split: str = "pool",
    sure: float = 0.5,
) -> dict[str, float | int | str]:
    """The masks of the teacher ``runs`` (one run, or several of the same fraction and seed: their
    ensemble, mean probabilities) of their fraction's unlabelled pool (``split`` "pool") or of the val
    split ("val"), the ``keep`` fraction it is surest of, against the reference masks; with ``sure`` >
    0.5 also :func:`unsure_pixels`."""
    teacher = [str(run / "model.safetensors") for run in runs]
    assert ds.masks is not None
    if split == "val":
        pool = ds.indices("val")
    else:
        pool = teacher_pool(ds, fraction, seed, label_subset(ds, fraction, seed, empty_masks=False))
    labels = teacher_masks(teacher, ds, pool, torch.device("cpu"), keep_fraction=keep)
    lesion = {i for i in pool if bool(ds.masks[i].any())}
    kept = dict(zip(labels.indices, labels.masks, strict=True))
    kept_lesion = [i for i in labels.indices if i in lesion]
    pred, reference = torch.stack([kept[i] for i in kept_lesion]) > 0, ds.masks[kept_lesion] > 0
    scores = dice(*confusion(pred, reference)[:3])
    extra = {}
    if sure > 0.5:
        marked = teacher_masks(teacher, ds, kept_lesion, torch.device("cpu"), sure=sure)  # the same scans, marked
        extra = unsure_pixels(pred, marked.masks == UNSURE_PIXEL, reference) | {"sure": sure}
    return {
        "teacher": "+".join(run.parent.name for run in runs),
        "fraction": fraction,
        "seed": seed,
        "keep": keep,
        "split": split,
        "pool": len(pool),
        "pool_lesion": len(lesion),
        "kept": len(labels.indices),
        "lesion_dropped": len(lesion) - len(kept_lesion),
        "unsure_dropped": labels.unsure,
        "normal_kept": len(labels.indices) - len(kept_lesion),
        "normal_pool": len(pool) - len(lesion),
        "kept_lesion_dice": round(float(scores.mean()), 4),
    } | extra


def unsure_pixels(pred: torch.Tensor, unsure: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Where the wrong pixels of masks ``pred`` lie (bool ``[N, 1, H, W]``, as ``unsure`` and
    ``reference``): the share of them that are ``unsure``, the unsure pixels per reference lesion pixel,
    and the mean Dice over the sure pixels only."""
    wrong = pred != reference
    on_sure = dice(*confusion(pred & ~unsure, reference & ~unsure)[:3])
    return {
        "errors_unsure": round(float((wrong & unsure).sum() / wrong.sum().clamp_min(1)), 4),
        "unsure_per_lesion_pixel": round(float(unsure.sum() / reference.sum().clamp_min(1)), 4),
        "kept_lesion_dice_sure_pixels": round(float(on_sure.mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="run.sh's WORK folder (data/busi and ft/ARM/)")
    parser.add_argument(
        "--teacher-arm",
        action="append",
        help="the arm whose fine-tunes teach (default: baseline); repeated, their ensemble of each fraction and seed",
    )
    parser.add_argument("--keep", type=float, default=1.0, help="--teacher-keep's fraction (default: 1, all)")
    parser.add_argument("--split", choices=("pool", "val"), default="pool", help="the scans drawn (default: pool)")
    parser.add_argument("--sure", type=float, default=0.5, help="--teacher-sure's P (default: off)")
    parser.add_argument("--csv", type=Path, help="write the rows here")
    args = parser.parse_args()
    ds, rows, arms = load_dataset(args.work / "data" / "busi"), [], args.teacher_arm or ["baseline"]
    for run in sorted((args.work / "ft" / arms[0]).iterdir()):
        match = RUN.match(run.name)
        runs = [args.work / "ft" / arm / run.name for arm in arms]
        if match is None or float(match["fraction"]) >= 1 or not all((r / "model.safetensors").is_file() for r in runs):
            continue
        rows.append(quality(ds, runs, float(match["fraction"]), int(match["seed"]), args.keep, args.split, args.sure))
        print(json.dumps(rows[-1]), flush=True)
    if args.csv and rows:
        write_csv(args.csv, list(rows[0]), rows)


if __name__ == "__main__":
    main()
