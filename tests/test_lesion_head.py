"""The image-level lesion-present head: its loss, the gate chosen on val, and the files it travels in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mosl_cli.config import EvaluateConfig
from mosl_cli.evaluate import run_evaluate
from mosl_cli.export import run_export
from mosl_cli.finetune import finetune_loss, run_finetune
from mosl_cli.inference import apply_gate, load_ensemble
from mosl_cli.models import build_model, model_from_file, read_metadata, save_weights, split_outputs, weights_metadata
from mosl_cli.postprocess import choose_gate
from tiny import blob_dataset, tiny_finetune_config


def _cases() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """4 lesion scans predicted right, 4 normal scans with a false lesion; presence [8, 1]."""
    target = torch.zeros(8, 1, 16, 16)
    target[:4, :, 4:10, 4:10] = 1
    prob = torch.zeros(8, 1, 16, 16)
    prob[:, :, 4:10, 4:10] = 0.9  # every scan gets a lesion: right on the first 4, false on the rest
    present = torch.tensor([[0.9], [0.8], [0.7], [0.35], [0.15], [0.08], [0.25], [0.02]])
    return prob, present, target


def _soft_dice_per_image(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each image's soft Dice (smoothing 1), written out by hand: ``[B, 1, H, W]`` twice → ``[B]``."""
    return torch.stack([(2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1) for p, t in zip(prob, target, strict=True)])


def test_gate_empties_normal_scans_the_head_calls_lesion_free() -> None:
    prob, present, target = _cases()
    gate, scores = choose_gate(prob, present, target)
    assert gate == 0.3  # the highest gate that keeps all four lesions: every normal scan is emptied
    assert scores["gate=None"] == pytest.approx(0.5) and scores["gate=0.3"] == pytest.approx(1.0)
    gated = apply_gate(prob, present, gate) > 0.5
    assert gated[:4].any(dim=(1, 2, 3)).all() and not gated[4:].any()


def test_gate_never_buys_empty_normals_with_a_missed_lesion() -> None:
    prob, present, target = _cases()
    present[3] = 0.01  # one lesion scan the head misses: any gate above it would erase that lesion
    gate, _ = choose_gate(prob, present, target)
    assert gate is None


def test_head_loss_ignores_normal_scans_in_the_mask_loss() -> None:
    target = torch.zeros(4, 1, 8, 8)
    target[:2, :, 2:5, 2:5] = 1  # two lesion scans, two normal ones
    logits = torch.randn(4, 1, 8, 8, requires_grad=True)
    present = torch.zeros(4, 1, requires_grad=True)
    finetune_loss(logits, target, present, empty_masks=False).backward()
    assert logits.grad is not None and present.grad is not None
    assert logits.grad[2:].abs().sum() == 0 and logits.grad[:2].abs().sum() > 0
    assert (present.grad[:2] < 0).all() and (present.grad[2:] > 0).all()  # pushed up for lesions, down for normals
    logits.grad = None
    finetune_loss(logits, target, present, empty_masks=True).backward()
    assert logits.grad is not None and logits.grad[2:].abs().sum() > 0


def test_without_head_the_loss_is_dice_plus_bce() -> None:
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    prob = torch.sigmoid(logits)
    soft_dice = (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    expected = 1 - soft_dice + torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert finetune_loss(logits, target, None, empty_masks=False) == pytest.approx(float(expected), abs=1e-6)


def test_per_image_dice_is_the_mean_of_each_images_soft_dice() -> None:
    logits, target = torch.randn(3, 1, 8, 8), torch.zeros(3, 1, 8, 8)
    target[0, :, :6, :6] = 1  # a large lesion, a small one, no lesion
    target[1, :, 3:5, 3:5] = 1
    prob = torch.sigmoid(logits)
    per_image = _soft_dice_per_image(prob, target)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    expected = 1 - per_image.mean() + bce
    got = finetune_loss(logits, target, None, empty_masks=False, dice="image")
    assert got == pytest.approx(float(expected), abs=1e-6)
    assert got != pytest.approx(float(finetune_loss(logits, target, None, empty_masks=False)), abs=1e-3)
    # with the lesion head, the normal scan (no lesion) is left out of the mask loss
    present = torch.zeros(3, 1)
    head_bce = torch.nn.functional.binary_cross_entropy_with_logits(present[:, 0], torch.tensor([1.0, 1.0, 0.0]))
    two = 1 - per_image[:2].mean()
    bce_two = torch.nn.functional.binary_cross_entropy_with_logits(logits[:2], target[:2])
    got = finetune_loss(logits, target, present, empty_masks=False, dice="image")
    assert got == pytest.approx(float(two + bce_two + head_bce), abs=1e-6)


def test_lesion_dice_leaves_normal_scans_to_the_bce_term() -> None:
    logits, target = torch.randn(3, 1, 8, 8), torch.zeros(3, 1, 8, 8)
    target[0, :, :6, :6] = 1  # a large lesion, a small one, no lesion
    target[1, :, 3:5, 3:5] = 1
    prob = torch.sigmoid(logits)
    per_image = _soft_dice_per_image(prob[:2], target[:2])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)  # all three scans
    expected = 1 - per_image.mean() + bce
    got = finetune_loss(logits, target, None, empty_masks=True, dice="lesion")
    assert got == pytest.approx(float(expected), abs=1e-6)
    assert got != pytest.approx(float(finetune_loss(logits, target, None, empty_masks=True, dice="image")), abs=1e-3)


