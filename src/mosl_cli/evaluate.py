"""``mosl evaluate``: per-case and per-class metrics of a segmentation model on one dataset split.

Resolution: each image of the dataset (stored at S×S, see ``data/store.py``) is resized to the size
the model was trained at (``size`` in the weight file), the model's sigmoid probabilities are
bilinearly upsampled back to S×S, thresholded there, post-processed by the rule the model carries
(``postprocess.py``; ``--no-postprocess`` skips it) and compared with the stored S×S masks. Every
model is therefore scored on the same grid against the same masks, whatever size it was trained at,
and HD95 / ASSD are in pixels of that S×S grid; where a sample records ``spacing_mm`` (DICOM) they are
also given in mm, with the normalised surface Dice at ``--nsd-tolerance`` mm (the spacing on the S×S
grid is :func:`mosl_cli.metrics.stored_spacing`). (Masks at each scan's original size are what ``mosl
predict`` writes; the dataset keeps only S×S.) ``--tta`` (default) averages the probabilities with
those of the horizontally flipped image; ``--model`` may name several files or a folder of fold runs,
whose probabilities are averaged (``inference.py``).

Writes ``metrics.json`` (settings, summary, per-class and per-case figures, the empty-mask rule)
and ``per_case.csv`` (one row per image) into ``--out``, atomically, after every check has passed.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mosl_cli import metrics as M
from mosl_cli.config import EvaluateConfig, to_dict
from mosl_cli.data.store import SPLITS, Dataset, load_dataset
from mosl_cli.device import resolve_device
from mosl_cli.errors import MoslError, UsageError
from mosl_cli.fsutil import atomic_path, remove_stale_temps, write_json
from mosl_cli.inference import Ensemble, forward_probabilities, load_ensemble, model_probabilities, prepare_model
from mosl_cli.names import METRICS_FILE, METRICS_FORMAT, PER_CASE_FILE  # also imported from here by older code
from mosl_cli.postprocess import PostProcess

METRICS_VERSION = 1
CSV_COLUMNS: tuple[str, ...] = (
    "id",
    "class",
    "source",
    "dice",
    "iou",
    "precision",
    "recall",
    "hd95",
    "gt_pixels",
    "pred_pixels",
) + M.DISTANCE_METRICS
OVERALL_GROUP = "all"


@dataclass
class EvaluateResult:
    """What :func:`run_evaluate` wrote: ``metrics`` (the content of metrics.json), the output folder,
    and ``rows`` for an on-screen table (see :func:`table_rows`)."""

    metrics: dict[str, Any]
    out: Path
    rows: list[dict[str, Any]]


def check_thresholds(threshold: float, batch_size: int) -> None:
    """:class:`MoslError` unless ``0 < threshold < 1`` and ``batch_size >= 1``."""
    if not 0.0 < threshold < 1.0:
        raise UsageError(f"--threshold {threshold}: must lie strictly between 0 and 1 (default 0.5)")
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be at least 1")


def _load_checked(cfg: EvaluateConfig, device: torch.device) -> tuple[Ensemble, Dataset, list[int]]:
    """Every check before any work: settings, weight files, dataset, split, channels, output path."""
    check_thresholds(cfg.threshold, cfg.batch_size)
    if cfg.split not in (*SPLITS, "all"):
        raise UsageError(f"--split {cfg.split!r}: use one of {', '.join(SPLITS)}, all")
    ensemble = load_ensemble(cfg.model, device).with_detector(cfg.detector)
    ds = load_dataset(cfg.data)
    if ds.masks is None:
        raise MoslError(f"{cfg.data}: the dataset has no masks; evaluate on a labelled dataset (e.g. BUSI)")
    indices = ds.indices(cfg.split, labelled=True)
    if not indices:
        raise MoslError(f"{cfg.data}: no labelled images in split {cfg.split!r}; choose another --split")
    if ds.channels != ensemble.in_channels:
        raise MoslError(
            f"{ensemble.describe()}: a {ensemble.in_channels}-channel model "
            f"but {cfg.data} has {ds.channels}-channel images; "
            f"prepare the data with --channels {ensemble.in_channels} or pass a matching model"
        )
    check_out_folder(Path(cfg.out))
    return ensemble, ds, indices


def check_out_folder(out: Path) -> None:
    """:class:`MoslError` unless ``out`` is a new folder or one whose metrics.json ``evaluate`` wrote."""
    if out.exists() and not out.is_dir():
        raise MoslError(f"--out {out}: exists and is not a folder; pass a folder name")
    if (out / METRICS_FILE).is_file() and not _is_evaluation(out / METRICS_FILE):
        raise MoslError(
            f"--out {out}: its {METRICS_FILE} was not written by mosl evaluate (a training run's?) "
            "and would be replaced; pass another --out"
        )


def _is_evaluation(path: Path) -> bool:
    """Whether ``path`` is a metrics.json that ``mosl evaluate`` wrote (one it may replace)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == METRICS_FORMAT


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def case_record(case_id: str, cls: str | None, source: str | None, values: dict[str, list], j: int) -> dict[str, Any]:
    """One row of ``per_case.csv``: the case's names and its metrics at index ``j`` of ``values``
    (:func:`mosl_cli.metrics.case_metrics`'s tensors as lists); an undefined metric is ``None``."""
    return {
        "id": case_id,
        "class": cls,
        "source": source,
        **{name: finite_or_none(float(values[name][j])) for name in (*M.METRICS, *M.DISTANCE_METRICS)},
        "gt_pixels": int(values["gt_pixels"][j]),
        "pred_pixels": int(values["pred_pixels"][j]),
    }


