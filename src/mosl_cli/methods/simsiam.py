"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning", arXiv 2011.10566):
no negatives, no momentum encoder; a predictor on one branch and a stop-gradient on the other."""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from mosl_cli.methods.backbone import PooledBackbone
from mosl_cli.methods.base import MethodOutput, SSLMethod
from mosl_cli.methods.heads import build_head, simsiam_predictor, simsiam_projector


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's D(p, z) (Eq. 1 with the stop-gradient of Eq. 3): ``−cos(p, stopgrad(z))``, mean over the batch.

    ``p``, ``z``: ``[B, D]``; float32 result; no gradient flows into ``z``.
    """
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()


def simsiam_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """The symmetrised loss (Eq. 4): ``D(p1, z2)/2 + D(p2, z1)/2``; in ``[-1, 1]``, −1 when aligned."""
    return 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)


class SimSiam(SSLMethod):
    """Backbone → projector f (3 × Linear-BN, ReLU between, last BN without affine) → predictor h.

    Defaults (SimSiam paper §4 "Baseline settings"): ``base_lr`` 0.05 per 256 images (SGD,
    cosine decay), ``weight_decay`` 1e-4, optimiser momentum 0.9; the predictor keeps a fixed
    learning rate (§4.2, Table 1: no decay for h is better), flagged ``fix_lr`` in
    :meth:`param_groups`. Widths for ResNet-50 are projector 2048 → 2048 → 2048 and predictor
    bottleneck 2048 → 512 → 2048; here the projector width is ``feature_dim`` (512 for resnet18)
    and the predictor's hidden width a quarter of ``proj_dim``.
    """

    name: ClassVar[str] = "simsiam"
    defaults: ClassVar[dict[str, Any]] = {
        "base_lr": 0.05,
        "weight_decay": 1e-4,
        "sgd_momentum": 0.9,
        "proj_hidden": None,  # None: the backbone's feature_dim
        "proj_dim": None,  # None: the backbone's feature_dim
        "pred_hidden": None,  # None: proj_dim // 4
    }

    def __init__(self, backbone: PooledBackbone, **hparams: Any) -> None:
        super().__init__(backbone, **hparams)
        hp = self.hparams
        hp["proj_hidden"] = hp["proj_hidden"] or backbone.feature_dim
        hp["proj_dim"] = hp["proj_dim"] or backbone.feature_dim
        hp["pred_hidden"] = hp["pred_hidden"] or max(1, hp["proj_dim"] // 4)
        self.projector = build_head(simsiam_projector(backbone.feature_dim, hp["proj_hidden"], hp["proj_dim"]))
        self.predictor = build_head(simsiam_predictor(hp["proj_dim"], hp["pred_hidden"]))

    def contrast(self, view1: Tensor, view2: Tensor) -> MethodOutput:
        z1 = self.projector(self.backbone(view1))
        z2 = self.projector(self.backbone(view2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return MethodOutput(simsiam_loss(p1, p2, z1, z2), z1.detach())

    def param_groups(self) -> list[dict[str, Any]]:
        """Every trained parameter but the predictor's in one group; the predictor in a ``{"fix_lr": True}`` group."""
        encoder = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("predictor.")]
        return [{"params": encoder}, {"params": list(self.predictor.parameters()), "fix_lr": True}]
