"""Lesion measurements a radiologist reads off a mask: area and largest diameter, in px and mm.

``predict --measurements FILE`` writes one CSV row per predicted mask (:data:`COLUMNS`). Area is
the lesion pixel count × row spacing × column spacing; the largest diameter is the greatest
distance between two lesion pixel centres (over all lesion pixels of the scan), found on the convex
hull of the mask's boundary and scaled per axis. The mm columns are empty without a spacing.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mosl_cli.fsutil import atomic_path

COLUMNS: tuple[str, ...] = (
    "input",
    "frame",
    "mask",
    "width",
    "height",
    "lesion_pixels",
    "spacing_row_mm",
    "spacing_col_mm",
    "area_mm2",
    "max_diameter_px",
    "max_diameter_mm",
)


def _turn(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """z of the cross product (a − o) × (b − o): > 0 for a counter-clockwise turn."""
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (Andrew's monotone chain) of integer points ``[N, 2]``; the points when N ≤ 2."""
    pts = np.unique(points, axis=0)
    if len(pts) <= 2:
        return pts

    def half(seq: np.ndarray) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for p in seq:
            while len(out) >= 2 and _turn(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def max_diameter(mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """Greatest distance between two lesion pixel centres of bool ``[H, W]``, scaled by ``spacing`` (row, col)."""
    m = mask.astype(bool)
    if not m.any():
        return 0.0
    pad = np.pad(m, 1)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    hull = _hull(np.argwhere(m & ~inner)).astype(np.float64) * np.asarray(spacing, dtype=np.float64)
    d = np.sqrt(((hull[:, None, :] - hull[None, :, :]) ** 2).sum(-1))
    return float(d.max())


def measure(mask: np.ndarray, spacing: tuple[float, float] | None) -> dict[str, Any]:
    """``lesion_pixels``, ``area_mm2``, ``max_diameter_px``, ``max_diameter_mm`` of bool ``[H, W]`` (mm: ``None``
    without ``spacing``)."""
    pixels = int(np.count_nonzero(mask))
    out: dict[str, Any] = {"lesion_pixels": pixels, "max_diameter_px": max_diameter(mask)}
    out["area_mm2"] = None if spacing is None else pixels * spacing[0] * spacing[1]
    out["max_diameter_mm"] = None if spacing is None else max_diameter(mask, spacing)
    return out


def write_measurements(path: str | Path, results: Sequence[Any]) -> Path:
    """Measure each written mask of ``results`` (``PredictedFile`` s) and write the CSV atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for r in results:
            with Image.open(r.mask) as im:
                mask = np.asarray(im) > 0
            spacing = getattr(r, "spacing_mm", None)
            row = {
                "input": str(r.input),
                "frame": "" if getattr(r, "frame", None) is None else r.frame,
                "mask": str(r.mask),
                "width": r.width,
                "height": r.height,
                "spacing_row_mm": None if spacing is None else spacing[0],
                "spacing_col_mm": None if spacing is None else spacing[1],
                **measure(mask, spacing),
            }
            writer.writerow(
                ["" if row[c] is None else f"{row[c]:.4f}" if isinstance(row[c], float) else row[c] for c in COLUMNS]
            )
    return path


__all__ = ["COLUMNS", "max_diameter", "measure", "write_measurements"]
