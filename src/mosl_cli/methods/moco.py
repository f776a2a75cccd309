"""MoCo v2 (Chen, Fan, Girshick, He 2020, "Improved Baselines with Momentum Contrastive Learning",
arXiv 2003.04297; on MoCo, He et al. 2020, arXiv 1911.05722): a query encoder trained by InfoNCE
against a momentum-updated key encoder and a queue of past keys as negatives.

Differences from the reference code, on purpose:

- The loss is symmetrised over the two views, ``(L(q1, k2) + L(q2, k1)) / 2`` (as in MoCo v3,
  Chen, Xie, He 2021, §3); the queue receives the keys of view 2, gathered from every rank, as the
  reference code enqueues its one set of keys.
- No shuffling BN. MoCo shuffles the key batch across GPUs so that per-GPU BN statistics cannot leak
  which key matches which query; mosl's DDP runs use SyncBatchNorm, whose statistics are those of the
  whole global batch, which is what MoCo v3 relies on instead. In a single process BN statistics
  are those of the local batch, as in lightly's MoCo.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mosl_cli.errors import MoslError
from mosl_cli.methods.backbone import PooledBackbone
from mosl_cli.methods.base import MethodOutput, SSLMethod
from mosl_cli.methods.distributed import gather_no_grad
from mosl_cli.methods.heads import build_head, moco_v2_projector


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, m: float) -> None:
    """EMA of parameters (MoCo Eq. 2): ``θ_target ← m·θ_target + (1 − m)·θ_online``; buffers untouched."""
    targets = [p.data for p in target.parameters()]
    onlines = [p.data for p in online.parameters()]
    if len(targets) != len(onlines):
        raise ValueError("momentum_update: online and target modules differ in structure")
    torch._foreach_lerp_(targets, onlines, 1.0 - m)  # noqa: SLF001 - torch's public fused EMA primitive


@torch.no_grad()
def copy_params(online: nn.Module, target: nn.Module) -> None:
    """Make ``target`` an exact copy of ``online`` (parameters and buffers) that receives no gradient."""
    target.load_state_dict(online.state_dict())
    target.requires_grad_(False)


class KeyQueue(nn.Module):
    """A ring buffer of ``size`` L2-normalised keys ``[size, dim]`` float32, initialised at random.

    Buffers (saved with the state dict, so ``--resume`` keeps the negatives): ``keys`` and ``ptr``
    (the slot the next key is written to).
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``[n, dim]`` keys at ``ptr`` (wrapping around), replacing the oldest; advance ``ptr``."""
        size = self.keys.shape[0]
        keys = keys.detach()[-size:]
        n = keys.shape[0]
        slots = (self.ptr + torch.arange(n, device=self.keys.device)) % size
        self.keys[slots] = keys.to(self.keys.dtype)
        self.ptr.copy_((self.ptr + n) % size)


def infonce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE (He et al. 2020, Eq. 1), float32.

    ``q``, ``k``: ``[B, D]`` L2-normalised queries and their positive keys; ``queue``: ``[K, D]``
    L2-normalised negatives. Logits ``[B, 1 + K]`` (positive first) / ``temperature``, cross-entropy
    with target 0, mean over the batch.
    """
    q, k, queue = q.float(), k.float(), queue.float()
    positive = (q * k).sum(dim=1, keepdim=True)
    negative = q @ queue.T
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


class MoCo(SSLMethod):
    """MoCo v2: backbone → MLP head (Linear-ReLU-Linear) queries; a momentum copy gives the keys.

    Defaults (MoCo v2 paper §2–3 and its official code): ``base_lr`` 0.03 per 256 images (SGD),
    ``weight_decay`` 1e-4, optimiser momentum 0.9, ``temperature`` 0.2, key-encoder ``momentum``
    0.999 (MoCo §3.2), ``queue_size`` 65536 (pass a smaller queue for a small dataset: the queue
    should not exceed the number of images), head hidden width = ``feature_dim`` (2048 for ResNet-50),
    ``proj_dim`` 128.
    """

    name: ClassVar[str] = "moco"
    defaults: ClassVar[dict[str, Any]] = {
        "base_lr": 0.03,
        "weight_decay": 1e-4,
        "sgd_momentum": 0.9,
        "temperature": 0.2,
        "momentum": 0.999,
        "queue_size": 65536,
        "proj_hidden": None,  # None: the backbone's feature_dim
        "proj_dim": 128,
    }

    def __init__(self, backbone: PooledBackbone, **hparams: Any) -> None:
        super().__init__(backbone, **hparams)
        hp = self.hparams
        hp["proj_hidden"] = hp["proj_hidden"] or backbone.feature_dim
        if not 0.0 <= float(hp["momentum"]) <= 1.0:
            raise MoslError(f"--momentum {hp['momentum']} is outside [0, 1]; MoCo's default is 0.999")
        if int(hp["queue_size"]) < 1:
            raise MoslError(f"--queue-size {hp['queue_size']} must be at least 1; MoCo's default is 65536")
        self.projector = build_head(moco_v2_projector(backbone.feature_dim, hp["proj_hidden"], hp["proj_dim"]))
        self.key_backbone = copy.deepcopy(backbone)
        self.key_projector = copy.deepcopy(self.projector)
        copy_params(self.backbone, self.key_backbone)
        copy_params(self.projector, self.key_projector)
        self.queue = KeyQueue(int(hp["queue_size"]), int(hp["proj_dim"]))

    def _query(self, x: Tensor) -> Tensor:
        return self.projector(self.backbone(x))

    @torch.no_grad()
    def _key(self, x: Tensor) -> Tensor:
        return F.normalize(self.key_projector(self.key_backbone(x)).float(), dim=1)

    def contrast(self, view1: Tensor, view2: Tensor) -> MethodOutput:
        z1, z2 = self._query(view1), self._query(view2)
        q1, q2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
        k1, k2 = self._key(view1), self._key(view2)
        negatives = self.queue.keys.clone()  # the enqueue below must not alter what backward reads
        temperature = float(self.hparams["temperature"])
        loss = 0.5 * (infonce(q1, k2, negatives, temperature) + infonce(q2, k1, negatives, temperature))
        if self.training:
            self.queue.enqueue(gather_no_grad(k2))
        return MethodOutput(loss, z1.detach())

    def after_step(self) -> None:
        """Momentum update of the key encoder from the (just stepped) query encoder."""
        m = float(self.hparams["momentum"])
        momentum_update(self.backbone, self.key_backbone, m)
        momentum_update(self.projector, self.key_projector, m)
