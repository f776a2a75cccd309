"""BUSI, Breast Ultrasound Images (Al-Dhabyani et al., Data in Brief 28, 2020).

Layout: ``Dataset_BUSI_with_GT/{benign,malignant,normal}/"<class> (N).png"`` with ``"<class> (N)_mask.png"``
and sometimes ``_mask_1.png``, ``_mask_2.png`` (several lesions: merged by OR). Masks come as 1-bit, RGB
or RGBA. A normal image's mask is empty: a real "no lesion" label (``has_mask`` true, all zero).
The root may be the folder holding ``Dataset_BUSI_with_GT`` or that folder itself.
"""

from __future__ import annotations

import re
from pathlib import Path

from mosl_cli.config import PrepareConfig
from mosl_cli.data.readers.base import Item, load_image_with_masks, sorted_files

NAME = "busi"
ORGAN = "breast"
CLASSES = ("benign", "malignant", "normal")
FOLDER = "Dataset_BUSI_with_GT"
_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_\d+)?$")


def resolve(root: Path) -> Path:
    """The folder that holds the class folders."""
    return root / FOLDER if (root / FOLDER).is_dir() else root


def detect(root: Path) -> bool:
    """A BUSI layout: class folders holding ``*_mask.png`` files."""
    base = resolve(root)
    return any((base / c).is_dir() and any(p.name.endswith("_mask.png") for p in (base / c).iterdir()) for c in CLASSES)


def items(root: Path, cfg: PrepareConfig) -> list[Item]:
    """One item per image: (image, its masks...), class from the folder.

    A normal image without a mask file still gets an empty mask; a lesion image without one is unlabelled.
    """
    base = resolve(root)
    out: list[Item] = []
    for cls in CLASSES:
        folder = base / cls
        if not folder.is_dir():
            continue
        files = sorted_files(folder, frozenset({".png"}))
        masks: dict[str, list[str]] = {}
        for p in files:
            m = _MASK.match(p.stem)
            if m:
                masks.setdefault(m["stem"], []).append(str(p))
        for p in files:
            if _MASK.match(p.stem):
                continue
            out.append(
                Item(
                    key=f"{cls}/{p.stem}",
                    paths=(str(p), *masks.get(p.stem, [])),
                    cls=cls,
                    organ=ORGAN,
                    load=load_image_with_masks,
                    args=("labelled",) if cls == "normal" else (),
                )
            )
    return out
