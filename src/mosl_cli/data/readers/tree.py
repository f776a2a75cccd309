"""Any tree of scans and videos: what the ``folder`` reader lists (its ``items`` and ``detect`` call here).

Rules (the README repeats them):

- Every image and video file at any depth is read (hidden files and folders skipped; names may hold
  spaces). ``.gif`` counts as an image.
- Labelled parts: every folder holding a mask folder (``masks``, ``labels`` …, see
  :mod:`~mosl_cli.data.readers.folder`) is read with the folder rules (its images matched to masks by
  stem), wherever it sits: ``usgra-seg/dataset/{images,masks}`` and ``dataset/test/{images,masks}``
  are both labelled. Any non-zero mask value is foreground (USGRA-seg's palette labels 1 and 2 both
  become foreground). Everything else is unlabelled.
- Class: the first sub-folder (split folders skipped) below the tree's first branching folder, so a
  wrapper folder (``timtrack/TimTrack paper/``) does not become the only class.
- Organ: ``--organ`` when given, else the folder rule (``natural`` for CIFAR-10 / ImageNet class
  folders, else ``unknown``).
- Groups: the frames of a video form one group; items whose path (file name first, then its
  folders inward-out) matches ``--group-pattern`` share the group of the matched key (its first
  capture group, or the whole match), so one patient's scans and videos never straddle splits.
- Crop (unless ``--no-crop``): each image, and each video with one box for all its frames, is cropped
  to its ultrasound region (:mod:`mosl_cli.data.crop`), masks alike; the box is widened to hold
  every foreground mask pixel, so a crop never cuts a label.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from mosl_cli.config import PrepareConfig
from mosl_cli.data import crop
from mosl_cli.data.readers import dicom, folder
from mosl_cli.data.readers.base import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    Frame,
    Item,
    load_image_with_masks,
    natural_key,
    subdirs,
)
from mosl_cli.data.readers.pocus import load_video
from mosl_cli.errors import MoslError

MOVIE_EXTS = VIDEO_EXTS - IMAGE_EXTS
MEDIA_EXTS = IMAGE_EXTS | MOVIE_EXTS
CROP_FRAMES = 8  # frames of a video that decide its crop box


def _walk(root: Path) -> list[Path]:
    """Image and video files below ``root`` at any depth, hidden entries skipped, in natural order."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        out += [Path(d, f) for f in files if not f.startswith(".") and Path(f).suffix.lower() in MEDIA_EXTS]
    return sorted(out, key=lambda p: natural_key(p.relative_to(root).as_posix()))


def detect(root: Path) -> bool:
    """Any image or video file at any depth (stops at the first)."""
    for _d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        if any(Path(f).suffix.lower() in MEDIA_EXTS and not f.startswith(".") for f in files):
            return True
    return False


