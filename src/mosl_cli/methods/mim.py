"""Masked image modelling for a whole U-Net, after MAE (He et al. 2022, "Masked Autoencoders Are
Scalable Vision Learners", arXiv 2111.06377) and SparK (Tian et al. 2023, "Designing BERT for
Convolutional Networks: Sparse and Hierarchical Masked Modeling", arXiv 2301.03580).

Random square patches of the view are blanked (set to 0, the dataset mean after normalisation), the
encoder and the decoder run on what is left, and a 1×1 convolution on the decoder's output map
predicts the pixels; the loss is the squared error on the masked patches only, against targets
normalised per patch (MAE's ``norm_pix_loss``). Unlike SparK's sparse convolutions, the ConvNet here
sees the blanked patches as zeros (the dense baseline of SparK's Table 4). It trains the decoder, so
it needs ``--scope encoder-decoder``, and it reads one view of each scan (the first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from mosl_cli.errors import UsageError
from mosl_cli.methods.backbone import PooledBackbone
from mosl_cli.methods.base import MethodOutput, SSLMethod

if TYPE_CHECKING:
    from mosl_cli.config import PretrainConfig


def default_patch(size: int) -> int:
    """Patch side for a ``size``-pixel input: an 8 × 8 grid (16 px at 128 px), at least 4 px."""
    return max(4, size // 8)


def random_patch_mask(batch: int, grid: int, ratio: float, device: torch.device) -> Tensor:
    """float ``[B, grid, grid]``, 1 on exactly ``round(ratio·grid²)`` random patches of each image (at least 1)."""
    n = grid * grid
    k = min(n, max(1, round(ratio * n)))
    ranks = torch.rand(batch, n, device=device).argsort(dim=1).argsort(dim=1)  # a random permutation per image
    return (ranks < k).float().view(batch, grid, grid)


def patchify(x: Tensor, p: int) -> Tensor:
    """``[B, C, H, W]`` → ``[B, (H/p)·(W/p), C·p·p]``, patches in row-major order."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)


def masked_patch_loss(pred: Tensor, target: Tensor, mask: Tensor, p: int) -> Tensor:
    """MAE's loss: per-pixel squared error against per-patch normalised ``target``, averaged over the
    masked patches only. ``pred``, ``target``: ``[B, C, H, W]``; ``mask``: ``[B, H/p, W/p]`` (1 = masked)."""
    t = patchify(target.float(), p)
    t = (t - t.mean(dim=-1, keepdim=True)) / (t.var(dim=-1, keepdim=True) + 1e-6).sqrt()
    per_patch = (patchify(pred.float(), p) - t).pow(2).mean(dim=-1)  # [B, L]
    m = mask.flatten(1)
    return (per_patch * m).sum() / m.sum().clamp(min=1.0)


_NOT_FOR_MIM = (  # mim is the default method, so say how to pick a contrastive one
    "{option} does not apply to --method mim ({why}): add --method simclr, moco or simsiam"
)


def check_mim(scope: str, mask_ratio: float | None, patch_size: int | None, size: int | None = None) -> None:
    """One-line :class:`UsageError` for settings masked image modelling cannot run with."""
    if scope != "encoder-decoder":
        raise UsageError(
            "--method mim trains the decoder too: use --scope encoder-decoder, or --method simclr, moco or simsiam"
        )
    if mask_ratio is not None and not 0 < mask_ratio < 1:
        raise UsageError(f"--mask-ratio {mask_ratio} is outside (0, 1); e.g. 0.6")
    if patch_size is not None and (patch_size < 1 or (size is not None and size % patch_size)):
        raise UsageError(f"--patch-size {patch_size} must divide --size {size}; e.g. {default_patch(size or 128)}")


class MIM(SSLMethod):
    """U-Net on a masked view → 1×1 conv head on the decoder map → pixels; MSE on the masked patches.

    Defaults: ``mask_ratio`` 0.6 (SparK §4, its best ratio for ConvNets; MAE uses 0.75 for ViTs);
    ``patch_size`` ``None`` = :func:`default_patch` of the input (SparK masks at the encoder's
    32-pixel stride on 224 px, MAE uses 16 px patches). The papers optimise with LAMB (SparK) or
    AdamW (MAE); this loop's optimiser is SGD, so ``base_lr`` and ``weight_decay`` are SimSiam's SGD
    values, not the papers'.
    """

    name: ClassVar[str] = "mim"
    defaults: ClassVar[dict[str, Any]] = {
        "base_lr": 0.05,
        "weight_decay": 1e-4,
        "sgd_momentum": 0.9,
        "mask_ratio": 0.6,
        "patch_size": None,  # None: default_patch(input size)
    }

    @classmethod
    def check_config(cls, cfg: PretrainConfig) -> None:
        check_mim(cfg.scope, cfg.mask_ratio, cfg.patch_size, cfg.size)
        if cfg.dense_weight:
            raise UsageError(_NOT_FOR_MIM.format(option="--dense-weight", why="its loss is already per pixel"))
        if cfg.positives != "views":
            raise UsageError(_NOT_FOR_MIM.format(option="--positives group", why="it reconstructs one view"))

    def __init__(self, backbone: PooledBackbone, **hparams: Any) -> None:
        super().__init__(backbone, **hparams)
        check_mim(backbone.scope, self.hparams["mask_ratio"], self.hparams["patch_size"])
        channels = int(backbone.model.encoder._in_channels)  # noqa: SLF001 - smp's own attribute
        self.pixel_head = nn.Conv2d(backbone.decoder_dim, channels, kernel_size=1)

    def add_dense_loss(self, weight: float) -> None:
        raise UsageError(_NOT_FOR_MIM.format(option="--dense-weight", why="its loss is already per pixel"))

    def contrast(self, view1: Tensor, view2: Tensor) -> MethodOutput:
        """``view1`` ``[B, C, H, W]`` is masked and reconstructed; ``view2`` is not used. Embedding:
        the pooled deepest encoder map of the masked view, ``[B, encoder channels]``."""
        b, _, h, _ = view1.shape
        p = int(self.hparams["patch_size"] or default_patch(h))
        mask = random_patch_mask(b, h // p, float(self.hparams["mask_ratio"]), view1.device)
        pixel_mask = mask.repeat_interleave(p, dim=1).repeat_interleave(p, dim=2)[:, None]  # [B, 1, H, W]
        model = self.backbone.model
        features = model.encoder(view1 * (1 - pixel_mask).to(view1.dtype))
        pred = self.pixel_head(model.decoder(features))
        return MethodOutput(masked_patch_loss(pred, view1, mask, p), features[-1].mean(dim=(2, 3)).detach())
