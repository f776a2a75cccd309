"""Self-training for ``mosl finetune --teacher``: a trained segmenter draws masks for the train scans
that the run does not take labels from, and the run trains on them beside its labelled scans.

The teacher's masks are what ``mosl predict`` would write for those scans: mirrored TTA, its
lesion-present gate and its post-processing rule, at the stored grid. No label of an unlabelled scan is
read (neither its mask nor its class): scans the teacher leaves empty are dropped, as the recipe trains
on lesion scans only, or kept as normal scans with ``--empty-masks``. ``--teacher-keep Q`` keeps only
the fraction Q of the teacher's lesion masks it is surest of (the highest mean probability inside the
mask), as confidence-filtered self-training does: its unsure masks are the worst ones and most of the
lesions it draws on normal scans. ``--teacher-sure P`` marks the pixels of the kept masks whose
probability lies between 1 − P and P as :data:`~mosl_cli.augment.UNSURE_PIXEL`: the student's loss leaves them out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mosl_cli.augment import UNSURE_PIXEL
from mosl_cli.data.store import Dataset
from mosl_cli.errors import MoslError
from mosl_cli.inference import load_ensemble


@dataclass
class PseudoLabels:
    """``indices``: dataset indices of the scans the teacher labelled and the run trains on;
    ``masks``: their uint8 masks ``[N, 1, H, W]`` at the stored grid, 0/1 or
    :data:`~mosl_cli.augment.UNSURE_PIXEL` (row k belongs to ``indices[k]``); ``dropped``: the
    unlabelled scans left out because the teacher drew nothing;
    ``unsure``: those left out by ``keep_fraction`` (:func:`teacher_masks`)."""

    indices: list[int]
    masks: torch.Tensor
    dropped: int
    unsure: int = 0

    def describe(self) -> dict[str, int]:
        return {
            "pseudo_labelled": len(self.indices),
            "pseudo_dropped_empty": self.dropped,
            "pseudo_dropped_unsure": self.unsure,
        }


def unlabelled_pool(ds: Dataset, labelled: list[int]) -> list[int]:
    """Train-split indices outside ``labelled``: the scans the teacher labels."""
    taken = set(labelled)
    return [i for i in ds.indices("train") if i not in taken]


@torch.inference_mode()
def teacher_masks(
    teacher: str | Sequence[str],
    ds: Dataset,
    idx: list[int],
    device: torch.device,
    keep_empty: bool = False,
    keep_fraction: float = 1.0,
    sure: float = 0.5,
    batch: int = 32,
) -> PseudoLabels:
    """The teacher's masks of ``ds.images[idx]`` (uint8 ``[N, C, H, W]``): TTA probabilities > 0.5,
    gated and post-processed as the teacher's weight file says; empty ones dropped unless ``keep_empty``.
    Of the non-empty masks only the ``keep_fraction`` (rounded up) with the highest :func:`confidence`
    are kept. With ``sure`` > 0.5, the pixels of the same masks whose probability lies strictly between
    ``1 - sure`` and ``sure`` become :data:`~mosl_cli.augment.UNSURE_PIXEL`."""
    ensemble = load_ensemble(teacher, device)
    if ensemble.in_channels != ds.channels:
        raise MoslError(
            f"--teacher {teacher}: made for {ensemble.in_channels}-channel images but {ds.path} has "
            f"{ds.channels}; pass a teacher trained on this kind of data"
        )
    rule = ensemble.postprocess()
    masks = torch.zeros((len(idx), 1, *ds.images.shape[-2:]), dtype=torch.uint8)
    certainty = torch.zeros(len(idx))
    lesion = torch.zeros(len(idx), dtype=torch.bool)
    for start in range(0, len(idx), batch):
        prob = ensemble.probabilities(ds.images[torch.tensor(idx[start : start + batch])].to(device), tta=True)
        mask = rule(prob > 0.5)
        certainty[start : start + batch] = confidence(prob, mask).cpu()
        lesion[start : start + batch] = mask.flatten(1).any(dim=1).cpu()
        if sure > 0.5:
            mask = torch.where((prob > 1 - sure) & (prob < sure), UNSURE_PIXEL, mask.to(torch.uint8))
        masks[start : start + batch] = mask.cpu()
    confident = most_confident(certainty, lesion, keep_fraction)
    keep = confident | (~lesion & keep_empty)
    kept = [i for i, k in zip(idx, keep.tolist(), strict=True) if k]
    empty_dropped = 0 if keep_empty else int((~lesion).sum())
    return PseudoLabels(kept, masks[keep], empty_dropped, int((lesion & ~confident).sum()))


def confidence(prob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """float ``[B]``: the mean probability inside each mask (``prob`` float, ``mask`` bool ``[B, 1, H, W]``;
    0 for an empty mask)."""
    inside = (prob * mask).flatten(1).sum(dim=1)
    return inside / mask.flatten(1).sum(dim=1).clamp_min(1)


def most_confident(score: torch.Tensor, among: torch.Tensor, fraction: float) -> torch.Tensor:
    """bool ``[N]``: the ``ceil(fraction × among.sum())`` entries of ``among`` (bool ``[N]``) with the
    highest ``score`` (float ``[N]``; ties go to the earlier entry)."""
    count = math.ceil(fraction * int(among.sum()) - 1e-9)
    ranked = torch.argsort(torch.where(among, score, -math.inf), descending=True, stable=True)
    chosen = torch.zeros_like(among)
    chosen[ranked[:count]] = True
    return chosen & among
