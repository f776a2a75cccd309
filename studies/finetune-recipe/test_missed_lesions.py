"""``missed_lesions.py``: the scans every run misses, the mean without them, the overlay and the figure."""

from __future__ import annotations

from pathlib import Path

import missed_lesions  # this folder is on sys.path: pytest puts a test file's folder there
import numpy as np
from PIL import Image


def test_overlay_shows_the_reference_green_and_the_prediction_red() -> None:
    scan = np.full((4, 4), 100, dtype=np.uint8)
    ref = np.zeros((4, 4), dtype=bool)
    ref[0, 0] = True
    pred = np.zeros((4, 4), dtype=bool)
    pred[3, 3] = True
    tile = missed_lesions.overlay(scan, ref, pred)
    assert tile.shape == (4, 8, 3)
    assert (tile[:, :4] == 100).all()  # the scan as it is on the left
    assert tuple(tile[0, 4]) == (50, 177, 50)
    assert tuple(tile[3, 7]) == (177, 50, 50)
    assert tuple(tile[1, 5]) == (100, 100, 100)


def test_the_figure_fills_its_last_row_and_is_scaled(tmp_path: Path) -> None:
    tiles = [np.full((4, 8, 3), v, dtype=np.uint8) for v in (10, 20, 30, 40)]  # 4 tiles: two rows of 3
    path = tmp_path / "missed.png"
    missed_lesions.save_figure(tiles, str(path), scale=0.5)
    with Image.open(path) as im:
        assert im.size == (12, 4)  # 3 tiles of 8 px a row, 2 rows of 4 px, halved


def test_only_the_scans_every_run_misses_are_shared() -> None:
    counts, everywhere = missed_lesions.shared_misses({"a": {"x", "y"}, "b": {"y", "z"}, "c": {"y", "x"}})
    assert everywhere == ["y"]
    assert counts == {"x": 2, "y": 3, "z": 1}
    assert missed_lesions.shared_misses({"a": {"x"}})[1] == ["x"]  # one run: all its misses


def test_the_mean_leaves_out_the_named_scans() -> None:
    mean_without = missed_lesions.mean_without
    dice = {"x": 0.0, "y": 0.8, "z": 0.6}
    assert abs(mean_without(dice, []) - 1.4 / 3) < 1e-9
    assert abs(mean_without(dice, ["x"]) - 0.7) < 1e-9
