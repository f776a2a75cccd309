"""Per-case metrics against hand-made masks, the empty-mask rule, HD95 by hand, and aggregation."""

from __future__ import annotations

import math

import pytest
import torch

from mosl_cli import metrics as M


def masks(h: int, w: int, *boxes: tuple[int, int, int, int]) -> torch.Tensor:
    """A bool ``[1, 1, h, w]`` mask with the given ``(top, left, bottom, right)`` boxes (exclusive) set."""
    m = torch.zeros(1, 1, h, w, dtype=torch.bool)
    for top, left, bottom, right in boxes:
        m[..., top:bottom, left:right] = True
    return m


def stats(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    return {k: float(v[0]) for k, v in M.case_metrics(pred, target).items()}


def test_confusion_counts_per_case() -> None:
    pred = torch.cat([masks(4, 4, (0, 0, 2, 2)), masks(4, 4)])
    target = torch.cat([masks(4, 4, (0, 0, 2, 3)), masks(4, 4, (3, 3, 4, 4))])
    tp, fp, fn, tn = M.confusion(pred, target)
    assert tp.tolist() == [4, 0]
    assert fp.tolist() == [0, 0]
    assert fn.tolist() == [2, 1]
    assert tn.tolist() == [10, 15]


def test_overlap_metrics_by_hand() -> None:
    # pred: 2x2 square (4 px) inside target: 2x3 rectangle (6 px); overlap 4.
    s = stats(masks(8, 8, (1, 1, 3, 3)), masks(8, 8, (1, 1, 3, 4)))
    assert s["dice"] == pytest.approx(2 * 4 / (4 + 6))
    assert s["iou"] == pytest.approx(4 / 6)
    assert s["precision"] == pytest.approx(1.0)
    assert s["recall"] == pytest.approx(4 / 6)
    assert s["gt_pixels"] == 6 and s["pred_pixels"] == 4


def test_partial_overlap_precision_and_recall() -> None:
    # pred cols 0..3 (8 px), target cols 2..5 (8 px) on 2 rows: overlap 4.
    s = stats(masks(2, 6, (0, 0, 2, 4)), masks(2, 6, (0, 2, 2, 6)))
    assert s["dice"] == pytest.approx(0.5)
    assert s["iou"] == pytest.approx(4 / 12)
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(0.5)


def test_both_empty_scores_one_and_hd95_undefined() -> None:
    s = stats(masks(8, 8), masks(8, 8))
    assert (s["dice"], s["iou"], s["precision"], s["recall"]) == (1.0, 1.0, 1.0, 1.0)
    assert math.isnan(s["hd95"])


def test_empty_prediction_on_a_lesion_scores_zero() -> None:
    s = stats(masks(8, 8), masks(8, 8, (2, 2, 5, 5)))
    assert (s["dice"], s["iou"], s["precision"], s["recall"]) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(s["hd95"])


def test_lesion_predicted_on_empty_target_scores_zero() -> None:
    s = stats(masks(8, 8, (2, 2, 5, 5)), masks(8, 8))
    assert (s["dice"], s["iou"], s["precision"], s["recall"]) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(s["hd95"])


def test_boundary_is_mask_minus_erosion() -> None:
    square = masks(9, 9, (2, 2, 7, 7))  # 5x5: 25 px, 3x3 interior
    assert int(M.boundary(square).sum()) == 25 - 9
    full = masks(4, 4, (0, 0, 4, 4))  # outside the image is background: the frame is boundary
    assert int(M.boundary(full).sum()) == 16 - 4


def test_hd95_of_identical_masks_is_zero() -> None:
    m = masks(16, 16, (3, 4, 9, 12))
    assert float(M.hd95(m, m)[0]) == 0.0


def test_hd95_two_offset_squares_by_hand() -> None:
    # 4x4 squares at cols 4..7 and 6..9 (2 px apart). Each 12-px boundary has, towards the other
    # boundary, 4 pixels at distance 0, 4 at 1 and 4 at 2: the 24 pooled distances are 8x0, 8x1, 8x2;
    # the 95th percentile sits at rank 0.95 * 23 = 21.85, between two 2s.
    a = masks(16, 16, (4, 4, 8, 8))
    b = masks(16, 16, (4, 6, 8, 10))
    assert float(M.hd95(a, b)[0]) == pytest.approx(2.0)
    assert float(M.hd95(b, a)[0]) == pytest.approx(2.0)
    # Vertical offset by 5 with no overlap: the near edges are 5 apart, the far edges 8 apart.
    c = masks(24, 24, (0, 4, 4, 8))
    d = masks(24, 24, (9, 4, 13, 8))
    # Each pixel of c's 12-px boundary is nearest to the pixel of d's top row in its column, 9 - row
    # away: row 0 (4 px) 9, row 1 (2 px) 8, row 2 (2 px) 7, row 3 (4 px) 6; d mirrors this. The 24
    # pooled values are 8x6, 4x7, 4x8, 8x9, so ranks 16..23 (21.85 included) are 9.
    assert float(M.hd95(c, d)[0]) == pytest.approx(9.0)


def test_hd95_interpolates_the_95th_percentile() -> None:
    # pred: one pixel at (5, 5); target: a 1x3 line (5, 5..7), all of it boundary.
    # pred -> target: [0]; target -> pred: [0, 1, 2]; pooled [0, 0, 1, 2]:
    # rank 0.95 * 3 = 2.85 -> 1 + 0.85 * (2 - 1) = 1.85.
    pred = masks(12, 12, (5, 5, 6, 6))
    target = masks(12, 12, (5, 5, 6, 8))
    assert float(M.hd95(pred, target)[0]) == pytest.approx(1.85)


def test_hd95_is_per_case_and_diagonal_distances_are_euclidean() -> None:
    pred = torch.cat([masks(10, 10, (0, 0, 1, 1)), masks(10, 10)])
    target = torch.cat([masks(10, 10, (3, 4, 4, 5)), masks(10, 10, (1, 1, 2, 2))])
    out = M.hd95(pred, target)
    assert out.shape == (2,) and out.dtype == torch.float64
    assert float(out[0]) == pytest.approx(5.0)  # (0,0) to (3,4)
    assert math.isnan(float(out[1]))


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError):
        M.confusion(masks(4, 4), masks(4, 5))


