"""The dataset directory that ``prepare`` writes and every other step reads.

Layout (see docs/design.md, "Files exchanged between steps")::

    DIR/data.safetensors   images uint8 [N, C, S, S]; masks uint8 [N, 1, S, S] (0/1) when any is labelled
    DIR/manifest.json      format tag and version, size, channels, sources, one record per sample

Both files carry the same content digest of the tensors (the manifest's ``digest``, the tensor file's
header ``digest``): a reader refuses a pair whose digests differ. A sample record: ``id, source, organ,
class, paths, height, width, has_mask, group, split``; DICOM samples add ``frame_size`` [H, W],
``crop`` [x0, y0, x1, y1] and ``spacing_mm`` [row, col].
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mosl_cli.errors import MoslError, UsageError
from mosl_cli.fsutil import atomic_path, exchange, make_temp_dir, temp_name, write_json
from mosl_cli.names import DATA_FILE, MANIFEST_FILE, SPLITS  # noqa: F401 (re-exported: other modules import them from here)
from mosl_cli.names import DATASET_FORMAT as FORMAT_TAG

if TYPE_CHECKING:  # torch is imported where tensors are read or written: `prepare` checks --out without it
    import torch

FORMAT_VERSION = 1
SAMPLE_KEYS = ("id", "source", "organ", "class", "split", "has_mask")  # what the steps read of a record


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
            raise UsageError(f"unknown split {split!r}: use one of train, val, test, all")
        return [
            i
            for i, r in enumerate(self.records)
            if (split == "all" or r["split"] == split) and (r["has_mask"] or not labelled)
        ]

    def fingerprint(self) -> str:
        """A short content id of the manifest (what ``config.json`` records as the data seen)."""
        import hashlib

        blob = json.dumps([(r["id"], r["split"], r["group"]) for r in self.records]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def write_dataset(out: str | Path, images: torch.Tensor, masks: torch.Tensor | None, manifest: dict[str, Any]) -> Path:
    """Write ``data.safetensors`` and ``manifest.json`` into ``out`` as one unit; return ``out``.

    ``images``: uint8 ``[N, C, S, S]``; ``masks``: uint8 ``[N, 1, S, S]`` or ``None``. Both files are
    written into a temporary folder beside ``out``, which then takes ``out``'s place in one atomic
    swap, so ``out`` holds the old dataset or the new one, never a mix. Both files record the same
    content digest of the tensors; :func:`read_manifest` refuses a pair whose digests differ.
    """
    import torch
    from safetensors.torch import save_file

    out = Path(os.path.abspath(out))
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [N, C, S, S], got {images.dtype} {tuple(images.shape)}")
    tensors = {"images": images.contiguous()}
    if masks is not None:
        if masks.dtype != torch.uint8 or masks.shape[0] != images.shape[0] or masks.shape[1] != 1:
            raise ValueError(f"masks must be uint8 [N, 1, S, S], got {masks.dtype} {tuple(masks.shape)}")
        tensors["masks"] = masks.contiguous()
    digest = tensor_digest(tensors)
    manifest = {"format": FORMAT_TAG, "version": FORMAT_VERSION, **manifest, "digest": digest}
    check_target(out, overwrite=True)  # never replaces a folder that holds other files
    with _naming(out):
        tmp = make_temp_dir(out)
    try:
        with _naming(out / DATA_FILE), atomic_path(tmp / DATA_FILE) as part:
            save_file(
                tensors, str(part), metadata={"format": FORMAT_TAG, "version": str(FORMAT_VERSION), "digest": digest}
            )
        with _naming(out / MANIFEST_FILE):
            write_json(tmp / MANIFEST_FILE, manifest)
        with _naming(out):
            _swap_in(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Report an OS failure (no space, read-only) under ``path``, the file the user will look for."""
    try:
        yield
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A content digest of named uint8 tensors (names, shapes and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.numpy().reshape(-1).view(np.uint8).data)
    return f"blake2b-128:{h.hexdigest()}"


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out``; afterwards ``tmp`` holds what ``out`` held (if anything)."""
    if not out.exists() or not any(out.iterdir()):
        os.replace(tmp, out)  # onto nothing, or onto an empty folder: one atomic rename
    elif not exchange(tmp, out):  # no atomic swap on this system: old aside, new in, old removed
        old = temp_name(out)
        os.replace(out, old)
        os.replace(tmp, out)
        os.replace(old, tmp)


def is_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder holding a dataset's files (complete or not)."""
    return path.is_dir() and any((path / name).exists() for name in (DATA_FILE, MANIFEST_FILE))


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse a dataset ``--out`` that is a file, holds other files, or (without ``overwrite``) a dataset."""
    if out.exists() and not out.is_dir():
        raise MoslError(f"--out {out}: exists and is not a folder; pass a new folder name")
    if not out.is_dir():
        return
    names = {p.name for p in out.iterdir() if not _is_temp(p.name)}
    if names and not names <= {DATA_FILE, MANIFEST_FILE}:
        raise MoslError(f"--out {out}: holds files that are not a mosl dataset; pass a new or empty folder")
    if names and not overwrite:
        raise MoslError(f"--out {out}: already holds a dataset; pass --overwrite to replace it, or another --out")


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def check_manifest(manifest: Any, mfile: Path) -> dict[str, Any]:
    """Check the keys every step reads; :class:`MoslError` names the first one missing or wrong."""

    def bad(what: str) -> MoslError:
        return MoslError(f"{mfile}: {what}; prepare the dataset again")

    if not isinstance(manifest, dict):
        raise bad(f"holds a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT_TAG:
        raise bad("not a mosl dataset manifest")
    version = manifest.get("version", 0)
    if not isinstance(version, int):
        raise bad(f"'version' is {version!r}, not a number")
    if version > FORMAT_VERSION:
        raise MoslError(f"{mfile}: dataset format {version} is newer than this mosl; upgrade mosl")
    for key, kinds in (("samples", list), ("size", int), ("channels", int)):
        if key not in manifest:
            raise bad(f"lacks {key!r}")
        if not isinstance(manifest[key], kinds) or isinstance(manifest[key], bool):
            raise bad(f"{key!r} is a {type(manifest[key]).__name__}, not a {kinds.__name__}")
    if manifest["channels"] not in (1, 3) or manifest["size"] < 1:
        raise bad(f"channels {manifest['channels']} / size {manifest['size']} are out of range")
    for key in ("sources", "skipped"):
        if not isinstance(manifest.get(key, []), list):
            raise bad(f"{key!r} is not a list")
    for i, src in enumerate(manifest.get("sources", [])):
        if not isinstance(src, dict) or not {"name", "organ"} <= src.keys():
            raise bad(f"source {i} lacks 'name' or 'organ'")
    for i, rec in enumerate(manifest["samples"]):
        if not isinstance(rec, dict):
            raise bad(f"sample {i} is not an object")
        for key in SAMPLE_KEYS:
            if key not in rec:
                raise bad(f"sample {i} ({rec.get('id', 'no id')}) lacks {key!r}")
        if rec["split"] not in SPLITS:
            raise bad(f"sample {i} ({rec['id']}) has split {rec['split']!r}, not one of {', '.join(SPLITS)}")
        if not isinstance(rec["has_mask"], bool):
            raise bad(f"sample {i} ({rec['id']}) has has_mask {rec['has_mask']!r}, not true or false")
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check ``manifest.json`` of a dataset directory and that ``data.safetensors`` belongs
    to it (its header only: no tensors are loaded)."""
    path = Path(path)
    mfile = path / MANIFEST_FILE
    if path.is_file():
        raise MoslError(f"{path}: a file, not a dataset directory; pass the folder `mosl prepare --out` wrote")
    if not path.is_dir():
        raise MoslError(f"{path}: no such dataset directory; run `mosl prepare SOURCE --out {path}` first")
    if not mfile.is_file() or not (path / DATA_FILE).is_file():
        raise MoslError(f"{path}: not a mosl dataset (no {MANIFEST_FILE} / {DATA_FILE}); run `mosl prepare` on it")
    try:
        manifest = json.loads(mfile.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MoslError(f"{mfile}: unreadable manifest ({exc}); prepare the dataset again") from exc
    manifest = check_manifest(manifest, mfile)
    header = _data_header(path / DATA_FILE)
    if header.get("digest") != manifest.get("digest"):
        raise MoslError(
            f"{path}: {DATA_FILE} and {MANIFEST_FILE} come from different runs of prepare "
            "(content digests differ); prepare the dataset again"
        )
    return manifest


def _data_header(dfile: Path) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(dfile), framework="pt") as fh:
            return fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise MoslError(f"{dfile}: unreadable ({_one_line(exc)}); prepare the dataset again") from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def load_dataset(path: str | Path) -> Dataset:
    """Load a dataset directory written by :func:`write_dataset` (tensors are memory-mapped)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_manifest(path)
    try:
        tensors = load_file(str(path / DATA_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise MoslError(f"{path / DATA_FILE}: unreadable ({_one_line(exc)}); prepare the dataset again") from exc
    images, masks = tensors.get("images"), tensors.get("masks")
    n = len(manifest["samples"])
    if (
        images is None
        or images.dtype != torch.uint8
        or images.ndim != 4
        or images.shape[:2] != (n, manifest["channels"])
    ):
        shape = None if images is None else tuple(images.shape)
        raise MoslError(
            f"{path / DATA_FILE}: images {shape} do not fit the manifest's {n} samples; prepare the dataset again"
        )
    if any(r["has_mask"] for r in manifest["samples"]) and (masks is None or masks.shape[0] != n):
        raise MoslError(f"{path / DATA_FILE}: no masks for the manifest's labelled samples; prepare the dataset again")
    return Dataset(path=path, images=images, masks=masks, manifest=manifest)
