"""Semi-supervised fine-tuning, ``mosl finetune --semi fixmatch``: the train scans the run has no label
for are learnt from online, by weak-to-strong consistency (FixMatch, Sohn et al. 2020, in the form
UniMatch applies to segmentation, Yang et al. 2023).

Each step, beside the labelled batch, a batch of unlabelled scans gets the recipe's geometric
augmentation (the weak view). The model's own prediction on it, without gradient, labels each pixel
it is sure of (probability ≥ ``threshold`` or ≤ 1 − ``threshold``) on the scans where it draws a
lesion (the recipe trains on lesion scans; ``--empty-masks`` counts every scan). The same views then get strong
intensity perturbations and CutMix (a box of another scan of the batch pasted in, its pseudo-labels
with it), and the model learns the pseudo-labels there, :func:`consistency_loss` weighted by
``--semi-weight`` (ramped up linearly over the first ``RAMP_UP`` of the steps, while the model's own
masks are still poor).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mosl_cli.augment import WeakStrongViews, cutmix
from mosl_cli.device import memory_format
from mosl_cli.models import split_outputs
from mosl_cli.train import autocast

SEMI_METHODS: tuple[str, ...] = ("none", "fixmatch")
RAMP_UP = 0.1  # fraction of the steps over which the consistency weight grows from 0 to --semi-weight


@dataclass
class Unlabelled:
    """The unlabelled half of a ``--semi fixmatch`` step: uint8 scans ``[B, C, H, W]``
    on the device, the bare model that labels their weak views, the view maker, and the consistency
    term's weight at this step."""

    images: Tensor
    model: nn.Module
    views: WeakStrongViews
    weight: float


def pseudo_targets(prob: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """``prob`` float ``[B, 1, H, W]`` → the pseudo-label (float 0/1, ``prob ≥ 0.5``) and where it is
    sure (bool: ``prob ≥ threshold`` or ``prob ≤ 1 − threshold``)."""
    return (prob >= 0.5).float(), (prob >= threshold) | (prob <= 1.0 - threshold)


def consistency_loss(logits: Tensor, target: Tensor, sure: Tensor) -> Tensor:
    """BCE + soft Dice of ``logits`` against ``target`` (float ``[B, 1, H, W]``) on the ``sure`` pixels
    only (bool, same shape). BCE is summed over the sure pixels and divided by all pixels, as UniMatch
    does, so a batch with few sure pixels weighs little; the Dice pools the batch's sure pixels (an
    unlabelled scan may show no lesion, where a per-image Dice has no meaning). Returns a 0-dim tensor."""
    weight = sure.to(logits.dtype)
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / logits.numel()
    prob, target = torch.sigmoid(logits) * weight, target * weight
    dice = (2 * (prob * target).sum() + 1.0) / (prob.sum() + target.sum() + 1.0)
    return bce + 1 - dice


def ramped_weight(weight: float, step: int, total_steps: int) -> float:
    """``weight`` × min(1, step / (``RAMP_UP`` × total_steps)): the consistency term's weight at ``step``."""
    ramp = max(1.0, RAMP_UP * total_steps)
    return weight * min(1.0, step / ramp)


@torch.no_grad()
def strong_batch(
    model: nn.Module,
    views: WeakStrongViews,
    unlabelled: Tensor,
    threshold: float,
    amp: bool,
    channels_last: bool,
    keep_empty: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """The unlabelled half of a step: uint8 ``[B, C, S, S]`` → the strong views after CutMix (normalised
    float32 ``[B, C, size, size]``), their pseudo-labels (float 0/1 ``[B, 1, size, size]``) and where
    those are sure (bool, same shape), from ``model``'s prediction on the weak views (``model``: the bare
    segmentation model, not deep supervision's wrapper; its train/eval mode as is). A scan on which the
    model draws no lesion has no sure pixel (it would teach "no lesion" on the lesions the model still
    misses), unless ``keep_empty`` (``--empty-masks``: the recipe learns from normal scans too)."""
    weak, strong = views(unlabelled)
    weak = weak.contiguous(memory_format=memory_format(weak.device, channels_last))
    with autocast(weak.device, amp):
        logits, _ = split_outputs(model(weak))
    target, sure = pseudo_targets(torch.sigmoid(logits.float()), threshold)
    if not keep_empty:  # as the recipe: learn from scans with a lesion only, those the model draws one on
        sure &= target.flatten(1).amax(dim=1).bool()[:, None, None, None]
    return cutmix(strong, target, sure)
