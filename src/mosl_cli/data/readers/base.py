"""What every reader shares: the item a reader lists, the frames it decodes to, and image helpers.

A reader lists :class:`Item` s (cheap: file names only). Each item names a module-level ``load``
function, so items pickle to decode workers; ``load(item)`` returns one or more :class:`Frame` s
(a video or a pickled batch gives many) or raises :class:`SkipSample` with a reason.
This module imports neither torch nor anything heavy, so decode workers start fast.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mpeg", ".mpg", ".m4v", ".mkv", ".webm", ".wmv", ".gif"})
NO_CLASS = "none"  # class of a sample whose dataset has no diagnostic categories (HC18, CAMUS, ...)
# Large scans are read without Pillow's warning (as in mosl_cli.imageio); twice its limit is an error.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class SkipSample(Exception):
    """Raised by a loader: this file cannot be used; the message is the reason recorded in the manifest."""


@dataclass(frozen=True)
class Item:
    """One thing to decode: an image file with its mask files, a video, a pickled batch, a generated scan.

    ``key``: unique within its source (e.g. ``"benign/benign (1)"``); the sample id is
    ``"<source>/<key><frame suffix>"``. ``paths``: the image (or video, batch) first, then its masks.
    ``group``: a reader-given group shared by several items (a CAMUS patient), or ``None``.
    ``frames_grouped``: all frames of this item form one group (the frames of one video).
    """

    key: str
    paths: tuple[str, ...]
    cls: str
    organ: str
    load: Callable[[Item], list[Frame]]
    args: tuple[Any, ...] = ()
    group: str | None = None
    frames_grouped: bool = False


@dataclass
class Frame:
    """One decoded sample at its original size.

    ``image``: PIL image, mode ``L`` or ``RGB``. ``mask``: bool ``[H, W]`` (all False is a real
    "no lesion" label) or ``None`` when unlabelled. ``suffix`` extends the item key (``"#f00012"``);
    ``cls`` and ``organ`` override the item's (one pickled batch holds many classes). ``meta``: extra
    JSON-ready fields for the sample's manifest record (a DICOM's ``crop``, ``frame_size``, ``spacing_mm``).
    """

    image: Image.Image
    mask: np.ndarray | None = None
    suffix: str = ""
    cls: str | None = None
    organ: str | None = None
    meta: dict[str, Any] | None = None


# Errors that mean "this file is bad", as opposed to a bug in mosl: they turn into a skipped entry.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    SkipSample,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
    IndexError,
)


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``"benign (2)"`` before ``"benign (10)"``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def sorted_files(folder: Path, exts: frozenset[str] = IMAGE_EXTS, recursive: bool = False) -> list[Path]:
    """Files of ``folder`` with one of ``exts`` (case-insensitive), in natural order; hidden ones skipped."""
    it = folder.rglob("*") if recursive else folder.iterdir()
    files = [
        p
        for p in it
        if p.suffix.lower() in exts and not any(s.startswith(".") for s in p.relative_to(folder).parts) and p.is_file()
    ]
    return sorted(files, key=lambda p: natural_key(str(p.relative_to(folder))))


def subdirs(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` in name order, hidden ones skipped (``scandir``: no stat per file)."""
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def any_file(folder: Path, exts: frozenset[str], max_depth: int = 3) -> bool:
    """Whether ``folder`` holds a file with one of ``exts`` within ``max_depth`` levels (stops at the first)."""

    def walk(d: Path, depth: int) -> Iterator[Path]:
        try:
            entries = list(d.iterdir())
        except OSError:
            return
        for p in entries:
            if p.is_file():
                yield p
        if depth < max_depth:
            for p in entries:
                if p.is_dir() and not p.name.startswith("."):
                    yield from walk(p, depth + 1)

    return folder.is_dir() and any(p.suffix.lower() in exts for p in walk(folder, 1))


