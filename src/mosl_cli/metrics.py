"""Per-case segmentation metrics (pure tensor functions) and their aggregation.

Every function takes a batch and returns one value per case, like the per-image ``get_stats`` of
segmentation_models_pytorch (``metrics/functional.py``); aggregation over cases is a separate step
(:func:`aggregate`), as in nnU-Net's ``summary.json``.

Masks are boolean ``[B, 1, H, W]`` tensors on any device. Distances (HD95, ASSD) are in pixels of
the grid the masks are given on and, where a case's spacing is known (mm per pixel ``(row, col)``,
``spacing`` float ``[B, 2]``, NaN rows unknown), also in millimetres, with the normalised surface
Dice (NSD) at a tolerance in mm. BUSI carries no pixel spacing, so its mm figures are ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

EMPTY_MASK_RULE: str = (
    "both masks empty: dice, iou, precision and recall = 1; exactly one empty: dice and iou = 0, "
    "precision = 0 when nothing is predicted on a lesion, recall = 0 when a lesion is predicted on an "
    "empty target; hd95 is undefined (NaN) when either mask is empty, left out of its mean, std and "
    "median, and counted as hd95_undefined; assd, hd95_mm and assd_mm likewise; nsd = 1 when both "
    "masks are empty and 0 when exactly one is; mm figures are undefined where the spacing is unknown"
)
METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall", "hd95")
# Surface-distance figures beside HD95 in pixels: ASSD in pixels, HD95 / ASSD in mm, NSD at a tolerance in mm.
DISTANCE_METRICS: tuple[str, ...] = ("assd", "hd95_mm", "assd_mm", "nsd")
NSD_TOLERANCE_MM = 2.0
# The headline figure is the mean Dice over the lesion classes of BUSI (benign + malignant).
LESION_CLASSES: tuple[str, ...] = ("benign", "malignant")
LESION_GROUP = "lesion"
# Rows of boundary points compared at once in hd95 (bounds cdist's memory to ~64 MiB of float32).
_CDIST_BUDGET = 1 << 24


def confusion(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-case ``(tp, fp, fn, tn)``, each int64 ``[B]``, from bool masks ``[B, 1, H, W]``."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    p = pred.bool().flatten(1)
    t = target.bool().flatten(1)
    tp = (p & t).sum(1)
    fp = (p & ~t).sum(1)
    fn = (~p & t).sum(1)
    tn = (~p & ~t).sum(1)
    return tp, fp, fn, tn


def _ratio(num: torch.Tensor, den: torch.Tensor, both_empty: torch.Tensor) -> torch.Tensor:
    """``num / den`` as float64; where ``den == 0``: 1 if both masks are empty, else 0."""
    num, den = num.double(), den.double()
    value = num / den.clamp_min(1)
    fallback = both_empty.double()
    return torch.where(den > 0, value, fallback)


def _both_empty(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    return (tp + fp + fn) == 0


def dice(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """Dice ``2tp / (2tp + fp + fn)``, float64 ``[B]``; :data:`EMPTY_MASK_RULE` where undefined."""
    return _ratio(2 * tp, 2 * tp + fp + fn, _both_empty(tp, fp, fn))


def iou(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """IoU (Jaccard) ``tp / (tp + fp + fn)``, float64 ``[B]``; :data:`EMPTY_MASK_RULE` where undefined."""
    return _ratio(tp, tp + fp + fn, _both_empty(tp, fp, fn))


def precision(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """Precision ``tp / (tp + fp)``, float64 ``[B]``: 1 when both are empty, 0 when only pred is."""
    return _ratio(tp, tp + fp, _both_empty(tp, fp, fn))


def recall(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """Recall ``tp / (tp + fn)``, float64 ``[B]``: 1 when both are empty, 0 when only target is."""
    return _ratio(tp, tp + fn, _both_empty(tp, fp, fn))


def boundary(mask: torch.Tensor) -> torch.Tensor:
    """Bool ``[B, 1, H, W]``: ``mask`` minus its erosion by a 4-neighbour cross.

    Outside the image counts as background (as ``scipy.ndimage.binary_erosion``'s default, which
    medpy's hd95 uses), so a mask touching the border has a boundary there.
    """
    m = mask.bool()
    pad = F.pad(m.to(torch.uint8), (1, 1, 1, 1)).bool()
    eroded = m & pad[..., :-2, 1:-1] & pad[..., 2:, 1:-1] & pad[..., 1:-1, :-2] & pad[..., 1:-1, 2:]
    return m & ~eroded


def _nearest_distances(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """For each point of ``src`` ``[N, 2]`` the Euclidean distance to the nearest of ``dst`` ``[M, 2]``."""
    rows = max(1, _CDIST_BUDGET // max(1, dst.shape[0]))
    parts = [
        # Direct differences (no matrix-product trick): integer coordinates give exact distances.
        torch.cdist(chunk, dst, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1)
        for chunk in src.split(rows)
    ]
    return torch.cat(parts)


Distances = tuple[torch.Tensor, torch.Tensor]  # (pred → target, target → pred), float64, per boundary pixel


def surface_distances(
    pred: torch.Tensor, target: torch.Tensor, spacing: torch.Tensor | None = None
) -> list[Distances | None]:
    """Per case, the distance from each boundary pixel of ``pred`` to the nearest of ``target`` and back.

    In pixels, or in mm when ``spacing`` (float ``[B, 2]``, mm per row and per column) is given;
    ``None`` for a case where either mask is empty or its spacing is NaN. Exact (``torch.cdist`` on
    boundary coordinates, fine up to ~256 px masks).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    pb, tb = boundary(pred), boundary(target)
    out: list[Distances | None] = []
    for i in range(pred.shape[0]):
        a = pb[i, 0].nonzero().double()
        b = tb[i, 0].nonzero().double()
        scale = None if spacing is None else spacing[i].to(a.device, torch.float64)
        if a.shape[0] == 0 or b.shape[0] == 0 or (scale is not None and not bool(torch.isfinite(scale).all())):
            out.append(None)
            continue
        if scale is not None:
            a, b = a * scale, b * scale
        out.append((_nearest_distances(a, b), _nearest_distances(b, a)))
    return out


def _per_case(dists: list[Distances | None], fn: object, device: torch.device) -> torch.Tensor:
    values = [math.nan if d is None else float(fn(*d)) for d in dists]  # type: ignore[operator]
    return torch.tensor(values, dtype=torch.float64, device=device)


def _hd95_of(ab: torch.Tensor, ba: torch.Tensor) -> torch.Tensor:
    return torch.quantile(torch.cat([ab, ba]), 0.95)


def _assd_of(ab: torch.Tensor, ba: torch.Tensor) -> torch.Tensor:
    return (ab.mean() + ba.mean()) / 2


def hd95(pred: torch.Tensor, target: torch.Tensor, spacing: torch.Tensor | None = None) -> torch.Tensor:
    """95th percentile Hausdorff distance, float64 ``[B]`` (pixels, or mm with ``spacing``); NaN where undefined.

    The distances from every boundary pixel of ``pred`` to the nearest boundary pixel of ``target``
    and back are pooled and their 95th percentile taken (linear interpolation), as medpy's ``hd95`` does.
    """
    return _per_case(surface_distances(pred, target, spacing), _hd95_of, pred.device)


def assd(pred: torch.Tensor, target: torch.Tensor, spacing: torch.Tensor | None = None) -> torch.Tensor:
    """Average symmetric surface distance, float64 ``[B]`` (pixels, or mm with ``spacing``); NaN where undefined.

    The mean of the two directed mean boundary distances (pred → target, target → pred), as medpy's ``assd``.
    """
    return _per_case(surface_distances(pred, target, spacing), _assd_of, pred.device)


def _nsd_of(dists: list[Distances | None], tolerance: float, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    out = []
    for i, d in enumerate(dists):
        if d is None:
            empty_p, empty_t = not bool(pred[i].any()), not bool(target[i].any())
            out.append(math.nan if not (empty_p or empty_t) else float(empty_p and empty_t))
            continue
        ab, ba = d
        out.append(float(((ab <= tolerance).sum() + (ba <= tolerance).sum()) / (ab.numel() + ba.numel())))
    return torch.tensor(out, dtype=torch.float64, device=pred.device)


def nsd(
    pred: torch.Tensor, target: torch.Tensor, tolerance: float, spacing: torch.Tensor | None = None
) -> torch.Tensor:
    """Normalised surface Dice at ``tolerance`` (pixels, or mm with ``spacing``), float64 ``[B]``.

    The share of boundary pixels of both masks lying within ``tolerance`` of the other mask's boundary
    (Nikolov et al. 2021, counting pixels as MONAI's ``compute_surface_dice``); 1 when both masks
    are empty, 0 when exactly one is, NaN where the spacing is unknown.
    """
    dists = surface_distances(pred, target, spacing)
    if spacing is not None:  # an unknown spacing is NaN even when a mask is empty
        unknown = ~torch.isfinite(spacing.to(torch.float64)).all(dim=1).to(pred.device)
        return torch.where(unknown, math.nan, _nsd_of(dists, tolerance, pred, target))
    return _nsd_of(dists, tolerance, pred, target)


def case_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    spacing: torch.Tensor | None = None,
    nsd_tolerance: float = NSD_TOLERANCE_MM,
) -> dict[str, torch.Tensor]:
    """All per-case figures of bool masks ``[B, 1, H, W]``: the metrics (float64 ``[B]``, distances may
    be NaN), ``gt_pixels`` / ``pred_pixels`` (int64 ``[B]``), and, with ``spacing`` (float ``[B, 2]``
    mm per row / column, NaN rows unknown), :data:`DISTANCE_METRICS` in mm (all NaN without it)."""
    tp, fp, fn, _ = confusion(pred, target)
    px = surface_distances(pred, target)
    nan = torch.full((pred.shape[0],), math.nan, dtype=torch.float64, device=pred.device)
    out = {
        "dice": dice(tp, fp, fn),
        "iou": iou(tp, fp, fn),
        "precision": precision(tp, fp, fn),
        "recall": recall(tp, fp, fn),
        "hd95": _per_case(px, _hd95_of, pred.device),
        "assd": _per_case(px, _assd_of, pred.device),
        "hd95_mm": nan,
        "assd_mm": nan,
        "nsd": nan,
        "gt_pixels": tp + fn,
        "pred_pixels": tp + fp,
    }
    if spacing is not None:
        mm = surface_distances(pred, target, spacing)
        out["hd95_mm"] = _per_case(mm, _hd95_of, pred.device)
        out["assd_mm"] = _per_case(mm, _assd_of, pred.device)
        out["nsd"] = nsd(pred, target, nsd_tolerance, spacing)
    return out


def stored_spacing(records: Sequence[dict[str, Any]], size: int) -> torch.Tensor:
    """mm per pixel ``(row, col)`` on a dataset's ``size``×``size`` grid, float64 ``[B, 2]``, NaN where unknown.

    A record's ``spacing_mm`` is for its own ``height``×``width`` pixels; the square resize to S×S
    stretches each axis by its own factor, so the stored spacing is ``spacing × (height, width) / S``.
    """
    out = torch.full((len(records), 2), math.nan, dtype=torch.float64)
    for i, r in enumerate(records):
        sp = r.get("spacing_mm")
        if sp and r.get("height") and r.get("width"):
            out[i, 0] = float(sp[0]) * int(r["height"]) / size
            out[i, 1] = float(sp[1]) * int(r["width"]) / size
    return out


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    """Mean, population std (ddof 0) and median of finite values; ``None`` when there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "median": None}
    t = torch.tensor(finite, dtype=torch.float64)
    return {
        "mean": float(t.mean()),
        "std": float(t.std(unbiased=False)),
        # The midpoint of the two middle values for an even count (numpy's median, not torch's).
        "median": float(torch.quantile(t, 0.5)),
    }


def _group(cases: Sequence[dict[str, Any]], metrics: Iterable[str]) -> dict[str, Any]:
    metrics = [*metrics, *(m for m in DISTANCE_METRICS if any(m in c for c in cases))]
    summary: dict[str, Any] = {"n": len(cases)}
    for name in metrics:
        summary[name] = _stats([c.get(name) for c in cases])
    summary["hd95_undefined"] = sum(1 for c in cases if c.get("hd95") is None or not math.isfinite(c["hd95"]))
    return summary


def aggregate(values: list[dict[str, Any]], key: str = "class") -> dict[str, Any]:
    """Summaries of per-case dicts (metric name → float, hd95 NaN or ``None`` when undefined).

    Returns ``{"summary": G, "per_class": {class: G}, "lesion": G | None}`` where each group ``G`` is
    ``{"n": cases, "dice": {"mean", "std", "median"}, ..., "hd95_undefined": count}``; ``lesion``
    pools :data:`LESION_CLASSES` (the issue's headline Dice) and is ``None`` when neither occurs.
    :data:`DISTANCE_METRICS` are summarised too when the cases carry them.
    Classes are sorted by name; a case without ``key`` falls in class ``"unknown"``.
    """
    by_class: dict[str, list[dict[str, Any]]] = {}
    for case in values:
        by_class.setdefault(str(case.get(key) or "unknown"), []).append(case)
    lesion = [c for c in values if str(c.get(key)) in LESION_CLASSES]
    return {
        "summary": _group(values, METRICS),
        "per_class": {name: _group(by_class[name], METRICS) for name in sorted(by_class)},
        LESION_GROUP: _group(lesion, METRICS) if lesion else None,
    }


__all__ = [
    "EMPTY_MASK_RULE",
    "METRICS",
    "DISTANCE_METRICS",
    "NSD_TOLERANCE_MM",
    "LESION_CLASSES",
    "LESION_GROUP",
    "confusion",
    "dice",
    "iou",
    "precision",
    "recall",
    "boundary",
    "surface_distances",
    "hd95",
    "assd",
    "nsd",
    "case_metrics",
    "stored_spacing",
    "aggregate",
]
