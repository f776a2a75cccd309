"""CIFAR-10 (Krizhevsky, *Learning Multiple Layers of Features from Tiny Images*, 2009): natural images.

Two layouts:

- the Python version, ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``: pickled dicts
  (``data`` uint8 ``[10000, 3072]`` as R, G, B planes of 32×32, ``labels``, ``filenames``), read with a
  restricted unpickler that executes nothing (:mod:`.safe_pickle`). All six batches are read;
- a JPEG/PNG copy in class folders, ``[train|test/]<class>/NNNN.jpg``, read as a plain folder.

Organ ``natural``; class = the category; unlabelled.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mosl_cli.config import PrepareConfig
from mosl_cli.data.readers import folder, safe_pickle
from mosl_cli.data.readers.base import Frame, Item, SkipSample, subdirs

NAME = "cifar10"
ORGAN = "natural"
PICKLE_DIR = "cifar-10-batches-py"
BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _pickle_dir(root: Path) -> Path | None:
    """The folder holding the pickled batches: ``root`` or ``root/cifar-10-batches-py``."""
    for d in (root, root / PICKLE_DIR):
        if any((d / b).is_file() for b in BATCHES):
            return d
    return None


def _class_root(root: Path) -> bool:
    """Whether ``root`` holds CIFAR-10 class folders (possibly under split folders)."""

    def classes(d: Path) -> set[str]:
        return {p.name for p in subdirs(d)}

    top = classes(root)
    if top and top <= folder.CIFAR10_CLASSES:
        return True
    splits = {s for s in top if s.lower() in folder.SPLIT_DIRS}
    return bool(splits) and all(classes(root / s) and classes(root / s) <= folder.CIFAR10_CLASSES for s in splits)


def resolve(root: Path) -> Path:
    """The batch folder for the pickled layout, else ``root``."""
    return _pickle_dir(root) or root


def detect(root: Path) -> bool:
    """Pickled batches, or CIFAR-10 class folders."""
    return _pickle_dir(root) is not None or _class_root(root)


def _key(d: dict[Any, Any]) -> dict[str, Any]:
    """Dict keys as str (Python 2 pickles may give bytes)."""
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _text(v: object) -> str:
    """A Python 2 string (bytes) or anything else as str."""
    return v.decode("latin-1") if isinstance(v, bytes) else str(v)


def load_batch(item: Item) -> list[Frame]:
    """All images of one pickled batch, each an RGB 32×32 frame with its class."""
    names = item.args[0]
    try:
        batch = _key(safe_pickle.load(item.paths[0]))
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = [int(x) for x in batch["labels"]]
    except (pickle.UnpicklingError, KeyError, TypeError, AttributeError) as exc:
        raise SkipSample(f"not a CIFAR-10 batch ({type(exc).__name__}: {exc})") from exc
    if len(labels) != len(data):
        raise SkipSample(f"{len(data)} images but {len(labels)} labels")
    return [
        Frame(Image.fromarray(np.ascontiguousarray(img)), suffix=f"/{i:05d}", cls=_name(names, label))
        for i, (img, label) in enumerate(zip(data, labels))
    ]


def _name(names: tuple[str, ...], label: int) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


def _names(base: Path) -> tuple[str, ...]:
    """Class names from ``batches.meta`` when readable, else the published ten."""
    try:
        meta = _key(safe_pickle.load(base / "batches.meta"))
        return tuple(_text(n) for n in meta["label_names"])
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, AttributeError):
        return CLASSES  # a missing or odd meta file only costs the names


def items(root: Path, cfg: PrepareConfig) -> list[Item]:
    """One item per batch file (pickled layout) or per image file (class folders)."""
    base = _pickle_dir(root)
    if base is None:
        return folder.list_folder(root, organ=ORGAN)
    names = _names(base)
    return [
        Item(key=b, paths=(str(base / b),), cls="unknown", organ=ORGAN, load=load_batch, args=(names,))
        for b in BATCHES
        if (base / b).is_file()
    ]