def group_regex(pattern: str) -> re.Pattern[str]:
    """``--group-pattern`` compiled, or a one-line :class:`MoslError`."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise MoslError(
            f"--group-pattern {pattern!r}: not a regular expression ({exc}); e.g. 'patient_(\\d+)'"
        ) from None


def group_key(rel: Path, regex: re.Pattern[str]) -> str | None:
    """The group key in ``rel`` (a path below the root): file name first, then its folders inward-out."""
    for part in (rel.stem, *reversed(rel.parts[:-1])):
        m = regex.search(part)
        if m:
            return m.group(1) if m.re.groups else m.group(0)
    return None


def branch(root: Path) -> Path:
    """``root``, or the first folder below it that holds a file or several folders."""
    while True:
        kids = subdirs(root)
        has_files = any(p.is_file() and p.suffix.lower() in MEDIA_EXTS for p in root.iterdir())
        if len(kids) != 1 or has_files:
            return root
        root = kids[0]


def _labelled_roots(root: Path) -> list[Path]:
    """Folders with a mask folder (``root`` also when its masks sit beside it), deepest first."""
    found = [
        Path(d)
        for d, dirs, _ in os.walk(root)
        if not any(p.startswith(".") for p in Path(d).relative_to(root).parts)
        and folder._named_child(Path(d), folder.MASK_DIRS) is not None
    ]
    if root not in found and folder.layout(root)[1] is not None:
        found.append(root)
    return sorted(found, key=lambda p: -len(p.parts))


def load(item: Item) -> list[Frame]:
    """Decode an image (with masks) or a video (``item.args`` = kind, crop, frames), cropped when asked."""
    kind, cropped, k = item.args
    if kind == "video":
        frames = load_video(replace(item, args=(k,)))
    else:
        frames = load_image_with_masks(replace(item, args=()))
    if not cropped:
        return frames
    step = max(1, len(frames) // CROP_FRAMES)
    boxes = [crop.crop_box(f.image) for f in frames[::step]]
    box = None if any(b is None for b in boxes) else crop.union(boxes)  # type: ignore[arg-type]
    for f in frames:
        f.image, f.mask = crop.apply(f.image, f.mask, _keep_mask(box, f.mask))
    return frames


def _keep_mask(box: crop.Box | None, mask: np.ndarray | None) -> crop.Box | None:
    """``box`` widened to hold every foreground pixel of ``mask`` (a crop never cuts a label)."""
    if box is None or mask is None or not mask.any():
        return box
    ys, xs = mask.nonzero()
    return crop.union([box, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)])


def items(root: Path, cfg: PrepareConfig) -> list[Item]:
    """Every scan and video below ``root`` (see the module docstring)."""
    regex = group_regex(cfg.group_pattern)
    labelled: list[Item] = []
    taken: set[str] = set()
    mask_dirs: list[Path] = []
    for sub in _labelled_roots(root):
        prefix = "" if sub == root else sub.relative_to(root).as_posix() + "/"
        for it in folder.list_folder(sub, dicom_cfg=cfg):
            if it.paths[0] not in taken:
                taken.add(it.paths[0])
                labelled.append(replace(it, key=prefix + it.key))
        mask_dirs.append(folder.layout(sub)[1])  # type: ignore[arg-type]

    base = folder.layout(root)[0]
    top = branch(base)
    out: list[Item] = []
    for p in _walk(root):
        if str(p) in taken or any(m in p.parents for m in mask_dirs):
            continue
        video = p.suffix.lower() in MOVIE_EXTS
        out.append(
            Item(
                key=(p.relative_to(base) if base in p.parents else p.relative_to(root)).as_posix(),
                paths=(str(p),),
                cls=folder.class_of(p.relative_to(top)) if top in p.parents else folder.NO_CLASS,
                organ="",
                load=load,
                args=("video" if video else "image", cfg.crop, cfg.frames_per_video),
                frames_grouped=video,
            )
        )
    out += _dicom_items(root, base, taken, mask_dirs, cfg)
    everything = sorted(labelled, key=lambda it: natural_key(it.key)) + out
    organ = cfg.organ or folder.organ_of({it.cls for it in everything})

    def finish(it: Item) -> Item:
        group = group_key(Path(it.paths[0]).relative_to(root), regex)
        if it.load is dicom.load_dicom:  # DICOM keeps its loader and its patient group from the header
            return replace(it, organ=it.organ or organ, group=it.group or group)
        args = it.args if it.load is load else ("image", cfg.crop, cfg.frames_per_video)
        return replace(it, organ=organ, load=load, args=args, group=group)

    return [finish(it) for it in everything]


def _dicom_items(root: Path, base: Path, taken: set[str], mask_dirs: list[Path], cfg: PrepareConfig) -> list[Item]:
    """The unlabelled DICOM files (by suffix) of the tree that no labelled part took."""
    found = [
        p
        for p in dicom.dicom_files(root, None, sniff=False)
        if str(p) not in taken and not any(m in p.parents for m in mask_dirs)
    ]
    return [
        dicom.make_item(
            p,
            (p.relative_to(base) if base in p.parents else p.relative_to(root)).as_posix(),
            folder.NO_CLASS,
            "",
            (),
            cfg,
        )
        for p in found
    ]
