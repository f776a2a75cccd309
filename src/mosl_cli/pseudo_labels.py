"""Self-training for ``mosl finetune --teacher``: a trained segmenter draws masks for the train scans
that the run does not take labels from, and the run trains on them beside its labelled scans.

The teacher's masks are what ``mosl predict`` would write for those scans: mirrored TTA, its
lesion-present gate and its post-processing rule, at the stored grid. No label of an unlabelled scan is
read (neither its mask nor its class): scans the teacher leaves empty are dropped, as the recipe trains
on lesion scans only, or kept as normal scans with ``--empty-masks``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mosl_cli.data.store import Dataset
from mosl_cli.errors import MoslError
from mosl_cli.inference import load_ensemble


@dataclass
class PseudoLabels:
    """``indices``: dataset indices of the scans the teacher labelled and the run trains on;
    ``masks``: their uint8 0/1 masks ``[N, 1, H, W]`` at the stored grid (row k belongs to
    ``indices[k]``); ``dropped``: the unlabelled scans left out because the teacher drew nothing."""

    indices: list[int]
    masks: torch.Tensor
    dropped: int

    def describe(self) -> dict[str, int]:
        return {"pseudo_labelled": len(self.indices), "pseudo_dropped_empty": self.dropped}


def unlabelled_pool(ds: Dataset, labelled: list[int]) -> list[int]:
    """Train-split indices outside ``labelled``: the scans the teacher labels."""
    taken = set(labelled)
    return [i for i in ds.indices("train") if i not in taken]


@torch.inference_mode()
def teacher_masks(
    teacher: str, ds: Dataset, idx: list[int], device: torch.device, keep_empty: bool = False, batch: int = 32
) -> PseudoLabels:
    """The teacher's masks of ``ds.images[idx]`` (uint8 ``[N, C, H, W]``): TTA probabilities > 0.5,
    gated and post-processed as the teacher's weight file says; empty ones dropped unless ``keep_empty``."""
    ensemble = load_ensemble(teacher, device)
    if ensemble.in_channels != ds.channels:
        raise MoslError(
            f"--teacher {teacher}: made for {ensemble.in_channels}-channel images but {ds.path} has "
            f"{ds.channels}; pass a teacher trained on this kind of data"
        )
    rule = ensemble.postprocess()
    masks = torch.zeros((len(idx), 1, *ds.images.shape[-2:]), dtype=torch.uint8)
    for start in range(0, len(idx), batch):
        prob = ensemble.probabilities(ds.images[torch.tensor(idx[start : start + batch])].to(device), tta=True)
        masks[start : start + batch] = rule(prob > 0.5).cpu()
    keep = (masks.flatten(1) > 0).any(dim=1) | keep_empty  # bool: uint8.any() stays uint8
    kept = [i for i, k in zip(idx, keep.tolist(), strict=True) if k]
    return PseudoLabels(kept, masks[keep], len(idx) - len(kept))
