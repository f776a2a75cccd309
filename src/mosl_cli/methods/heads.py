"""Projection and prediction heads, described as data.

A head is a list of :class:`Block` (``Linear(in_dim, out_dim)``, then optionally ``BatchNorm1d`` and
``ReLU``) turned into an ``nn.Sequential`` by :func:`build_head`. A linear layer followed by batch norm
has no bias (the norm's shift replaces it), as in the SimSiam and MoCo reference code. The widths come
from each paper's ResNet-50 recipe and are scaled with the backbone's ``feature_dim`` by the methods,
so a resnet18 encoder (``feature_dim`` 512) gets proportionally smaller heads.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn


class Block(NamedTuple):
    """One layer of a head: ``Linear(in_dim, out_dim)`` [+ ``BatchNorm1d``] [+ ``ReLU``]."""

    in_dim: int
    out_dim: int
    batchnorm: bool
    relu: bool
    affine: bool = True  # the norm's learnable scale/shift (SimSiam's last projector BN has none)


def build_head(blocks: list[Block]) -> nn.Sequential:
    """``nn.Sequential`` mapping ``[B, blocks[0].in_dim]`` → ``[B, blocks[-1].out_dim]`` (float)."""
    layers: list[nn.Module] = []
    for block in blocks:
        layers.append(nn.Linear(block.in_dim, block.out_dim, bias=not block.batchnorm))
        if block.batchnorm:
            layers.append(nn.BatchNorm1d(block.out_dim, affine=block.affine))
        if block.relu:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def simclr_projector(in_dim: int, hidden: int, out_dim: int) -> list[Block]:
    """SimCLR's g(·) (Chen et al. 2020, §2.1): Linear-BN-ReLU-Linear, 2048 → 2048 → 128 for ResNet-50."""
    return [Block(in_dim, hidden, True, True), Block(hidden, out_dim, False, False)]


def moco_v2_projector(in_dim: int, hidden: int, out_dim: int) -> list[Block]:
    """MoCo v2's MLP head (Chen et al. 2020, "Improved baselines", §2): Linear-ReLU-Linear, no BN, 2048 → 2048 → 128."""
    return [Block(in_dim, hidden, False, True), Block(hidden, out_dim, False, False)]


def simsiam_projector(in_dim: int, hidden: int, out_dim: int) -> list[Block]:
    """SimSiam's projector (Chen & He 2021, §4 "Baseline settings"): 3 layers, BN on each, the last BN
    without affine parameters and without ReLU; 2048 → 2048 → 2048 → 2048 for ResNet-50."""
    return [
        Block(in_dim, hidden, True, True),
        Block(hidden, hidden, True, True),
        Block(hidden, out_dim, True, False, affine=False),
    ]


def simsiam_predictor(dim: int, hidden: int) -> list[Block]:
    """SimSiam's predictor h (Chen & He 2021, §4): bottleneck Linear-BN-ReLU-Linear, 2048 → 512 → 2048.

    The output layer has a bias and neither BN nor ReLU (§4: "its output fc does not have BN or ReLU").
    """
    return [Block(dim, hidden, True, True), Block(hidden, dim, False, False)]
