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
from mosl_cli.methods.dense import PixelContrast, check_dense_weight

if TYPE_CHECKING:
    from mosl_cli.augment import Correspondence
    from mosl_cli.config import PretrainConfig
    from mosl_cli.methods.backbone import PooledBackbone


class MethodOutput(NamedTuple):
    """``loss``: scalar float32 tensor; ``embedding``: ``[B, D]`` detached online projector output."""

    loss: Tensor
    embedding: Tensor


class SSLMethod(nn.Module):
    """Base class: subclasses set ``name`` and ``defaults`` and implement :meth:`contrast`, the
    method's own image-level loss; :meth:`forward` adds the optional pixel-level loss to it."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]

    def __init__(self, backbone: PooledBackbone, **hparams: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.hparams: dict[str, Any] = self.resolve(hparams)
        self.dense: PixelContrast | None = None
        self.dense_weight = 0.0

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
                f"{options} does not apply to --method {cls.name}; its settings are {', '.join(sorted(cls.defaults))}"
            )
        resolved = dict(cls.defaults)
        resolved.update({k: v for k, v in hparams.items() if v is not None and k in cls.defaults})
        return resolved

    @classmethod
    def check_config(cls, cfg: PretrainConfig) -> None:
        """One-line :class:`MoslError` for run settings the method cannot use, before any output is
        written (``mim`` needs ``--scope encoder-decoder``); nothing to check by default."""

    def contrast(self, view1: Tensor, view2: Tensor) -> MethodOutput:  # pragma: no cover - abstract
        """Two views ``[B, C, H, W]`` float → the method's own :class:`MethodOutput`. The first two
        online ``self.backbone`` calls must be on ``view1`` then ``view2`` (the pixel loss reads them)."""
        raise NotImplementedError

    def add_dense_loss(self, weight: float) -> None:
        """Add ``weight`` × the pixel-level loss of ``dense.py`` (needs ``scope="encoder-decoder"``)."""
        check_dense_weight(weight, self.backbone.scope, loss_built=True)
        self.dense, self.dense_weight = PixelContrast(self.backbone.decoder_dim), float(weight)

    def forward(self, view1: Tensor, view2: Tensor, points: Correspondence | None = None) -> MethodOutput:
        """Two views ``[B, C, H, W]`` float (and, with the pixel loss, the points both show) → loss."""
        if self.dense is None or points is None:
            return self.contrast(view1, view2)
        with self.backbone.capture_decoder_maps() as maps:
            out = self.contrast(view1, view2)
        return MethodOutput(out.loss + self.dense_weight * self.dense(maps[0], maps[1], points), out.embedding)

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
