"""The Lovász hinge: a convex surrogate of each image's Jaccard loss (Berman et al., CVPR 2018).

The per-case Dice and IoU that ``mosl evaluate`` reports are per-image overlap scores; the Lovász
hinge is the tight convex extension of ``1 - IoU`` of one image, applied to the hinge errors
``1 - logit * sign`` sorted in decreasing order. ``mosl finetune --dice lovasz`` uses it in place of the
soft Dice term.
"""

from __future__ import annotations

import torch


def lovasz_hinge(logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor | None = None) -> torch.Tensor:
    """The Lovász hinge of each image.

    Args:
        logits: float ``[B, 1, H, W]`` mask logits.
        target: float ``[B, 1, H, W]``, 0/1.
        labelled: bool ``[B, 1, H, W]``, the pixels that count (default: all); the others add nothing.

    Returns:
        float32 ``[B]``: per image, the dot product of its sorted positive hinge errors with the
        increments of the Jaccard loss along that order (0 where every pixel is right by a margin of 1).
    """
    x = logits.float().flatten(1)
    y = target.float().flatten(1)
    errors = 1.0 - x * (2.0 * y - 1.0)
    if labelled is not None:
        keep = labelled.flatten(1)
        # error -1: relu → 0, and every pixel sorted after it has a non-positive error too, so adds nothing
        errors = torch.where(keep, errors, torch.full_like(errors, -1.0))
        y = y * keep
    errors, order = errors.sort(dim=1, descending=True)
    y = y.gather(1, order)
    positives = y.sum(dim=1, keepdim=True)
    intersection = positives - y.cumsum(dim=1)
    union = positives + (1.0 - y).cumsum(dim=1)
    jaccard = 1.0 - intersection / union  # [B, N], the Jaccard loss of the first k pixels predicted positive
    increments = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
    return (errors.relu() * increments.detach()).sum(dim=1)
