"""``mosl evaluate --pred DIR --ref DIR``: score a folder of mask files against reference masks, with no
model and no prepared dataset (as nnU-Net's ``nnUNetv2_evaluate_folder``): ``mosl predict``'s masks
against a clinic's own annotations, another tool's masks, or a second reader's.

Pairing. Each folder is searched recursively for image files (:data:`IMAGE_EXTS`); ``*_overlay``
files are skipped. A file whose stem ends in a mask tag (``_mask``, ``_gt``, ``_seg``, ``_label``,
optionally followed by ``_<n>``) is a mask of the scan named by the rest of its stem; when a folder
holds any such file, the untagged files are its scans and are not read (a BUSI folder, or ``mosl
predict --overlay``'s output). Several masks of one scan in one folder (BUSI's ``_mask_1``) are
merged by OR. Predictions pair with references by that scan name; every reference needs a prediction
(else nothing is written), a prediction without a reference is counted and left out. A reference's
class is its first sub-folder (``benign/x_mask.png`` → ``benign``; split folders such as ``test/``
skipped), ``none`` at the top level, so a BUSI-like tree gives the ``lesion`` group as ``evaluate`` does.

Masks. Any non-zero pixel is lesion (0/1 and 0/255 files alike; RGB, palette and 1-bit read as by
``prepare``). A prediction must have its reference's size: metrics are computed at that size, with
distances in its pixels (PNG files carry no spacing), and the empty-mask rule of ``metrics.py``.

Writes ``metrics.json`` and ``per_case.csv`` in ``evaluate``'s formats (``pred`` and ``ref`` in place of
the model and dataset) into ``--out``, atomically, after every file has been read and checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mosl_cli import metrics as M
from mosl_cli.config import EvaluateFolderConfig, to_dict
from mosl_cli.data.readers.base import IMAGE_EXTS, open_mask, sorted_files
from mosl_cli.data.readers.folder import class_of
from mosl_cli.errors import MoslError
from mosl_cli.evaluate import (
    METRICS_VERSION,
    EvaluateResult,
    case_record,
    check_out_folder,
    table_rows,
    write_per_case_csv,
)
from mosl_cli.fsutil import remove_stale_temps, write_json
from mosl_cli.names import MASK_TAG, METRICS_FILE, METRICS_FORMAT, OVERLAY_TAG, PER_CASE_FILE

MASK_NAME = re.compile(rf"^(?P<scan>.+?)(?:{MASK_TAG}|_gt|_seg|_label)(?:_\d+)?$", re.IGNORECASE)


@dataclass
class MaskSet:
    """The masks of one scan in a folder: ``scan`` (the pairing name), ``cls`` (the class from the
    folder), ``paths`` (one file, or several merged by OR)."""

    scan: str
    cls: str
    paths: list[Path] = field(default_factory=list)

    def read(self) -> torch.Tensor:
        """bool ``[H, W]``: the OR of the files; :class:`MoslError` naming a file whose size differs."""
        out: torch.Tensor | None = None
        for p in self.paths:
            try:
                m = torch.from_numpy(open_mask(p))
            except (OSError, ValueError) as exc:
                raise MoslError(f"{p}: cannot be read as a mask image ({exc}); replace or remove the file") from exc
            if out is not None and m.shape != out.shape:
                raise MoslError(
                    f"{p}: {m.shape[1]}x{m.shape[0]} but {self.paths[0].name} of the same scan is "
                    f"{out.shape[1]}x{out.shape[0]}; give the masks of one scan one size"
                )
            out = m if out is None else out | m
        assert out is not None
        return out


def index_masks(root: Path, role: str) -> dict[str, MaskSet]:
    """The masks under ``root`` by scan name (module docstring); ``role`` (``--pred`` or ``--ref``)
    names the option in errors. :class:`MoslError` when the folder is missing or holds no image file, or
    when two sub-folders hold a mask of the same scan name (the pairing would be ambiguous)."""
    if not root.is_dir():
        raise MoslError(f"{role} {root}: not a folder; pass the folder that holds the mask files")
    files = [p for p in sorted_files(root, IMAGE_EXTS, recursive=True) if not p.stem.endswith(OVERLAY_TAG)]
    tagged = [p for p in files if MASK_NAME.match(p.stem)]
    masks: dict[str, MaskSet] = {}
    for p in tagged or files:
        match = MASK_NAME.match(p.stem)
        scan = match["scan"] if match else p.stem
        entry = masks.setdefault(scan, MaskSet(scan, class_of(p.relative_to(root))))
        if entry.paths and entry.paths[0].parent != p.parent:
            raise MoslError(
                f"{role} {root}: {entry.paths[0].relative_to(root)} and {p.relative_to(root)} are masks of the "
                f"same scan name {scan!r}; rename one, or evaluate the sub-folders one at a time"
            )
        entry.paths.append(p)
    if not masks:
        raise MoslError(f"{role} {root}: no image files (PNG, JPEG, BMP, TIFF) found; pass the folder of masks")
    return masks


def pair_masks(pred: dict[str, MaskSet], ref: dict[str, MaskSet], pred_root: Path) -> list[tuple[MaskSet, MaskSet]]:
    """(prediction, reference) per reference scan, in reference name order; :class:`MoslError` when a
    reference has no prediction."""
    missing = [name for name in ref if name not in pred]
    if missing:
        first = ref[missing[0]].paths[0]
        raise MoslError(
            f"--pred {pred_root}: no mask for {len(missing)} of {len(ref)} reference scans (the first: {first}); "
            f"predict them (mosl predict SCANS --out {pred_root}) or pass a --ref folder with only the scans predicted"
        )
    return [(pred[name], ref[name]) for name in sorted(ref)]


def score_pair(pred: MaskSet, ref: MaskSet) -> dict[str, Any]:
    """One case of ``per_case.csv``: the metrics of ``pred`` against ``ref`` at the reference's size."""
    p, r = pred.read(), ref.read()
    if p.shape != r.shape:
        raise MoslError(
            f"{pred.paths[0]}: {p.shape[1]}x{p.shape[0]} but its reference {ref.paths[0]} is "
            f"{r.shape[1]}x{r.shape[0]}; write the predictions at the scans' own size (mosl predict does)"
        )
    values = {k: v.tolist() for k, v in M.case_metrics(p[None, None], r[None, None]).items()}
    return case_record(ref.scan, ref.cls, str(pred.paths[0]), values, 0)


