"""DICOM files (``.dcm``, or suffix-less with the ``DICM`` magic) laid out like a plain folder.

Rules, on top of the ``folder`` layout's (class sub-folders; masks in a mask folder matched by
stem, ``images/a.dcm`` ↔ ``masks/a.png``):

- A single-frame file is one sample; a multi-frame file (a cine loop) gives ``frames_per_video``
  evenly spaced frames (suffix ``#f00012``), unlabelled. A mask is read for single-frame files
  only, at the full frame's size (cropped with it) or at the imaging region's size.
- Each frame is cropped to the ultrasound imaging region (:func:`mosl_cli.dicom.imaging_region`)
  unless ``region_crop`` is off. The record keeps ``frame_size`` [H, W] of the full frame, ``crop``
  [x0, y0, x1, y1] (x1, y1 exclusive) where the stored pixels came from, and ``spacing_mm`` [row,
  col] of the (cropped) frame's pixels when the file gives one.
- Group: the patient (else study, else series) id, so one patient's files never straddle splits.
- Organ: ``BodyPartExamined`` in lower case when the file names one, else the folder rule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mosl_cli import dicom
from mosl_cli.config import PrepareConfig
from mosl_cli.data.readers import folder
from mosl_cli.data.readers.base import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    Frame,
    Item,
    SkipSample,
    evenly_spaced,
    merge_masks,
    natural_key,
    subdirs,
)

NAME = "dicom"
_NOT_DICOM = (
    IMAGE_EXTS
    | VIDEO_EXTS
    | frozenset(
        {
            ".txt",
            ".csv",
            ".json",
            ".xml",
            ".xlsx",
            ".xls",
            ".md",
            ".pdf",
            ".zip",
            ".gz",
            ".nii",
            ".mhd",
            ".raw",
            ".py",
        }
    )
)
_SNIFF_LIMIT = 64  # suffix-less files whose magic detect() reads before giving up


def _candidates(folder_: Path, recursive: bool = True) -> list[Path]:
    it = folder_.rglob("*") if recursive else folder_.iterdir()
    return [
        p
        for p in it
        if p.suffix.lower() not in _NOT_DICOM
        and p.is_file()
        and not any(s.startswith(".") for s in p.relative_to(folder_).parts)
    ]


def dicom_files(images: Path, exclude: Path | None = None, sniff: bool = True) -> list[Path]:
    """DICOM files below ``images`` (recursively, natural order) outside ``exclude``: by suffix, and by
    magic when ``sniff``."""
    files = [
        p
        for p in _candidates(images)
        if (exclude is None or exclude not in p.parents)
        and (p.suffix.lower() in dicom.DICOM_EXTS or (sniff and dicom.looks_like_dicom(p)))
    ]
    return sorted(files, key=lambda p: natural_key(str(p.relative_to(images))))


def resolve(root: Path) -> Path:
    """A DICOM folder is its own root."""
    return root


def detect(root: Path) -> bool:
    """A DICOM file (by suffix, or by magic among the first few suffix-less files) within three levels."""
    seen = 0
    levels = [[root]]
    for _ in range(2):
        levels.append([c for d in levels[-1] for c in subdirs(d)])
    for d in (d for level in levels for d in level):
        for p in _candidates(d, recursive=False):
            if p.suffix.lower() in dicom.DICOM_EXTS:
                return True
            seen += 1
            if seen > _SNIFF_LIMIT:
                return False
            if dicom.looks_like_dicom(p):
                return True
    return False


def make_item(path: Path, key: str, cls: str, organ: str, masks: tuple[str, ...], cfg: PrepareConfig) -> Item:
    """The item of one DICOM file; its header (not its pixels) gives the group, frame count and organ."""
    group, frames = None, 1
    try:
        header = dicom.read(path, header_only=True)
    except dicom.DicomError:
        header = None  # the loader records why it is unusable
    if header is not None:
        group, frames = dicom.leakage_group(header), dicom.frame_count(header)
        body = str(header.get("BodyPartExamined", "") or "").strip().lower()
        organ = body or organ
    return Item(
        key=key,
        paths=(str(path), *masks),
        cls=cls,
        organ=organ,
        load=load_dicom,
        args=(cfg.frames_per_video, cfg.region_crop),
        group=group,
        frames_grouped=frames > 1,
    )


def _mask_for(paths: list[str], full: tuple[int, int], box: tuple[int, int, int, int] | None) -> np.ndarray:
    """The OR of the mask files, bool ``[h, w]`` of the cropped frame (masks at full or region size)."""
    width, height = full
    if box is None:
        return merge_masks(paths, full)
    x0, y0, x1, y1 = box
    try:
        return merge_masks(paths, full)[y0:y1, x0:x1]
    except SkipSample:
        try:
            return merge_masks(paths, (x1 - x0, y1 - y0))
        except SkipSample:
            raise SkipSample(
                f"mask is neither {width}x{height} (the frame) nor {x1 - x0}x{y1 - y0} (its imaging region)"
            ) from None


def load_dicom(item: Item) -> list[Frame]:
    """Frames of one DICOM file, cropped to the imaging region (``item.args`` = (frames per cine, crop))."""
    k, crop = int(item.args[0]), bool(item.args[1])
    try:
        ds = dicom.read(item.paths[0])
        dicom.check_pixels(ds)
        total = dicom.frame_count(ds)
        if total > 1 and len(item.paths) > 1:
            raise SkipSample("a mask file for a multi-frame DICOM is ambiguous; give masks for single-frame files")
        region = dicom.imaging_region(ds)
        spacing = dicom.spacing_mm(ds, region)
        box = region.box if crop and region is not None else None
        frames = []
        for i in evenly_spaced(total, k) if total > 1 else [0]:
            image = dicom.frame_image(ds, i)
            meta: dict = {"frame_size": [image.height, image.width]}
            mask = _mask_for(list(item.paths[1:]), image.size, box) if len(item.paths) > 1 else None
            if box is not None:
                image = image.crop(box)
                meta["crop"] = list(box)
            if spacing is not None:
                meta["spacing_mm"] = [round(spacing[0], 6), round(spacing[1], 6)]
            frames.append(Frame(image, mask, suffix=f"#f{i:05d}" if total > 1 else "", meta=meta))
        return frames
    except dicom.DicomError as exc:
        raise SkipSample(str(exc)) from exc


def items(root: Path, cfg: PrepareConfig) -> list[Item]:
    """Every DICOM (and plain image) file of the folder layout (see the module docstring)."""
    dicom.pydicom_module()  # one clear line when the extra is missing, before any work
    return folder.list_folder(root, dicom_cfg=cfg, sniff=True)


__all__ = ["NAME", "detect", "resolve", "items", "make_item", "load_dicom", "dicom_files"]
