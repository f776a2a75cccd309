"""The dataset directory that ``prepare`` writes and every other step reads.

Layout (see docs/design.md, "Files exchanged between steps")::

    DIR/data.safetensors   images uint8 [N, C, S, S]; masks uint8 [N, 1, S, S] (0/1) when any is labelled
    DIR/manifest.json      format tag and version, size, channels, sources, one record per sample

A sample record: ``id, source, organ, class, paths, height, width, has_mask, group, split``.
DICOM samples add ``frame_size`` [H, W], ``crop`` [x0, y0, x1, y1] and ``spacing_mm`` [row, col].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mosl_cli.errors import MoslError
from mosl_cli.fsutil import atomic_path, write_json
from mosl_cli.names import DATA_FILE, MANIFEST_FILE, SPLITS  # noqa: F401 (re-exported: other modules import them from here)
from mosl_cli.names import DATASET_FORMAT as FORMAT_TAG

FORMAT_VERSION = 1


@dataclass
class Dataset:
    """A prepared dataset held in memory (uint8 tensors, decoded once by ``prepare``).

    ``images``: uint8 ``[N, C, S, S]``; ``masks``: uint8 ``[N, 1, S, S]`` with 0/1 values, or ``None``
    when no sample is labelled; ``records``: one manifest record per sample, in the same order.
    """

    path: Path
    images: torch.Tensor
    masks: torch.Tensor | None
    manifest: dict[str, Any]

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.manifest["samples"]

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    @property
    def channels(self) -> int:
        return int(self.manifest["channels"])

    def indices(self, split: str = "all", labelled: bool = False) -> list[int]:
        """Sample indices of ``split`` (train / val / test / all), optionally only labelled ones."""
        if split != "all" and split not in SPLITS:
            raise MoslError(f"unknown split {split!r}: use one of train, val, test, all")
        return [
            i for i, r in enumerate(self.records)
            if (split == "all" or r["split"] == split) and (r["has_mask"] or not labelled)
        ]

    def fingerprint(self) -> str:
        """A short content id of the manifest (what ``config.json`` records as the data seen)."""
        import hashlib

        blob = json.dumps([(r["id"], r["split"], r["group"]) for r in self.records]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def write_dataset(
    out: str | Path, images: torch.Tensor, masks: torch.Tensor | None, manifest: dict[str, Any]
) -> Path:
    """Write ``data.safetensors`` and ``manifest.json`` atomically into ``out``; return ``out``.

    ``images``: uint8 ``[N, C, S, S]``; ``masks``: uint8 ``[N, 1, S, S]`` or ``None``.
    """
    from safetensors.torch import save_file

    out = Path(out)
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [N, C, S, S], got {images.dtype} {tuple(images.shape)}")
    tensors = {"images": images.contiguous()}
    if masks is not None:
        if masks.dtype != torch.uint8 or masks.shape[0] != images.shape[0] or masks.shape[1] != 1:
            raise ValueError(f"masks must be uint8 [N, 1, S, S], got {masks.dtype} {tuple(masks.shape)}")
        tensors["masks"] = masks.contiguous()
    manifest = {"format": FORMAT_TAG, "version": FORMAT_VERSION, **manifest}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / DATA_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT_TAG, "version": str(FORMAT_VERSION)})
    write_json(out / MANIFEST_FILE, manifest)
    return out


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check ``manifest.json`` of a dataset directory (no tensors are loaded)."""
    path = Path(path)
    mfile = path / MANIFEST_FILE
    if not path.is_dir():
        raise MoslError(f"{path}: no such dataset directory; run `mosl prepare SOURCE --out {path}` first")
    if not mfile.is_file() or not (path / DATA_FILE).is_file():
        raise MoslError(f"{path}: not a mosl dataset (no {MANIFEST_FILE} / {DATA_FILE}); run `mosl prepare` on it")
    try:
        manifest = json.loads(mfile.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MoslError(f"{mfile}: unreadable manifest ({exc}); prepare the dataset again") from exc
    if manifest.get("format") != FORMAT_TAG:
        raise MoslError(f"{mfile}: not a mosl dataset manifest; prepare the dataset again")
    if int(manifest.get("version", 0)) > FORMAT_VERSION:
        raise MoslError(f"{mfile}: dataset format {manifest.get('version')} is newer than this mosl; upgrade mosl")
    return manifest


def load_dataset(path: str | Path) -> Dataset:
    """Load a dataset directory written by :func:`write_dataset` (tensors are memory-mapped)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_manifest(path)
    try:
        tensors = load_file(str(path / DATA_FILE))
    except (SafetensorError, OSError) as exc:
        raise MoslError(f"{path / DATA_FILE}: unreadable ({exc}); prepare the dataset again") from exc
    images = tensors["images"]
    masks = tensors.get("masks")
    if images.shape[0] != len(manifest["samples"]):
        raise MoslError(f"{path}: {images.shape[0]} images but {len(manifest['samples'])} manifest records; prepare again")
    return Dataset(path=path, images=images, masks=masks, manifest=manifest)
