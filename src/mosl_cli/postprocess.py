"""Post-processing of thresholded masks, chosen on the val split as nnU-Net chooses its own.

A :class:`PostProcess` rule keeps only the largest connected lesion (``largest``) and empties a
mask whose area is below ``min_area`` (a fraction of the image; the "no lesion here" decision that
keeps normal scans empty). ``mosl finetune`` picks the rule that maximises mean val Dice over all
val scans (normal ones included) without lowering it on the scans with a lesion
(:func:`choose_postprocess`) and stores it in the weight file;
``evaluate`` and ``predict`` apply it unless ``--no-postprocess``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from mosl_cli.metrics import confusion, dice

T = TypeVar("T")

# Candidate minimum lesion areas, as fractions of the image (0.001 of a 256×256 grid is 66 pixels).
MIN_AREAS: tuple[float, ...] = (0.0, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016)
# How much mean Dice on the val scans with a lesion a rule may cost (a rule must not buy empty normal
# scans with missed lesions).
LESION_TOLERANCE = 0.005
# Candidate thresholds of the lesion-present head (None: no gate), and what the gate may cost the val
# scans with a lesion: about one of ~60 such scans wrongly called lesion-free.
GATES: tuple[float | None, ...] = (None, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
GATE_LESION_TOLERANCE = 0.01


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, 1, H, W]``: only the largest 8-connected component of each mask (empty stays empty).

    Labelled with ``scipy.ndimage.label`` on the host (exact, linear time); the result returns to
    ``mask``'s device.
    """
    from scipy import ndimage

    host = mask.bool().cpu().numpy()
    out = np.zeros_like(host)
    structure = np.ones((3, 3), dtype=bool)
    for i in range(host.shape[0]):
        labels, count = ndimage.label(host[i, 0], structure=structure)
        if count:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            out[i, 0] = labels == sizes.argmax()
    return torch.from_numpy(out).to(mask.device)


@dataclass(frozen=True)
class PostProcess:
    """Keep the largest lesion (``largest``); empty masks smaller than ``min_area`` × image area."""

    largest: bool = False
    min_area: float = 0.0

    def __call__(self, mask: torch.Tensor) -> torch.Tensor:
        """Bool ``[B, 1, H, W]`` → bool ``[B, 1, H, W]``."""
        mask = largest_component(mask) if self.largest else mask.bool()
        return self.drop_small(mask)

    def drop_small(self, mask: torch.Tensor) -> torch.Tensor:
        """Empty the masks (bool ``[B, 1, H, W]``) whose area is below ``min_area`` of the image."""
        if self.min_area <= 0:
            return mask
        area = mask.flatten(1).float().mean(dim=1)
        return mask & (area >= self.min_area).view(-1, 1, 1, 1)

    @property
    def is_identity(self) -> bool:
        return not self.largest and self.min_area == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PostProcess:
        """The rule stored in a weight file's metadata (none stored: the identity)."""
        data = data or {}
        return cls(largest=bool(data.get("largest", False)), min_area=float(data.get("min_area", 0.0)))


def choose_protected(
    candidates: Iterable[tuple[str, T, torch.Tensor]], target: torch.Tensor, lesion_tolerance: float
) -> tuple[T, dict[str, float]]:
    """The candidate whose bool mask ``[N, 1, H, W]`` has the highest mean Dice against ``target`` over
    all cases, among those that cost the cases with a lesion (non-empty target) at most
    ``lesion_tolerance`` of the first candidate's mean lesion Dice. ``candidates``: ``(name, choice,
    mask)``, the first being the "do nothing" choice; a later one wins only when strictly better, so
    ties go to the earlier (simpler) choice. Returns the choice and every candidate's mean Dice (all
    cases under ``name``, the cases with a lesion under ``lesion:name``)."""
    lesion = target.flatten(1).any(dim=1)
    scores: dict[str, float] = {}
    best: T | None = None
    best_score, floor = -1.0, None
    for name, choice, mask in candidates:
        per_case = dice(*confusion(mask, target)[:3])
        score = float(per_case.mean())
        lesion_score = float(per_case[lesion].mean()) if bool(lesion.any()) else 1.0
        scores[name], scores[f"lesion:{name}"] = score, lesion_score
        if floor is None:
            best, floor = choice, lesion_score - lesion_tolerance
        if lesion_score >= floor and score > best_score + 1e-9:
            best, best_score = choice, score
    return best, scores  # type: ignore[return-value]  # candidates is never empty


def choose_postprocess(
    pred: torch.Tensor, target: torch.Tensor, lesion_tolerance: float = LESION_TOLERANCE
) -> tuple[PostProcess, dict[str, float]]:
    """The post-processing rule for ``pred`` (bool ``[N, 1, H, W]``) chosen by :func:`choose_protected`:
    normal scans are made empty only where lesions keep their masks. Candidates: ``largest`` off/on ×
    :data:`MIN_AREAS`, the identity first. Returns the rule and every candidate's mean Dice."""
    pred = pred.bool()

    def candidates() -> Iterator[tuple[str, PostProcess, torch.Tensor]]:
        for largest, base in ((False, pred), (True, largest_component(pred))):
            for min_area in MIN_AREAS:
                rule = PostProcess(largest, min_area)
                yield f"largest={largest},min_area={min_area}", rule, rule.drop_small(base)

    return choose_protected(candidates(), target, lesion_tolerance)


def choose_gate(
    prob: torch.Tensor, present: torch.Tensor, target: torch.Tensor, lesion_tolerance: float = GATE_LESION_TOLERANCE
) -> tuple[float | None, dict[str, float]]:
    """The threshold of the lesion-present head (an image whose probability ``present`` ``[N, 1]`` is
    below it gets an empty mask) for the masks ``prob > 0.5`` (``prob`` float ``[N, 1, H, W]``), chosen
    by :func:`choose_protected` among :data:`GATES` (None, no gate, first). Returns the gate and every
    candidate's mean Dice."""
    pred = prob > 0.5
    candidates = (
        (f"gate={gate}", gate, pred if gate is None else pred & (present >= gate)[:, :, None, None]) for gate in GATES
    )
    return choose_protected(candidates, target, lesion_tolerance)


def combine(rules: list[PostProcess]) -> PostProcess:
    """One rule for an ensemble of models: ``largest`` by majority, the median ``min_area``."""
    if not rules:
        return PostProcess()
    areas = sorted(r.min_area for r in rules)
    return PostProcess(largest=2 * sum(r.largest for r in rules) > len(rules), min_area=areas[(len(areas) - 1) // 2])