def evaluate_cases(
    ensemble: Ensemble,
    ds: Dataset,
    indices: list[int],
    *,
    device: torch.device,
    threshold: float = 0.5,
    tta: bool = False,
    postprocess: PostProcess | None = None,
    batch_size: int = 64,
    on_batch: Callable[[int, int], None] | None = None,
    nsd_tolerance: float = M.NSD_TOLERANCE_MM,
) -> list[dict[str, Any]]:
    """One dict per case (id, class, source, the metrics, gt_pixels, pred_pixels) in ``indices`` order.

    ``postprocess``: the rule applied to each thresholded mask (``None``: none).

    ``hd95`` is ``None`` where undefined (:data:`mosl_cli.metrics.EMPTY_MASK_RULE`).
    ``on_batch(done, total)`` is called after every batch.
    """
    assert ds.masks is not None
    cases: list[dict[str, Any]] = []
    order = torch.tensor(indices, dtype=torch.long)
    for chunk in order.split(batch_size):
        images = ds.images[chunk].to(device, non_blocking=True)
        target = ds.masks[chunk].to(device, non_blocking=True) > 0
        pred = ensemble.probabilities(images, tta=tta) > threshold
        if postprocess is not None:
            pred = postprocess(pred)
        spacing = M.stored_spacing([ds.records[i] for i in chunk.tolist()], ds.size)
        values = M.case_metrics(pred, target, spacing, nsd_tolerance)
        host = {k: v.cpu().tolist() for k, v in values.items()}
        for j, i in enumerate(chunk.tolist()):
            record = ds.records[i]
            cases.append(case_record(record["id"], record.get("class"), record.get("source"), host, j))
        if on_batch is not None:
            on_batch(len(cases), len(indices))
    return cases


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for a table: overall (``group`` = "all"), each class, then ``lesion`` (benign + malignant).

    Display strings under ``group, n, dice`` ("mean ± std"), ``iou, precision, recall`` (means) and
    ``hd95`` (mean px, then "(k n/a)" for k cases where it is undefined); the numbers under ``dice_mean, dice_std,
    hd95_mean, hd95_undefined`` (``None`` where no case defines the value).
    """
    groups = [(OVERALL_GROUP, summary["summary"]), *summary["per_class"].items()]
    if summary.get(M.LESION_GROUP):
        groups.append((M.LESION_GROUP, summary[M.LESION_GROUP]))
    rows = []
    for name, g in groups:
        hd95 = _fmt(g["hd95"]["mean"], 1)
        if g["hd95_undefined"]:
            hd95 += f" ({g['hd95_undefined']} n/a)"
        rows.append(
            {
                "group": name,
                "n": g["n"],
                "dice": f"{_fmt(g['dice']['mean'])} ± {_fmt(g['dice']['std'])}",
                "iou": _fmt(g["iou"]["mean"]),
                "precision": _fmt(g["precision"]["mean"]),
                "recall": _fmt(g["recall"]["mean"]),
                "hd95": hd95,
                "dice_mean": g["dice"]["mean"],
                "dice_std": g["dice"]["std"],
                "hd95_mean": g["hd95"]["mean"],
                "hd95_undefined": g["hd95_undefined"],
                **{name: _fmt(g[name]["mean"], 3 if name == "nsd" else 2) for name in M.DISTANCE_METRICS if name in g},
            }
        )
    return rows


def write_per_case_csv(path: str | Path, cases: list[dict[str, Any]]) -> None:
    """``per_case.csv`` (columns :data:`CSV_COLUMNS`; an undefined hd95 is an empty cell), atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for case in cases:
            writer.writerow(
                [
                    "" if case[c] is None else f"{case[c]:.6f}" if isinstance(case[c], float) else case[c]
                    for c in CSV_COLUMNS
                ]
            )