def test_aggregate_overall_per_class_and_lesion() -> None:
    cases = [
        {"class": "benign", "dice": 0.8, "iou": 0.6, "precision": 0.9, "recall": 0.7, "hd95": 4.0},
        {"class": "benign", "dice": 0.6, "iou": 0.4, "precision": 0.5, "recall": 0.7, "hd95": 8.0},
        {"class": "malignant", "dice": 0.4, "iou": 0.2, "precision": 0.3, "recall": 0.5, "hd95": None},
        {"class": "normal", "dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "hd95": math.nan},
    ]
    agg = M.aggregate(cases)
    overall = agg["summary"]
    assert overall["n"] == 4
    assert overall["dice"]["mean"] == pytest.approx(0.7)
    assert overall["dice"]["median"] == pytest.approx(0.7)
    assert overall["dice"]["std"] == pytest.approx(math.sqrt((0.01 + 0.01 + 0.09 + 0.09) / 4))
    assert overall["hd95"]["mean"] == pytest.approx(6.0)  # undefined cases left out
    assert overall["hd95_undefined"] == 2
    assert list(agg["per_class"]) == ["benign", "malignant", "normal"]
    assert agg["per_class"]["benign"]["n"] == 2
    assert agg["per_class"]["benign"]["dice"]["mean"] == pytest.approx(0.7)
    assert agg["per_class"]["malignant"]["hd95"]["mean"] is None
    lesion = agg[M.LESION_GROUP]
    assert lesion["n"] == 3
    assert lesion["dice"]["mean"] == pytest.approx(0.6)


def test_aggregate_without_lesion_classes() -> None:
    agg = M.aggregate([{"class": None, "dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0, "hd95": 0.0}])
    assert agg[M.LESION_GROUP] is None
    assert list(agg["per_class"]) == ["unknown"]


def test_empty_mask_rule_states_each_case() -> None:
    rule = M.EMPTY_MASK_RULE
    assert "both masks empty" in rule and "= 1" in rule and "undefined" in rule and "hd95_undefined" in rule


def test_hd95_matches_a_distance_transform_reference() -> None:
    """medpy's recipe (scipy erosion + Euclidean distance transform) on random blobs, when scipy is there."""
    ndimage = pytest.importorskip("scipy.ndimage")
    import numpy as np

    g = torch.Generator().manual_seed(0)
    noise = torch.rand(6, 1, 12, 12, generator=g)
    blobs = torch.nn.functional.interpolate(noise, size=(48, 48), mode="bilinear", align_corners=False)
    pred, target = blobs[:3] > 0.55, blobs[3:] > 0.5
    ours = M.hd95(pred, target)
    cross = ndimage.generate_binary_structure(2, 1)
    for i in range(3):
        p, t = pred[i, 0].numpy(), target[i, 0].numpy()
        if not p.any() or not t.any():
            assert math.isnan(float(ours[i]))
            continue
        pb = p & ~ndimage.binary_erosion(p, structure=cross, iterations=1)
        tb = t & ~ndimage.binary_erosion(t, structure=cross, iterations=1)
        d1 = ndimage.distance_transform_edt(~tb)[pb]
        d2 = ndimage.distance_transform_edt(~pb)[tb]
        assert float(ours[i]) == pytest.approx(float(np.percentile(np.hstack((d1, d2)), 95)))
