"""A pixel-level contrastive loss for the decoder, added to any method's image-level loss.

The image-level methods pool the decoder's output map to one vector, so the decoder learns little
about *where* things are. This loss follows VADeR (Pinheiro et al. 2020, "Unsupervised Learning of
Dense Visual Representations", arXiv 2011.05499): points seen in both views (the overlap of their
crops, found from the augmentation's geometry, :class:`~mosl_cli.augment.Correspondence`) are sampled from the decoder
output map of each view; a small per-pixel projector maps them to embeddings, and InfoNCE makes each
point's two embeddings match against every other sampled point of the batch (other points of the same
image included, so the features must tell places in one scan apart, which is what a segmentation
head needs).

``mosl pretrain --scope encoder-decoder --dense-weight W`` adds ``W`` times this loss; the method's
own loss and embedding are unchanged. Computed per process (no gather across ranks): DDP averages
the gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mosl_cli.augment import Correspondence
from mosl_cli.errors import UsageError
from mosl_cli.methods.heads import Block, build_head

DENSE_TEMPERATURE = 0.2  # as SimCLR's and MoCo's defaults here
DENSE_HIDDEN = 128
DENSE_DIM = 64
DENSE_POINTS = 16  # points sampled per image and step


def check_dense_weight(weight: float, scope: str, *, loss_built: bool = False) -> None:
    """``--dense-weight`` must be ≥ 0, and non-zero only with ``--scope encoder-decoder``; when the loss is
    being built (``loss_built``) the decoder map it reads is needed whatever the weight."""
    if weight < 0:
        raise UsageError(f"--dense-weight {weight} is negative; use 0 (off) or a positive weight such as 1")
    if (weight or loss_built) and scope != "encoder-decoder":
        raise UsageError("--dense-weight needs --scope encoder-decoder: the pixel-level loss trains the decoder")


def sample_features(feature_map: Tensor, grid: Tensor) -> Tensor:
    """Bilinear features of ``feature_map`` ``[B, C, H, W]`` at ``grid`` ``[B, K, 2]`` → ``[B·K, C]`` float32."""
    sampled = F.grid_sample(feature_map.float(), grid[:, :, None, :].float(), mode="bilinear", align_corners=True)
    return sampled[..., 0].permute(0, 2, 1).reshape(-1, feature_map.shape[1])  # [B, C, K, 1] → [B·K, C]


def point_infonce(z1: Tensor, z2: Tensor, valid: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE over ``N`` matched points: ``z1[i]`` ↔ ``z2[i]`` positive, every other valid
    point negative. ``z*``: ``[N, D]`` L2-normalised float32; ``valid``: bool ``[N]``. Mean over valid
    anchors (0 when none is valid), without a host sync."""
    pair_ok = valid[:, None] & valid[None, :]
    logits = (z1 @ z2.T / temperature).masked_fill(~pair_ok, -1e4)  # invalid points out (exp → 0, finite)
    target = torch.arange(z1.shape[0], device=z1.device)
    weight = valid.float()
    per_point = F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.T, target, reduction="none")
    return (per_point * weight).sum() / (2 * weight.sum().clamp(min=1.0))


class PixelContrast(nn.Module):
    """Per-pixel projector (Linear-BN-ReLU-Linear on each sampled point's ``C`` channels) and the
    point-level InfoNCE between two views' decoder maps ``[B, C, H, W]`` at a :class:`Correspondence`."""

    def __init__(
        self, channels: int, hidden: int = DENSE_HIDDEN, dim: int = DENSE_DIM, temperature: float = DENSE_TEMPERATURE
    ) -> None:
        super().__init__()
        self.projector = build_head([Block(channels, hidden, True, True), Block(hidden, dim, False, False)])
        self.temperature = temperature

    def forward(self, map1: Tensor, map2: Tensor, points: Correspondence) -> Tensor:
        k = points.grid1.shape[1]
        z1 = F.normalize(self.projector(sample_features(map1, points.grid1)).float(), dim=1)
        z2 = F.normalize(self.projector(sample_features(map2, points.grid2)).float(), dim=1)
        valid = points.valid.repeat_interleave(k)
        return point_infonce(z1, z2, valid, self.temperature)