def test_finetune_with_head_trains_on_normal_scans_and_stores_its_gate(tmp_path: Path) -> None:
    data = blob_dataset(tmp_path / "ds", n=36)
    out = tmp_path / "run"
    result = run_finetune(tiny_finetune_config(data, out, lesion_head=True))
    classes = json.loads((out / "config.json").read_text())["resolved"]["classes"]
    assert classes.get("normal", 0) > 0 and result.labelled == sum(classes.values())
    meta = read_metadata(out / "model.safetensors")
    assert meta["lesion_head"] is True
    metrics = json.loads((out / "metrics.json").read_text())
    assert "lesion_gate" in metrics and "gate=None" in metrics["lesion_gate_candidates"]
    assert meta.get("lesion_gate") == metrics["lesion_gate"]
    model, _ = model_from_file(out / "model.safetensors")
    assert split_outputs(model(torch.zeros(1, 1, 32, 32)))[1] is not None
    report = run_evaluate(EvaluateConfig(model=str(out), data=str(data), split="test", out=str(tmp_path / "ev")))
    assert "normal" in report.metrics["per_class"]


def test_gated_model_predicts_empty_masks_and_exports_the_same(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", 1, lesion_head=True).eval()
    with torch.no_grad():
        model.classification_head[3].bias.fill_(-10.0)  # the head says "no lesion" everywhere
        model.segmentation_head[0].bias.fill_(10.0)  # the masks say "lesion" everywhere
    path = tmp_path / "gated.safetensors"
    meta = weights_metadata(kind="segmentation", arch="unet", encoder="resnet18", in_channels=1, size=32, scope="x")
    save_weights(path, model.state_dict(), {**meta, "lesion_head": True, "lesion_gate": 0.5})
    images = torch.randint(0, 255, (2, 1, 32, 32), dtype=torch.uint8)
    assert not (load_ensemble(path, torch.device("cpu")).probabilities(images) > 0.5).any()
    save_weights(tmp_path / "open.safetensors", model.state_dict(), {**meta, "lesion_head": True})
    assert (load_ensemble(tmp_path / "open.safetensors", torch.device("cpu")).probabilities(images) > 0.5).all()
    exported = run_export(path, "torchscript", tmp_path / "gated.pt")
    assert exported.max_abs_diff is not None and exported.max_abs_diff <= exported.tolerance
    scripted = torch.jit.load(str(tmp_path / "gated.pt"))
    assert (scripted(images.float()) < 0).all()


def test_log_dice_is_the_mean_of_minus_log_of_each_images_soft_dice() -> None:
    logits, target = torch.randn(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    target[0, :, :6, :6] = 1  # a large lesion and a small one
    target[1, :, 3:5, 3:5] = 1
    prob = torch.sigmoid(logits)
    per_image = _soft_dice_per_image(prob, target)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    got = finetune_loss(logits, target, None, empty_masks=False, dice="log")
    assert got == pytest.approx(float(-torch.log(per_image).mean() + bce), abs=1e-6)
    # a poorly drawn scan counts more than under 1 - Dice: the two losses differ
    assert got != pytest.approx(float(finetune_loss(logits, target, None, empty_masks=False, dice="image")), abs=1e-3)
