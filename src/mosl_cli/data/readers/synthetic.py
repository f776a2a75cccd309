"""The ``synthetic`` source: scans rendered by :mod:`mosl_cli.data.synthetic` (no files needed).

Selected by the source string ``synthetic`` (not a path); ``cfg.synthetic_count`` scans are generated
at ``cfg.size`` from ``cfg.seed``. Class = the scan's label (benign, malignant, normal, unlabelled),
organ = its organ; breast scans carry masks, the other organs are unlabelled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mosl_cli.config import PrepareConfig
from mosl_cli.data.readers.base import Frame, Item

NAME = "synthetic"
SOURCE = "synthetic"  # the source string that selects this reader


def resolve(root: Path) -> Path:
    """Nothing to resolve: the source is a name, not a folder."""
    return root


def detect(root: Path) -> bool:
    """Only the literal source string ``synthetic`` selects this reader."""
    return str(root) == SOURCE


def load(item: Item) -> list[Frame]:
    """Render scan ``index`` of ``count`` (``item.args`` = index, count, seed, size)."""
    from mosl_cli.data.synthetic import generate

    index, count, seed, size = item.args
    scan = generate(index, count, seed, size)
    mask = None if scan.mask is None else np.asarray(scan.mask) > 0
    return [Frame(Image.fromarray(np.asarray(scan.image, dtype=np.uint8)), mask, cls=scan.label, organ=scan.organ)]


def items(root: Path, cfg: PrepareConfig) -> list[Item]:
    """One item per scan index; class and organ are known once rendered."""
    n = cfg.synthetic_count
    return [
        Item(key=f"{i:06d}", paths=(), cls="unknown", organ="mixed", load=load, args=(i, n, cfg.seed, cfg.size))
        for i in range(n)
    ]
