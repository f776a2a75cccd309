"""An auxiliary benign/malignant output for fine-tuning (``--class-aux WEIGHT``): multi-task learning
of the lesion's class beside its mask, so that the encoder learns what tells lesions apart.

The head exists only while training: :class:`ClassAux` wraps the segmentation model, catches the
encoder's deepest feature map with a forward hook, and returns one logit per scan beside the model's
own output. The saved model (``model.safetensors``) is the wrapped model alone, so inference, export
and the weights format do not change. Only the labelled scans of the run carry a class target: a scan
outside the label fraction (or of another class, e.g. normal) is left out of the term.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mosl_cli.data.store import Dataset
from mosl_cli.errors import MoslError

CLASS_TARGETS = {"benign": 0.0, "malignant": 1.0}  # a record's ``class`` → the head's target
CLASS_AUX_DROPOUT = 0.2  # before the head's linear layer, as the lesion-present head


def class_targets(ds: Dataset, labelled: list[int]) -> torch.Tensor:
    """float32 ``[N]`` over the dataset: 0 benign, 1 malignant for the ``labelled`` indices, NaN elsewhere
    (not labelled in this run, or a class the head does not learn)."""
    targets = torch.full((len(ds.records),), float("nan"))
    for i in labelled:
        value = CLASS_TARGETS.get(str(ds.records[i].get("class")))
        if value is not None:
            targets[i] = value
    return targets


class ClassAux(nn.Module):
    """``model`` plus a benign/malignant head: ``forward(x [B, C, H, W])`` returns ``(model(x), logit)``
    with ``logit`` ``[B, 1]`` from the encoder's deepest features (average-pooled, dropout, linear)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        encoder = getattr(model, "encoder", None)
        channels = getattr(encoder, "out_channels", None)
        if encoder is None or not channels:
            raise MoslError(f"--class-aux needs an smp model with an encoder ({type(model).__name__} has none)")
        self.model = model
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(CLASS_AUX_DROPOUT), nn.Linear(channels[-1], 1)
        )
        self._deepest: torch.Tensor | None = None
        encoder.register_forward_hook(self._catch)

    def _catch(self, _module: nn.Module, _inputs: Any, output: list[torch.Tensor]) -> None:
        self._deepest = output[-1]

    def forward(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        out = self.model(x)
        assert self._deepest is not None
        logit = self.head(self._deepest)
        self._deepest = None  # the graph is released with the batch
        return out, logit


def class_aux_loss(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE of ``logit`` ``[B, 1]`` against ``target`` ``[B]`` (0/1, NaN: left out), averaged over the
    scans with a target; 0 when the batch has none."""
    known = (~torch.isnan(target)).float()
    bce = F.binary_cross_entropy_with_logits(logit[:, 0].float(), torch.nan_to_num(target), reduction="none")
    return (bce * known).sum() / known.sum().clamp(min=1.0)