def as_image(pil: Image.Image) -> Image.Image:
    """A decoded image as mode ``L`` (grey kept grey) or ``RGB``.

    16-bit greys keep their top byte and 32-bit / float ones are min-max scaled: the rule of
    ``mosl_cli.imageio`` (what ``predict`` reads), so training and prediction see the same pixels.
    """
    if pil.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return Image.fromarray((np.asarray(pil).astype(np.uint16) >> 8).astype(np.uint8))
    if pil.mode in ("I", "F"):
        return Image.fromarray(to_uint8(np.asarray(pil)))
    if pil.mode in ("L", "RGB"):
        return pil
    if pil.mode == "1":
        return pil.convert("L")
    if pil.mode == "LA":
        return pil.getchannel("L")
    return pil.convert("RGB")


def to_uint8(a: np.ndarray) -> np.ndarray:
    """Any numeric array as uint8: uint8 unchanged, otherwise min-max scaled to 0..255."""
    if a.dtype == np.uint8:
        return a
    a = np.nan_to_num(a.astype(np.float64))
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


EXIF_ORIENTATION = 0x0112


def open_image(path: str | Path) -> Image.Image:
    """Decode an image file fully (truncated files fail here), upright per EXIF, as ``L`` or ``RGB``."""
    with Image.open(path) as im:
        im.load()
        if im.getexif().get(EXIF_ORIENTATION, 1) != 1:
            im = ImageOps.exif_transpose(im)
        return as_image(im)


def mask_array(pil: Image.Image) -> np.ndarray:
    """A mask image as bool ``[H, W]``: any non-zero colour channel is foreground.

    Masks come as 1-bit, grey, palette, RGB or RGBA. An alpha channel is ignored (BUSI's RGBA masks
    have alpha 255 everywhere) unless the colour channels are all zero and alpha varies.
    """
    if pil.mode == "P":
        pil = pil.convert("RGBA")
    bands = pil.getbands()
    a = np.asarray(pil)
    if a.ndim == 2:
        return a > 0
    colour = [i for i, b in enumerate(bands) if b != "A"]
    fg = (a[..., colour] > 0).any(axis=-1)
    if not fg.any() and "A" in bands:
        alpha = a[..., bands.index("A")]
        if alpha.min() != alpha.max():
            return alpha > 0
    return fg


def open_mask(path: str | Path) -> np.ndarray:
    """Decode a mask file as bool ``[H, W]`` (see :func:`mask_array`)."""
    with Image.open(path) as im:
        im.load()
        return mask_array(im)


def merge_masks(paths: list[str], size: tuple[int, int]) -> np.ndarray:
    """OR of several mask files, bool ``[H, W]``; each must be ``size`` = (width, height) like its image."""
    out = np.zeros((size[1], size[0]), dtype=bool)
    for p in paths:
        m = open_mask(p)
        if m.shape != out.shape:
            raise SkipSample(f"mask {Path(p).name} is {m.shape[1]}x{m.shape[0]} but the image is {size[0]}x{size[1]}")
        out |= m
    return out


def load_image_with_masks(item: Item) -> list[Frame]:
    """Loader for the common case: ``item.paths`` = (image, mask, mask, ...); no masks = unlabelled.

    ``item.args`` may be ``("labelled",)``: a missing mask then means an all-zero ("normal") mask.
    """
    image = open_image(item.paths[0])
    masks = list(item.paths[1:])
    if masks:
        return [Frame(image, merge_masks(masks, image.size))]
    if "labelled" in item.args:
        return [Frame(image, np.zeros((image.height, image.width), dtype=bool))]
    return [Frame(image)]


def evenly_spaced(total: int, k: int | None) -> list[int]:
    """``k`` frame indices spread over ``total`` frames: the centres of ``k`` equal segments (``None``: all)."""
    if total <= 0:
        return []
    if k is None:
        return list(range(total))
    k = min(k, total)
    return sorted({int((i + 0.5) * total / k) for i in range(k)})
