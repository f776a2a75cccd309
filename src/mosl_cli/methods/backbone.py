"""An smp segmentation model seen as an SSL backbone: image batch in, one feature vector per image out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from mosl_cli.errors import MoslError

SCOPES: tuple[str, ...] = ("encoder", "encoder-decoder")


def _decoder_channels(model: nn.Module) -> int:
    """Channels of the decoder's output map (what smp's segmentation head reads)."""
    head = getattr(model, "segmentation_head", None)
    first = head[0] if isinstance(head, nn.Sequential) and len(head) else None
    if isinstance(first, nn.Conv2d):
        return int(first.in_channels)
    # Unknown head layout: measure on a dummy batch (eval mode, so no BN statistics change).
    was_training = model.training
    model.eval()
    with torch.no_grad():
        x = torch.zeros(1, int(model.encoder._in_channels), 64, 64)  # noqa: SLF001 - smp's own attribute
        channels = int(model.decoder(model.encoder(x)).shape[1])
    model.train(was_training)
    return channels


class PooledBackbone(nn.Module):
    """``[B, C, H, W]`` float → ``[B, feature_dim]`` float features from an smp model.

    ``scope="encoder"``: global average pool of the encoder's deepest map (``feature_dim`` = its
    channels, 512 for resnet18, 2048 for resnet50). ``scope="encoder-decoder"``: that vector
    concatenated with the global average pool of the decoder's output map (16 channels for smp's
    Unet), so the decoder gets gradient too. Parts that never receive gradient (the segmentation
    head, and the decoder under ``scope="encoder"``) are frozen (``requires_grad=False``) so DDP needs
    no ``find_unused_parameters``; they are still saved with the model.
    """

    def __init__(self, model: nn.Module, scope: str = "encoder") -> None:
        super().__init__()
        if scope not in SCOPES:
            raise MoslError(f"--scope {scope!r} is not one of {', '.join(SCOPES)}; pick one of them")
        self.model = model
        self.scope = scope
        encoder_dim = int(model.encoder.out_channels[-1])
        self.decoder_dim = _decoder_channels(model) if scope == "encoder-decoder" else 0
        self.feature_dim = encoder_dim + self.decoder_dim
        self._maps: list[Tensor] | None = None
        frozen = [getattr(model, "segmentation_head", None), getattr(model, "classification_head", None)]
        if scope == "encoder":
            frozen.append(model.decoder)
        for part in frozen:
            if part is not None:
                part.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        features = self.model.encoder(x)
        pooled = features[-1].mean(dim=(2, 3))
        if self.scope == "encoder":
            return pooled
        decoded = self.model.decoder(features)
        if self._maps is not None:
            self._maps.append(decoded)
        return torch.cat([pooled, decoded.mean(dim=(2, 3))], dim=1)

    @contextmanager
    def capture_decoder_maps(self) -> Iterator[list[Tensor]]:
        """Within the block, each forward also appends its decoder output map ``[B, C, H, W]`` to the
        yielded list (``scope="encoder-decoder"`` only), for the pixel-level loss of ``dense.py``."""
        self._maps = []
        try:
            yield self._maps
        finally:
            self._maps = None
