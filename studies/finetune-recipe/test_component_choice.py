"""``component_choice.py``'s rules: which connected component of a mask each one keeps."""

from __future__ import annotations

import component_choice  # this folder is on sys.path: pytest puts a test file's folder there
import numpy as np


def test_each_rule_keeps_the_component_it_names() -> None:
    keep_one = component_choice.keep_one
    prob = np.zeros((12, 12))
    prob[0:4, 0:4] = 0.6  # large, unsure: the most area and the most mass
    prob[8:10, 8:10] = 0.99  # small, sure: the highest peak and mean
    prob[8, 8] = 1.0
    target = np.zeros((12, 12), dtype=bool)
    target[8:10, 8:10] = True  # the reference lesion is the small one
    large, small = prob == 0.6, prob > 0.9
    assert np.array_equal(keep_one(prob, target, "none"), large | small)
    assert np.array_equal(keep_one(prob, target, "largest"), large)
    assert np.array_equal(keep_one(prob, target, "mass"), large)
    assert np.array_equal(keep_one(prob, target, "peak"), small)
    assert np.array_equal(keep_one(prob, target, "mean"), small)
    assert np.array_equal(keep_one(prob, target, "oracle"), small)


def test_a_mask_of_one_component_or_none_is_left_as_it_is() -> None:
    keep_one = component_choice.keep_one
    target = np.zeros((8, 8), dtype=bool)
    empty = np.zeros((8, 8))
    assert not keep_one(empty, target, "largest").any()
    one = np.zeros((8, 8))
    one[2:5, 2:5] = 0.8
    assert np.array_equal(keep_one(one, target, "oracle"), one > 0.5)
