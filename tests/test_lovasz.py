"""The Lovász hinge (``mosl finetune --dice lovasz``) against its definition, written out by hand."""

from __future__ import annotations

import pytest
import torch

from mosl_cli.finetune import finetune_loss
from mosl_cli.lovasz import lovasz_hinge


def _jaccard_loss(wrong: set[int], positives: set[int]) -> float:
    """1 - IoU when the pixels ``wrong`` are mispredicted and ``positives`` are the reference's."""
    union = positives | wrong
    return 1.0 - len(positives - wrong) / len(union) if union else 0.0


def _lovasz_by_definition(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The Lovász extension of the Jaccard loss at the hinge errors of one image, pixel by pixel."""
    x, y = logits.flatten().tolist(), target.flatten().tolist()
    errors = [max(0.0, 1.0 - xi * (2 * yi - 1)) for xi, yi in zip(x, y, strict=True)]
    positives = {i for i, yi in enumerate(y) if yi == 1}
    order = sorted(range(len(x)), key=lambda i: -(1.0 - x[i] * (2 * y[i] - 1)))
    total, before = 0.0, 0.0
    for k in range(len(order)):
        after = _jaccard_loss(set(order[: k + 1]), positives)
        total += errors[order[k]] * (after - before)
        before = after
    return total


def test_lovasz_hinge_matches_its_definition_on_each_image() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 4, 5) * 2
    target = (torch.rand(3, 1, 4, 5) > 0.6).float()
    target[2] = 0  # a scan without a lesion
    got = lovasz_hinge(logits, target)
    assert got.shape == (3,)
    for b in range(3):
        assert float(got[b]) == pytest.approx(_lovasz_by_definition(logits[b], target[b]), abs=1e-5)


def test_lovasz_hinge_is_zero_when_every_pixel_is_right_by_the_margin_and_one_when_all_logits_are_zero() -> None:
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:5, 2:5] = 1
    assert lovasz_hinge(target * 4 - 2, target).tolist() == [0.0, 0.0]
    assert lovasz_hinge(torch.zeros(2, 1, 8, 8), target).tolist() == pytest.approx([1.0, 1.0])


def test_unlabelled_pixels_add_nothing_to_the_lovasz_hinge() -> None:
    torch.manual_seed(1)
    logits, target = torch.randn(2, 1, 6, 6), (torch.rand(2, 1, 6, 6) > 0.5).float()
    labelled = torch.ones_like(target, dtype=torch.bool)
    labelled[:, :, :2] = False  # the first two rows carry no label
    other = logits.clone()
    other[:, :, :2] = torch.randn(2, 1, 2, 6) * 5  # so what the model says there cannot matter
    assert torch.allclose(lovasz_hinge(logits, target, labelled), lovasz_hinge(other, target, labelled))
    kept = [_lovasz_by_definition(logits[b, :, 2:], target[b, :, 2:]) for b in range(2)]
    assert lovasz_hinge(logits, target, labelled).tolist() == pytest.approx(kept, abs=1e-5)


def test_dice_lovasz_is_the_mean_lovasz_hinge_plus_bce_and_has_a_gradient() -> None:
    torch.manual_seed(2)
    logits = torch.randn(4, 1, 8, 8, requires_grad=True)
    target = (torch.rand(4, 1, 8, 8) > 0.7).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    got = finetune_loss(logits, target, None, empty_masks=False, dice="lovasz")
    assert float(got.detach()) == pytest.approx(float((lovasz_hinge(logits, target).mean() + bce).detach()), abs=1e-6)
    got.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
