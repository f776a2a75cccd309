"""Multi-scale test-time augmentation: does averaging over input scales lift lesion Dice?

``mosl evaluate --tta`` averages a scan's prediction with its left-right mirror at the training size.
This script also runs each model at other input sizes (the training size times each scale, rounded to
a multiple of 32, mirrored as well), resizes those probabilities back and averages all of them, then
scores the split exactly as ``mosl evaluate`` does (its post-processing rule included). It prints one
line per scale set: the lesion Dice of each run and their mean.

    python studies/finetune-recipe/tta_scales.py busi work/128/deep_supervision/s{0,1,2} --split val
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence

import torch
import torch.nn.functional as F

import mosl_cli.inference as inference
from mosl_cli.config import EvaluateConfig
from mosl_cli.evaluate import run_evaluate

SCALE_SETS = ((1.0,), (1.0, 1.25), (0.75, 1.0, 1.25), (1.0, 1.25, 1.5))
single_scale = inference.forward_outputs


def multi_scale(scales: Sequence[float]):
    """A drop-in for ``inference.forward_outputs`` that averages the outputs of model inputs float32
    ``[B, C, s, s]`` over ``scales`` (each run at ``round(s * scale / 32) * 32`` px): the lesion
    probabilities and, for a model with the lesion-present head, the image-level probability."""

    def forward_outputs(model, x, tta=False, amp=True, channels_last=True):
        size = x.shape[-1]
        probs, presents = [], []
        for scale in scales:
            side = max(32, round(size * scale / 32) * 32)
            xs = x if side == size else F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
            prob, present = single_scale(model, xs, tta=tta, amp=amp, channels_last=channels_last)
            if side != size:
                prob = F.interpolate(prob, size=(size, size), mode="bilinear", align_corners=False)
            probs.append(prob)
            if present is not None:
                presents.append(present)
        return torch.stack(probs).mean(0), torch.stack(presents).mean(0) if presents else None

    return forward_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="the prepared dataset (mosl prepare)")
    parser.add_argument("runs", nargs="+", help="fine-tune run folders (or weight files)")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        try:
            for scales in SCALE_SETS:
                inference.forward_outputs = multi_scale(scales)
                dice = []
                for run in args.runs:
                    cfg = EvaluateConfig(model=run, data=args.data, split=args.split, out=out, device="cpu")
                    dice.append(run_evaluate(cfg).metrics["lesion"]["dice"]["mean"])
                values = " / ".join(f"{d:.3f}" for d in dice)
                print(f"scales {scales}: lesion Dice {values}, mean {sum(dice) / len(dice):.3f}", flush=True)
        finally:
            inference.forward_outputs = single_scale


if __name__ == "__main__":
    main()
