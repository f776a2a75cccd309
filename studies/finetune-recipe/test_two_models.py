"""``two_models.py``: the detector's empty masks gate the segmenter's, and the scores per class."""

from __future__ import annotations

from pathlib import Path

import two_models  # this folder is on sys.path: pytest puts a test file's folder there


def _write(path: Path, rows: list[tuple[str, str, float, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["id,class,source,dice,pred_pixels"] + [f"{i},{c},busi,{d},{p}" for i, c, d, p in rows]
    path.write_text("\n".join(lines) + "\n")


def test_the_detector_empties_the_segmenter_where_its_own_mask_is_empty(tmp_path: Path) -> None:
    segmenter = {"a": ("benign", 0.9, 50), "b": ("malignant", 0.8, 40), "n": ("normal", 0.0, 30)}
    detector = {"a": ("benign", 0.7, 45), "b": ("malignant", 0.0, 0), "n": ("normal", 1.0, 0)}
    gated = two_models.gate(segmenter, detector)
    assert gated == {"a": ("benign", 0.9, 50), "b": ("malignant", 0.0, 0), "n": ("normal", 1.0, 0)}
    assert two_models.scores(gated) == {
        "lesion_dice": 0.45,
        "normal_dice": 1.0,
        "all_dice": round(1.9 / 3, 4),
        "lesion_scans_emptied": 1,
    }


def test_combinations_read_the_three_evaluations_of_a_seed(tmp_path: Path) -> None:
    for run, rows in {
        "default": [("a", "benign", 0.9, 50), ("n", "normal", 0.0, 30)],
        "lesion_head_lesion_dice": [("a", "benign", 0.6, 20), ("n", "normal", 1.0, 0)],
        "ens_default_combo": [("a", "benign", 0.8, 40), ("n", "normal", 1.0, 0)],
    }.items():
        _write(tmp_path / run / "s3" / "eval_val" / "per_case.csv", rows)
    cases = two_models.combinations(tmp_path, 3, "val")
    assert sorted(cases) == ["default", "ensemble", "gated", "normal_aware"]
    # the default's mask where the detector sees a lesion
    assert two_models.scores(cases["gated"])["lesion_dice"] == 0.9
    assert two_models.scores(cases["gated"])["normal_dice"] == 1.0
    assert two_models.scores(cases["default"])["normal_dice"] == 0.0
