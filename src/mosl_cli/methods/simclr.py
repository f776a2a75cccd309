"""SimCLR (Chen, Kornblith, Norouzi, Hinton 2020, "A Simple Framework for Contrastive Learning of
Visual Representations", arXiv 2002.05709): an MLP projector and the NT-Xent loss over both views,
with every other image of the (global) batch as a negative."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from mosl_cli.methods.backbone import PooledBackbone
from mosl_cli.methods.base import MethodOutput, SSLMethod
from mosl_cli.methods.distributed import gather_with_grad, rank
from mosl_cli.methods.heads import build_head, simclr_projector


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent (SimCLR §2.1, Eq. 1) for this rank's ``[B, D]`` projections of views 1 and 2.

    Each of the ``2B`` local anchors has its other view as the positive and the other ``2N - 2``
    projections of the global batch (``N = world_size * B``, gathered with gradients) as negatives;
    the loss is the mean over the local anchors, computed in float32. On one process this is the
    plain NT-Xent; on ``W`` ranks, DDP's gradient average reproduces the gradient of the NT-Xent of
    the concatenated batch.
    """
    local_b = z1.shape[0]
    z1 = F.normalize(z1.float(), dim=1)
    z2 = F.normalize(z2.float(), dim=1)
    all1, all2 = gather_with_grad(z1), gather_with_grad(z2)
    n = all1.shape[0]
    anchors = torch.cat([z1, z2], dim=0)  # [2B, D]
    keys = torch.cat([all1, all2], dim=0)  # [2N, D]: view-1 block, then view-2 block
    local = torch.arange(local_b, device=z1.device) + rank() * local_b  # global index in a block
    self_index = torch.cat([local, local + n])
    positive = torch.cat([local + n, local])
    is_self = F.one_hot(self_index, 2 * n).bool()  # [2B, 2N]: an anchor is not its own negative
    logits = (anchors @ keys.T / temperature).masked_fill(is_self, float("-inf"))
    return F.cross_entropy(logits, positive)


class SimCLR(SSLMethod):
    """Backbone → projector g (Linear-BN-ReLU-Linear) → NT-Xent over both views.

    Defaults (SimCLR paper, §2.3 "Default setting" and App. B.1; official code's flags):
    ``base_lr`` 0.3 per 256 images (4.8 = 0.3 × 4096/256, LARS), ``weight_decay`` 1e-6, optimiser
    momentum 0.9, ``temperature`` 0.2 (between Table 5's 0.1, best with batches of thousands, and the
    CIFAR-10 runs' 0.5, App. B.9; the value studies/pretraining/ uses), projector hidden width =
    ``feature_dim`` (2048 for ResNet-50) and output ``proj_dim`` 128.
    """

    name: ClassVar[str] = "simclr"
    defaults: ClassVar[dict[str, Any]] = {
        "base_lr": 0.3,
        "weight_decay": 1e-6,
        "sgd_momentum": 0.9,
        "temperature": 0.2,
        "proj_hidden": None,  # None: the backbone's feature_dim
        "proj_dim": 128,
    }

    def __init__(self, backbone: PooledBackbone, **hparams: Any) -> None:
        super().__init__(backbone, **hparams)
        hp = self.hparams
        hp["proj_hidden"] = hp["proj_hidden"] or backbone.feature_dim
        self.projector = build_head(simclr_projector(backbone.feature_dim, hp["proj_hidden"], hp["proj_dim"]))

    def contrast(self, view1: Tensor, view2: Tensor) -> MethodOutput:
        z1 = self.projector(self.backbone(view1))
        z2 = self.projector(self.backbone(view2))
        loss = nt_xent(z1, z2, float(self.hparams["temperature"]))
        return MethodOutput(loss, z1.detach())