def run_evaluate_folder(cfg: EvaluateFolderConfig, on_case: Callable[[int, int], None] | None = None) -> EvaluateResult:
    """Score ``cfg.pred``'s masks against ``cfg.ref``'s; write metrics.json and per_case.csv to ``cfg.out``."""
    pred_root, ref_root, out = Path(cfg.pred), Path(cfg.ref), Path(cfg.out)
    pred, ref = index_masks(pred_root, "--pred"), index_masks(ref_root, "--ref")
    pairs = pair_masks(pred, ref, pred_root)
    check_out_folder(out)
    cases = []
    for k, (p, r) in enumerate(pairs):
        cases.append(score_pair(p, r))
        if on_case is not None:
            on_case(k + 1, len(pairs))
    summary = M.aggregate(cases, key="class")
    document: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "version": METRICS_VERSION,
        "pred": str(pred_root),
        "ref": str(ref_root),
        "predictions_without_reference": len(pred) - len(pairs),
        "config": to_dict(cfg),
        "empty_mask_rule": M.EMPTY_MASK_RULE,
        "summary": summary["summary"],
        "per_class": summary["per_class"],
        M.LESION_GROUP: summary[M.LESION_GROUP],
        "cases": cases,
    }
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    write_per_case_csv(out / PER_CASE_FILE, cases)
    write_json(out / METRICS_FILE, document)
    return EvaluateResult(metrics=document, out=out, rows=table_rows(summary))
