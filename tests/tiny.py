"""Tiny datasets written with the real store, shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import torch

from mosl_cli.config import FinetuneConfig
from mosl_cli.data.store import write_dataset

# Command-line options of a training step small enough for a test (resnet18, 32 px, one step, CPU).
TINY = [
    "--encoder",
    "resnet18",
    "--size",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--steps-per-epoch",
    "1",
    "--device",
    "cpu",
]


def blob_dataset(out: Path, n: int = 24, size: int = 48, seed: int = 0, split_cycle: tuple[str, ...] = ()) -> Path:
    """A labelled dataset of dark ellipses on speckle: uint8 images [n,1,S,S], masks [n,1,S,S].

    Scan ``i`` is benign, malignant or normal by ``i % 3`` and takes split ``split_cycle[i % len]``
    (default: 4 train, 1 val, 1 test in 6, so that val is malignant and test normal).
    """
    split_cycle = split_cycle or ("train", "train", "train", "train", "val", "test")
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, masks, records = [], [], []
    classes = ["benign", "malignant", "normal"]
    for i in range(n):
        cls = classes[i % 3]
        cy, cx = torch.randint(size // 4, 3 * size // 4, (2,), generator=g).tolist()
        ry, rx = torch.randint(size // 8, size // 4, (2,), generator=g).tolist()
        inside = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= 1
        if cls == "normal":
            inside = torch.zeros_like(inside)
        speckle = torch.rand((size, size), generator=g) * 120 + 80
        img = torch.where(inside, speckle * 0.3, speckle)
        images.append(img.clamp(0, 255).to(torch.uint8)[None])
        masks.append(inside.to(torch.uint8)[None])
        split = split_cycle[i % len(split_cycle)]
        records.append(
            {
                "id": f"s{i}",
                "source": "blobs",
                "organ": "breast",
                "class": cls,
                "paths": [f"s{i}.png"],
                "height": size,
                "width": size,
                "has_mask": True,
                "group": i,
                "split": split,
            }
        )
    manifest = {
        "size": size,
        "channels": 1,
        "seed": seed,
        "splits": [0.67, 0.17, 0.16],
        "sources": [{"name": "blobs", "reader": "test", "root": "-", "organ": "breast", "count": n}],
        "samples": records,
        "skipped": [],
        "groups_merged": 0,
    }
    return write_dataset(out, torch.stack(images), torch.stack(masks), manifest)


def tiny_finetune_config(data: Path, out: Path, **kw: object) -> FinetuneConfig:
    """Fine-tuning settings small enough for a test (resnet18, 32 px, 2 epochs of 3 steps, CPU)."""
    base: dict[str, object] = dict(
        data=str(data),
        init="none",
        encoder="resnet18",
        size=32,
        epochs=2,
        batch_size=8,
        steps_per_epoch=3,
        device="cpu",
        out=str(out),
    )
    base.update(kw)
    return FinetuneConfig(**base)  # type: ignore[arg-type]
