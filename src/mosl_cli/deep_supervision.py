"""Deep supervision for fine-tuning (nnU-Net's 2D practice): auxiliary 1×1 mask heads on the U-Net
decoder's coarser blocks, each trained against the mask pooled to its resolution.

The heads exist only while training: :class:`DeepSupervised` wraps the segmentation model, catches the
decoder blocks' outputs with forward hooks, and returns the auxiliary logits beside the model's own
output. The saved model (``model.safetensors``) is the wrapped model alone, so inference, export and
the weights format do not change.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mosl_cli.errors import MoslError

AUX_LEVELS = 3  # auxiliary heads on the decoder blocks at 1/2, 1/4 and 1/8 of the input size
AUX_WEIGHTS = (0.5, 0.25, 0.125)  # nnU-Net's weights (the full-size output has 1), halved per level


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder's blocks of an smp U-Net-style model, coarsest first (``model.decoder.blocks``)."""
    blocks = getattr(getattr(model, "decoder", None), "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) < AUX_LEVELS + 1:
        raise MoslError(
            f"--deep-supervision needs a U-Net decoder with at least {AUX_LEVELS + 1} blocks "
            f"({type(model).__name__} has none); use --arch unet or drop the option"
        )
    return blocks


class DeepSupervised(nn.Module):
    """``model`` plus auxiliary heads: ``forward(x [B, C, H, W])`` returns ``(model(x), aux)`` where
    ``aux`` lists mask logits ``[B, 1, H/2, W/2]``, ``[B, 1, H/4, W/4]``, ``[B, 1, H/8, W/8]``
    (finest first, matching :data:`AUX_WEIGHTS`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        blocks = list(decoder_blocks(model))[-AUX_LEVELS - 1 : -1][::-1]  # finest auxiliary level first
        self.heads = nn.ModuleList(nn.Conv2d(_out_channels(b), 1, kernel_size=1) for b in blocks)
        self._features: list[torch.Tensor | None] = [None] * AUX_LEVELS
        for level, block in enumerate(blocks):
            block.register_forward_hook(self._catch(level))

    def _catch(self, level: int) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            self._features[level] = output

        return hook

    def forward(self, x: torch.Tensor) -> tuple[Any, list[torch.Tensor]]:
        out = self.model(x)
        aux = [head(feature) for head, feature in zip(self.heads, self._features, strict=True)]
        self._features = [None] * AUX_LEVELS  # the graph is released with the batch
        return out, aux


def _out_channels(block: nn.Module) -> int:
    """Channels a decoder block outputs: those of its last convolution."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise MoslError(f"--deep-supervision: decoder block {type(block).__name__} has no convolution")
    return convs[-1].out_channels


def pooled_targets(target: torch.Tensor, aux: list[torch.Tensor]) -> list[torch.Tensor]:
    """``target`` float ``[B, 1, H, W]`` pooled by area to each auxiliary output's size: soft masks in [0, 1]."""
    return [F.adaptive_avg_pool2d(target, logits.shape[-2:]) for logits in aux]