def run_evaluate(cfg: EvaluateConfig, on_batch: Callable[[int, int], None] | None = None) -> EvaluateResult:
    """Evaluate ``cfg.model`` on split ``cfg.split`` of ``cfg.data``; write metrics.json and per_case.csv.

    Raises :class:`MoslError` (nothing written) for a weight file that is not a mosl segmentation
    model, a missing dataset, an empty split, or a channel mismatch.
    """
    if not cfg.nsd_tolerance > 0:
        raise MoslError(f"--nsd-tolerance {cfg.nsd_tolerance}: use a distance in mm above 0 (default 2)")
    device = resolve_device(cfg.device)
    ensemble, ds, indices = _load_checked(cfg, device)
    rule = ensemble.postprocess(cfg.postprocess)
    cases = evaluate_cases(
        ensemble,
        ds,
        indices,
        device=device,
        threshold=cfg.threshold,
        tta=cfg.tta,
        postprocess=rule,
        batch_size=cfg.batch_size,
        on_batch=on_batch,
        nsd_tolerance=cfg.nsd_tolerance,
    )
    meta = ensemble.meta
    summary = M.aggregate(cases, key="class")
    document: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "version": METRICS_VERSION,
        "model": str(cfg.model) if isinstance(cfg.model, str) else list(cfg.model),
        "model_meta": meta,
        "models": [str(p) for p in ensemble.paths],
        "detector": None if ensemble.detector is None else [str(p) for p in ensemble.detector.paths],
        "postprocess": rule.to_dict(),
        "data": str(cfg.data),
        "split": cfg.split,
        "size_evaluated": ds.size,
        "model_size": int(meta["size"]),
        "tta": cfg.tta,
        "threshold": cfg.threshold,
        "device": str(device),
        "config": to_dict(cfg),
        "empty_mask_rule": M.EMPTY_MASK_RULE,
        "nsd_tolerance_mm": cfg.nsd_tolerance,
        "cases_with_spacing": sum(1 for i in indices if ds.records[i].get("spacing_mm")),
        "summary": summary["summary"],
        "per_class": summary["per_class"],
        M.LESION_GROUP: summary[M.LESION_GROUP],
        "cases": cases,
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # left by an evaluation killed while writing
    write_per_case_csv(out / PER_CASE_FILE, cases)
    write_json(out / METRICS_FILE, document)
    return EvaluateResult(metrics=document, out=out, rows=table_rows(summary))


__all__ = [
    "EvaluateResult",
    "run_evaluate",
    "evaluate_cases",
    "forward_probabilities",
    "model_probabilities",
    "table_rows",
    "write_per_case_csv",
    "check_thresholds",
    "check_out_folder",
    "prepare_model",
    "METRICS_FILE",
    "PER_CASE_FILE",
    "CSV_COLUMNS",
]
