"""mini-ImageNet (Vinyals et al., NeurIPS 2016): 84×84 natural images of 100 ImageNet classes.

Three layouts, tried in this order:

- the pickle cache ``mini-imagenet-cache-{train,val,test}.pkl``: a dict with ``image_data`` uint8
  ``[N, 84, 84, 3]`` and ``class_dict`` {wnid: [indices]}, read with the restricted unpickler;
- images + csv (Ravi & Larochelle's split files): ``images/<file>.jpg`` and ``{train,val,test}.csv``
  with columns ``filename,label``;
- per-class folders ``[train|val|test/]<wnid>/<file>.jpg``, read as a plain folder.

Organ ``natural``; class = the WordNet id; unlabelled.
"""

from __future__ import annotations

import csv
import pickle
import re
from pathlib import Path

import numpy as np
from PIL import Image

from mosl_cli.config import PrepareConfig
from mosl_cli.data.readers import folder, safe_pickle
from mosl_cli.data.readers.base import Frame, Item, SkipSample, load_image_with_masks, subdirs

NAME = "miniimagenet"
ORGAN = "natural"
CSVS = ("train.csv", "val.csv", "test.csv")
_CACHE = re.compile(r"^mini-imagenet-cache-(train|val|test)\.pkl$")
_WNID = re.compile(r"^n\d{8}$")


def _caches(root: Path) -> list[Path]:
    """The ``mini-imagenet-cache-*.pkl`` files of ``root``."""
    return sorted(p for p in root.iterdir() if _CACHE.match(p.name)) if root.is_dir() else []


def _csv_layout(root: Path) -> bool:
    """``images/`` beside a split csv."""
    return (root / "images").is_dir() and any((root / c).is_file() for c in CSVS)


def _wnid_root(root: Path) -> bool:
    """WordNet-id class folders in ``root`` or under its split folders."""
    dirs = subdirs(root)
    if any(_WNID.match(p.name) for p in dirs):
        return True
    return any(_WNID.match(c.name) for p in dirs if p.name.lower() in folder.SPLIT_DIRS for c in subdirs(p))


def resolve(root: Path) -> Path:
    """The layouts all hang from ``root`` itself."""
    return root


def detect(root: Path) -> bool:
    """A pickle cache, images + csv, or WordNet-id class folders."""
    return bool(_caches(root)) or _csv_layout(root) or _wnid_root(root)


def load_cache(item: Item) -> list[Frame]:
    """All images of one pickle cache, each an RGB frame with its WordNet id as class."""
    try:
        cache = safe_pickle.load(item.paths[0])
        images = np.asarray(cache["image_data"], dtype=np.uint8)
        owner = np.full(len(images), -1)
        wnids = sorted(cache["class_dict"])
        for c, wnid in enumerate(wnids):
            owner[np.asarray(cache["class_dict"][wnid], dtype=np.int64)] = c
    except (pickle.UnpicklingError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise SkipSample(f"not a mini-ImageNet cache ({type(exc).__name__}: {exc})") from exc
    if images.ndim != 4 or images.shape[-1] != 3:
        raise SkipSample(f"image_data has shape {images.shape}, expected [N, H, W, 3]")
    return [
        Frame(Image.fromarray(img), suffix=f"/{i:05d}", cls=wnids[c] if c >= 0 else "unknown")
        for i, (img, c) in enumerate(zip(images, owner))
    ]


def _csv_items(root: Path) -> list[Item]:
    """One item per csv row (``filename,label``); a listed file that is missing is skipped later."""
    out: list[Item] = []
    for name in CSVS:
        if not (root / name).is_file():
            continue
        with open(root / name, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                file, label = row.get("filename"), row.get("label")
                if file and label:
                    out.append(
                        Item(
                            key=Path(file).stem,
                            paths=(str(root / "images" / file),),
                            cls=label,
                            organ=ORGAN,
                            load=load_image_with_masks,
                        )
                    )
    return out


def items(root: Path, cfg: PrepareConfig) -> list[Item]:
    """Items of whichever layout :func:`detect` found (cache, csv, class folders)."""
    caches = _caches(root)
    if caches:
        return [Item(key=p.stem, paths=(str(p),), cls="unknown", organ=ORGAN, load=load_cache) for p in caches]
    if _csv_layout(root):
        return _csv_items(root)
    return folder.list_folder(root, organ=ORGAN)
