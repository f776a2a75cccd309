"""HC18, fetal head circumference (van den Heuvel et al., PLoS ONE 13(8), 2018).

Layout: ``training_set/NNN_HC.png`` and ``NNN_kHC.png`` (k-th scan of a subject), each optionally with
``NNN[_k]HC_Annotation.png``: the head's ellipse drawn as an outline, filled here into a mask.
``test_set/`` (same naming, never annotated) is read as well when present. Without annotations the
images are unlabelled pre-training data. The root may be the folder holding ``training_set`` or
the image folder itself. Class ``none``; organ ``fetal-head``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mosl_cli.config import PrepareConfig
from mosl_cli.data.readers.base import NO_CLASS, Frame, Item, SkipSample, open_image, open_mask, sorted_files

NAME = "hc18"
ORGAN = "fetal-head"
SETS = ("training_set", "test_set")
_IMAGE = re.compile(r"^(?P<subject>\d+)(?:_\d+)?_?HC$")


def _sets(root: Path) -> list[Path]:
    """The image folders: ``training_set`` and ``test_set`` under ``root``, else ``root`` itself."""
    return [root / s for s in SETS if (root / s).is_dir()] or [root]


def resolve(root: Path) -> Path:
    """HC18's sets hang from ``root`` itself (or ``root`` is one of them)."""
    return root


def detect(root: Path) -> bool:
    """``training_set`` / ``test_set`` folders of ``NNN_HC.png`` files."""
    return any(_IMAGE.match(p.stem) for s in _sets(root) for p in s.iterdir() if p.suffix.lower() == ".png")


def fill_outline(outline: np.ndarray) -> np.ndarray:
    """Fill a closed outline: bool ``[H, W]`` in, bool ``[H, W]`` (outline and inside) out.

    The outline is thickened by one pixel (closes one-pixel gaps), the outside is flood-filled from a
    one-pixel border added around the image, and everything not reached is the filled shape.
    """
    h, w = outline.shape
    pil = Image.fromarray(outline.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))
    canvas = Image.new("L", (w + 2, h + 2), 0)
    canvas.paste(pil, (1, 1))
    ImageDraw.floodfill(canvas, (0, 0), 128, thresh=0)
    filled = np.asarray(canvas)[1:-1, 1:-1] != 128
    # undo the thickening on the outside edge
    shrunk = Image.fromarray(filled.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(3))
    return (np.asarray(shrunk) > 0) | outline


def load(item: Item) -> list[Frame]:
    """Image, plus the filled ellipse when an annotation file is listed."""
    image = open_image(item.paths[0])
    if len(item.paths) == 1:
        return [Frame(image)]
    outline = open_mask(item.paths[1])
    if outline.shape != (image.height, image.width):
        raise SkipSample(
            f"annotation is {outline.shape[1]}x{outline.shape[0]} but the image is {image.width}x{image.height}"
        )
    return [Frame(image, fill_outline(outline))]


def items(root: Path, cfg: PrepareConfig) -> list[Item]:
    """One item per scan; its ``_Annotation.png`` (if any) becomes the mask.

    ``NNN_HC`` and ``NNN_2HC`` are scans of one subject: they share a group.
    """
    out: list[Item] = []
    for folder in _sets(root):
        files = sorted_files(folder, frozenset({".png"}))
        notes = {p.stem[: -len("_Annotation")]: str(p) for p in files if p.stem.endswith("_Annotation")}
        for p in files:
            m = _IMAGE.match(p.stem)
            if not m:
                continue
            paths = (str(p), notes[p.stem]) if p.stem in notes else (str(p),)
            out.append(
                Item(
                    key=f"{folder.name}/{p.stem}",
                    paths=paths,
                    cls=NO_CLASS,
                    organ=ORGAN,
                    load=load,
                    group=f"{folder.name}/{m['subject']}",
                )
            )
    return out
