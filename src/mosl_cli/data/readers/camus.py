"""CAMUS echocardiography (Leclerc et al., IEEE TMI 38(9), 2019): apical 2- and 4-chamber views.

Layout: ``patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}.nii.gz`` (the 2023 release; older ones ship
``.mhd`` + ``.raw``) with label maps ``..._gt.nii.gz`` (0 background, 1 left-ventricle cavity,
2 myocardium, 3 left atrium). The mask is ``label == cfg.camus_label``. Half-sequence files are
ignored. The patient folders may sit in ``root`` or up to two levels below (``database_nifti/``,
``training/``, ``testing/``). One group per patient; class ``none``; organ ``heart``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from mosl_cli.config import PrepareConfig
from mosl_cli.data.readers.base import NO_CLASS, Frame, Item, SkipSample, subdirs, to_uint8
from mosl_cli.data.readers.volumes import as_2d, read_volume

NAME = "camus"
ORGAN = "heart"
_PATIENT = re.compile(r"^patient\d+$")
_IMAGE = re.compile(
    r"^(?P<patient>patient\d+)_(?P<view>[24]CH)_(?P<phase>ED|ES)(?P<gt>_gt)?(?P<ext>\.nii\.gz|\.nii|\.mhd)$"
)


def _patients(root: Path) -> list[Path]:
    """Patient folders in ``root`` or up to two levels below, in name order."""
    frontier = [root]
    for _ in range(3):
        children = [c for d in frontier for c in subdirs(d)]
        found = [c for c in children if _PATIENT.match(c.name)]
        if found:
            return found
        frontier = children
    return []


def resolve(root: Path) -> Path:
    """CAMUS patients are searched below ``root`` itself."""
    return root


def detect(root: Path) -> bool:
    """Patient folders holding ``patientNNNN_{2CH,4CH}_{ED,ES}`` images."""
    for p in _patients(root)[:3]:
        if any(_IMAGE.match(f.name) for f in p.iterdir()):
            return True
    return False


def load(item: Item) -> list[Frame]:
    """Image (min-max scaled to uint8 if wider) and, when a ``_gt`` file is listed, the selected label."""
    image = to_uint8(as_2d(read_volume(item.paths[0])))
    mask = None
    if len(item.paths) > 1:
        labels = as_2d(read_volume(item.paths[1]))
        if labels.shape != image.shape:
            raise SkipSample(
                f"label map is {labels.shape[1]}x{labels.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}"
            )
        mask = np.rint(labels).astype(np.int64) == int(item.args[0])
    return [Frame(Image.fromarray(image), mask)]


def items(root: Path, cfg: PrepareConfig) -> list[Item]:
    """One item per view and phase; the patient is the group."""
    out: list[Item] = []
    for patient in _patients(root):
        files = [(m, f) for f in sorted(patient.iterdir()) if (m := _IMAGE.match(f.name))]
        images = {(m["view"], m["phase"]): f for m, f in files if not m["gt"]}
        labels = {(m["view"], m["phase"]): f for m, f in files if m["gt"]}
        for (view, phase), f in sorted(images.items()):
            gt = labels.get((view, phase))
            out.append(
                Item(
                    key=f"{patient.name}/{patient.name}_{view}_{phase}",
                    paths=(str(f),) if gt is None else (str(f), str(gt)),
                    cls=NO_CLASS,
                    organ=ORGAN,
                    load=load,
                    args=(cfg.camus_label,),
                    group=patient.name,
                )
            )
    return out
