"""What every SSL method provides to the pre-training loop.

A method is a backbone (:class:`~mosl_cli.methods.backbone.PooledBackbone`), its heads, its loss and
its forward over two augmented views of one batch. Hyper-parameters default to the method paper's
values (``defaults``, documented with citations in each method's file); keyword arguments override
them, ``None`` meaning "the default". The resolved values are in ``self.hparams``; the optimiser
settings among them (``base_lr`` per 256 images, to be scaled linearly with the global batch size,
``weight_decay``, ``sgd_momentum``) are for the training loop, which builds the optimiser from
:meth:`SSLMethod.param_groups`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mosl_cli.errors import MoslError

if TYPE_CHECKING:
    from mosl_cli.methods.backbone import PooledBackbone


class MethodOutput(NamedTuple):
    """``loss``: scalar float32 tensor; ``embedding``: ``[B, D]`` detached online projector output."""

    loss: Tensor
    embedding: Tensor


class SSLMethod(nn.Module):
    """Base class: subclasses set ``name`` and ``defaults`` and implement :meth:`forward`."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]

    def __init__(self, backbone: PooledBackbone, **hparams: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.hparams: dict[str, Any] = self.resolve(hparams)

    @classmethod
    def resolve(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """``defaults`` overridden by the non-``None`` entries of ``hparams``.

        A non-``None`` value for a setting the method does not have is a user error (e.g.
        ``--temperature`` with SimSiam); ``None`` values of such settings are ignored.
        """
        unknown = sorted(k for k, v in hparams.items() if v is not None and k not in cls.defaults)
        if unknown:
            options = ", ".join("--" + k.replace("_", "-") for k in unknown)
            raise MoslError(
                f"{options} does not apply to --method {cls.name}; its settings are "
                f"{', '.join(sorted(cls.defaults))}"
            )
        resolved = dict(cls.defaults)
        resolved.update({k: v for k, v in hparams.items() if v is not None and k in cls.defaults})
        return resolved

    def forward(self, view1: Tensor, view2: Tensor) -> MethodOutput:  # pragma: no cover - abstract
        """Two views ``[B, C, H, W]`` float → :class:`MethodOutput`."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after ``optimizer.step()`` (MoCo's momentum update); a no-op by default."""

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups: every parameter that requires a gradient, in one group."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]


@torch.no_grad()
def embedding_std(z: Tensor) -> float:
    """Collapse indicator: per-dimension std over the batch of L2-normalised ``z`` ``[B, D]``, averaged.

    About ``1/sqrt(D)`` for well-spread embeddings, 0 when every image maps to one point (Chen & He
    2021, §4.1 "Stop-gradient", Fig. 2).
    """
    return float(F.normalize(z.detach().float(), dim=1).std(dim=0).mean())
