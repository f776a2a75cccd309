"""Surface distances in millimetres: ASSD, HD95 / ASSD in mm, NSD, and the spacing of the stored grid."""

from __future__ import annotations

import math

import pytest
import torch

from mosl_cli import metrics as M


def masks(h: int, w: int, *boxes: tuple[int, int, int, int]) -> torch.Tensor:
    """Bool ``[len(boxes), 1, h, w]``, one filled box ``(y0, x0, y1, x1)`` (exclusive ends) per case."""
    out = torch.zeros(len(boxes), 1, h, w, dtype=torch.bool)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        out[i, 0, y0:y1, x0:x1] = True
    return out


def test_mm_equals_pixels_times_an_isotropic_spacing() -> None:
    pred = masks(64, 64, (10, 12, 40, 30), (5, 5, 20, 50))
    target = masks(64, 64, (14, 10, 44, 36), (8, 9, 25, 47))
    spacing = torch.tensor([[0.3, 0.3], [0.07, 0.07]], dtype=torch.float64)
    out = M.case_metrics(pred, target, spacing)
    for name in ("hd95", "assd"):
        assert out[f"{name}_mm"].tolist() == pytest.approx((out[name] * spacing[:, 0]).tolist(), rel=1e-12)
    # known geometry: a 20×20 square grown by 2 px on every side. Each side of the 24×24 boundary has
    # 20 pixels 2 px from the inner square, 2 at √5 and 2 corners (shared) at 2√2; the inner boundary
    # (76 pixels) is 2 px from the outer one everywhere.
    grown = M.case_metrics(masks(40, 40, (8, 8, 32, 32)), masks(40, 40, (10, 10, 30, 30)), torch.tensor([[0.5, 0.5]]))
    outer = (80 * 2 + 8 * math.sqrt(5) + 4 * 2 * math.sqrt(2)) / 92
    assert float(grown["assd"][0]) == pytest.approx((outer + 2.0) / 2)
    assert float(grown["assd_mm"][0]) == pytest.approx((outer + 2.0) / 2 * 0.5)
    # 168 pooled distances: 156 × 2, 8 × √5, 4 × 2√2; the 95th percentile (rank 158.65) falls among the √5
    assert float(grown["hd95"][0]) == pytest.approx(math.sqrt(5))
    assert float(grown["hd95_mm"][0]) == pytest.approx(math.sqrt(5) * 0.5)


def test_anisotropic_case_and_nsd_by_hand() -> None:
    """Target: one row of 5 pixels; pred: 3 pixels two rows below. Rows 1 mm, columns 0.5 mm apart.

    pred → target: 2, 2, 2 mm. target → pred: 2, 2, 2, √(2² + 0.5²), √(2² + 1²) mm.
    NSD at 2 mm: (3 + 3) / 8 = 0.75; at 2.1 mm: 7 / 8. ASSD (medpy): (2 + (6 + √4.25 + √5) / 5) / 2.
    """
    target = torch.zeros(1, 1, 12, 12, dtype=torch.bool)
    target[0, 0, 5, 5:10] = True
    pred = torch.zeros_like(target)
    pred[0, 0, 7, 5:8] = True
    spacing = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    assert float(M.nsd(pred, target, 2.0, spacing)[0]) == pytest.approx(0.75)
    assert float(M.nsd(pred, target, 2.1, spacing)[0]) == pytest.approx(7 / 8)
    assert float(M.assd(pred, target, spacing)[0]) == pytest.approx((2 + (6 + math.sqrt(4.25) + math.sqrt(5)) / 5) / 2)
    pooled = sorted([2.0] * 6 + [math.sqrt(4.25), math.sqrt(5)])
    expected_hd95 = pooled[6] + 0.65 * (pooled[7] - pooled[6])  # linear interpolation at 0.95 × 7
    assert float(M.hd95(pred, target, spacing)[0]) == pytest.approx(expected_hd95)
    out = M.case_metrics(pred, target, spacing, nsd_tolerance=2.0)
    assert float(out["nsd"][0]) == pytest.approx(0.75)


def test_empty_masks_and_unknown_spacing() -> None:
    empty = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    full = masks(8, 8, (2, 2, 5, 5))
    known = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    assert float(M.nsd(empty, empty, 2.0, known)[0]) == 1.0
    assert float(M.nsd(full, empty, 2.0, known)[0]) == 0.0
    assert math.isnan(float(M.assd(full, empty)[0]))
    unknown = torch.full((1, 2), math.nan, dtype=torch.float64)
    out = M.case_metrics(full, full, unknown)
    assert float(out["hd95"][0]) == 0.0 and all(math.isnan(float(out[k][0])) for k in ("hd95_mm", "assd_mm", "nsd"))
    assert all(
        math.isnan(float(v[0])) for k, v in M.case_metrics(full, full).items() if k.endswith("_mm") or k == "nsd"
    )


def test_stored_spacing_accounts_for_the_resize_per_axis() -> None:
    records = [{"spacing_mm": [0.1, 0.2], "height": 300, "width": 400}, {"height": 50, "width": 50}]
    out = M.stored_spacing(records, 100)
    assert out[0].tolist() == pytest.approx([0.3, 0.8]) and torch.isnan(out[1]).all()


def test_aggregate_summarises_distance_figures() -> None:
    cases = [{"class": "benign", "dice": 1.0, "hd95": 1.0, "assd": 0.5, "hd95_mm": 0.1, "assd_mm": None, "nsd": 1.0}]
    agg = M.aggregate(cases)
    assert agg["summary"]["assd"]["mean"] == 0.5 and agg["summary"]["nsd"]["mean"] == 1.0
    assert agg["summary"]["assd_mm"]["mean"] is None
