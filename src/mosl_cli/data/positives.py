"""Positive pairs from one group (``mosl pretrain --positives group``), as USCL pairs frames of one video.

``prepare`` gives every sample a ``group``: the frames of one video, the scans of one patient (its
``--group-pattern``) and near-duplicates share one. :class:`GroupPartners` draws, for each sampled
image, another member of its group (a different frame or scan whenever the group has two or more);
an image alone in its group is its own partner, i.e. two views of one scan as with ``views``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mosl_cli.errors import MoslError

POSITIVES = ("views", "group")


def check_positives(positives: str, dense_weight: float) -> None:
    """One-line :class:`MoslError` for an unknown ``--positives`` or one the pixel loss cannot use."""
    if positives not in POSITIVES:
        raise MoslError(
            f"--positives {positives!r}: use views (two views of one scan) or group (two scans of one group)"
        )
    if positives == "group" and dense_weight > 0:
        raise MoslError("--positives group pairs different images, which share no pixels: use --dense-weight 0 with it")


class GroupPartners:
    """Partner lookup for ``N`` images from their group labels (any hashable, one per image)."""

    def __init__(self, groups: list[str], device: torch.device | str = "cpu") -> None:
        ids: dict[str, int] = {}
        g = torch.tensor([ids.setdefault(x, len(ids)) for x in groups], dtype=torch.long)
        self.members = torch.argsort(g, stable=True)  # images sorted by group
        count = torch.bincount(g, minlength=len(ids))
        start = torch.cumsum(count, 0) - count
        pos = torch.empty_like(g)
        pos[self.members] = torch.arange(len(g)) - start[g[self.members]]  # rank of each image in its group
        self.start, self.count, self.pos = start[g].to(device), count[g].to(device), pos.to(device)
        self.members = self.members.to(device)
        self.groups = len(ids)

    def __call__(self, idx: Tensor) -> Tensor:
        """A random other member of each ``idx``'s group (itself when alone), drawn from torch's RNG."""
        count = self.count[idx]
        step = 1 + (torch.rand(idx.shape, device=idx.device) * (count - 1)).long()  # 1 .. count-1
        return self.members[self.start[idx] + (self.pos[idx] + step) % count]
