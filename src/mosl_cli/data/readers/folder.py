"""A plain folder of images, with optional class sub-folders and optional masks.

The reader reads whole trees (videos, labelled parts at any depth, ``--organ``, patient groups,
screen-export crop): :mod:`mosl_cli.data.readers.tree` applies the rules below to every part of it.

Rules (the README repeats them):

- Images are every image file below the image folder (recursively), in natural order.
- Class: the first sub-folder below the image folder, after skipping split folders (``train``, ``val``,
  ``test`` …): ``cifar10/train/cat/0001.jpg`` is class ``cat``. Files with no class folder: ``none``.
- Masks: a mask folder (``masks``, ``labels``, ``GT``, ``annotations`` …) inside the root beside an
  image folder (``images``, ``original`` …) or beside the images themselves, or a sibling of the
  root. A mask matches an image by file stem whatever the extension (``x.jpg`` ↔ ``x.png``, also
  ``x_mask.png``) at the same relative path (``images/a/x.jpg`` ↔ ``masks/a/x.png``), or, for
  masks kept flat at the mask folder's top, by a unique stem. An image without a matching mask is
  unlabelled.
- Organ, independent of ``--format``: ``natural`` when the class folders are CIFAR-10 classes or
  ImageNet WordNet ids (``n01532829``) — the CIFAR-10 and mini-ImageNet JPEG layouts — else ``unknown``.
- DICOM files (``.dcm``) among the images are read as the ``dicom`` reader reads them
  (:mod:`mosl_cli.data.readers.dicom`; needs the ``dicom`` extra).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from mosl_cli.config import PrepareConfig
from mosl_cli.data.readers.base import (
    IMAGE_EXTS,
    NO_CLASS,
    Item,
    load_image_with_masks,
    natural_key,
    sorted_files,
    subdirs,
)

NAME = "folder"
SPLIT_DIRS = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})
MASK_DIRS = ("masks", "mask", "labels", "label", "gt", "ground_truth", "groundtruth", "annotations", "segmentations")
IMAGE_DIRS = ("images", "image", "imgs", "img", "original", "originals", "scans")
MASK_SUFFIXES = ("", "_mask", "_gt", "_seg", "_label")
CIFAR10_CLASSES = frozenset({"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"})
_WNID = re.compile(r"^n\d{8}$")


def _named_child(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first sub-folder of ``folder`` whose lower-case name is in ``names`` (in ``names`` order)."""
    children = {p.name.lower(): p for p in subdirs(folder)}
    return next((children[n] for n in names if n in children), None)


def layout(root: Path) -> tuple[Path, Path | None]:
    """(image folder, mask folder or ``None``) for ``root`` (see the module docstring)."""
    masks = _named_child(root, MASK_DIRS)
    images = _named_child(root, IMAGE_DIRS)
    if masks is not None:
        return (images or root), masks
    if root.name.lower() not in MASK_DIRS:
        sibling = _named_child(root.parent, MASK_DIRS)
        if sibling is not None:
            return root, sibling
    return (images or root), None


def class_of(rel: Path) -> str:
    """Class of an image from its path relative to the image folder (split folders skipped)."""
    parts = list(rel.parts[:-1])
    while parts and parts[0].lower() in SPLIT_DIRS:
        parts.pop(0)
    return parts[0] if parts else NO_CLASS


def organ_of(classes: set[str]) -> str:
    """``natural`` for CIFAR-10 class names or WordNet ids, else ``unknown`` (the rule is format-independent)."""
    named = classes - {NO_CLASS}
    if named and (named <= CIFAR10_CLASSES or all(_WNID.match(c) for c in named)):
        return "natural"
    return "unknown"


def resolve(root: Path) -> Path:
    """A plain folder is its own root."""
    return root


def detect(root: Path) -> bool:
    """Any image or video file at any depth (:func:`mosl_cli.data.readers.tree.detect`)."""
    from mosl_cli.data.readers import tree

    return tree.detect(root)


def _mask_index(masks: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Masks by relative stem path, and by bare stem for the files at the mask folder's top level."""
    by_rel: dict[str, str] = {}
    by_stem: dict[str, list[str]] = defaultdict(list)
    for p in sorted_files(masks, IMAGE_EXTS, recursive=True):
        rel = p.relative_to(masks)
        by_rel.setdefault(rel.with_suffix("").as_posix(), str(p))
        if len(rel.parts) == 1:
            by_stem[p.stem].append(str(p))
    return by_rel, by_stem


def _find_mask(rel: Path, by_rel: dict[str, str], by_stem: dict[str, list[str]]) -> str | None:
    """The mask file of the image at ``rel`` (relative to the image folder), if any."""
    base = rel.with_suffix("").as_posix()
    for suffix in MASK_SUFFIXES:
        if base + suffix in by_rel:
            return by_rel[base + suffix]
    for suffix in MASK_SUFFIXES:
        hits = by_stem.get(rel.stem + suffix, [])
        if len(hits) == 1:
            return hits[0]
    return None


def list_folder(
    root: Path, organ: str | None = None, dicom_cfg: PrepareConfig | None = None, sniff: bool = False
) -> list[Item]:
    """Items of a plain image folder; ``organ`` overrides the :func:`organ_of` rule.

    With ``dicom_cfg``, DICOM files are items too: those with a DICOM suffix, and with ``sniff``
    also suffix-less files carrying the ``DICM`` magic.
    """
    images, masks = layout(root)
    by_rel, by_stem = _mask_index(masks) if masks is not None else ({}, {})
    files = [p for p in sorted_files(images, IMAGE_EXTS, recursive=True) if masks is None or masks not in p.parents]
    dicoms: set[Path] = set()
    if dicom_cfg is not None:
        from mosl_cli.data.readers import dicom as dicom_reader

        dicoms = set(dicom_reader.dicom_files(images, masks, sniff))
        files = sorted([*files, *dicoms], key=lambda p: natural_key(str(p.relative_to(images))))
    rels = [p.relative_to(images) for p in files]
    classes = [class_of(r) for r in rels]
    organ = organ or organ_of(set(classes))
    out: list[Item] = []
    for p, rel, cls in zip(files, rels, classes):
        mask = _find_mask(rel, by_rel, by_stem) if masks is not None else None
        if p in dicoms:
            out.append(
                dicom_reader.make_item(p, rel.as_posix(), cls, organ, () if mask is None else (mask,), dicom_cfg)
            )
            continue
        out.append(
            Item(
                key=rel.as_posix(),
                paths=(str(p),) if mask is None else (str(p), mask),
                cls=cls,
                organ=organ,
                load=load_image_with_masks,
            )
        )
    return out


def items(root: Path, cfg: PrepareConfig) -> list[Item]:
    """Every image, video and DICOM file of the tree, labelled parts anywhere in it
    (:mod:`mosl_cli.data.readers.tree`)."""
    from mosl_cli.data.readers import tree

    return tree.items(root, cfg)
