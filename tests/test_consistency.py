"""`mosl finetune --semi fixmatch`: weak-to-strong consistency on the train scans outside the label fraction."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from mosl_cli.augment import SegAugment, WeakStrongViews, seeded
from mosl_cli.consistency import (
    Unlabelled,
    consistency_loss,
    pseudo_targets,
    ramped_weight,
    strong_batch,
)
from mosl_cli.data.store import load_dataset
from mosl_cli.errors import UsageError
from mosl_cli.finetune import build_optimizer, label_subset, run_finetune, teacher_pool, train_step
from mosl_cli.models import build_model, read_metadata
from tiny import blob_dataset, tiny_finetune_config


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blob_dataset(tmp_path_factory.mktemp("semi") / "ds", n=48)


def test_pseudo_targets_keep_only_the_sure_pixels() -> None:
    prob = torch.tensor([0.01, 0.06, 0.5, 0.7, 0.96]).view(1, 1, 1, 5)
    target, sure = pseudo_targets(prob, 0.95)
    assert target.flatten().tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert sure.flatten().tolist() == [True, False, False, False, True]


def test_consistency_loss_counts_the_sure_pixels_only() -> None:
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    sure = torch.zeros_like(target, dtype=torch.bool)
    sure[0] = True
    right = (target * 2 - 1) * 10  # confidently right logits
    assert consistency_loss(right, target, torch.zeros_like(sure)) == 0  # nothing sure: no loss
    assert consistency_loss(right, target, sure) < 0.01
    logits = (-right).requires_grad_()  # confidently wrong
    loss = consistency_loss(logits, target, sure)
    assert loss > 1.0
    loss.backward()
    assert logits.grad is not None and (logits.grad[1] == 0).all() and (logits.grad[0] != 0).any()


def test_the_consistency_weight_ramps_up_over_the_first_tenth() -> None:
    assert ramped_weight(2.0, 0, 1000) == 0
    assert ramped_weight(2.0, 50, 1000) == pytest.approx(1.0)
    assert ramped_weight(2.0, 100, 1000) == ramped_weight(2.0, 900, 1000) == 2.0


def test_the_consistency_term_enters_the_step_with_its_weight(data: Path, tmp_path: Path) -> None:
    cfg = tiny_finetune_config(data, tmp_path / "unused", semi="fixmatch", amp=False)
    ds = load_dataset(data)
    model = build_model(cfg.arch, cfg.encoder, ds.channels)
    with torch.no_grad():  # a sure lesion on most pixels, so that there are pseudo-labels to learn
        model.segmentation_head[0].bias.fill_(4.0)
    augment, views = SegAugment(cfg.size), WeakStrongViews(cfg.size)
    idx = torch.tensor(ds.indices("train")[:8])
    losses = []
    for weight in (0.0, 1.0, 2.0):
        net = copy.deepcopy(model).eval()  # eval: BN uses fixed statistics, so the batches do not interact
        unlabelled = Unlabelled(ds.images[idx], net, views, weight)
        with seeded(0, "cpu"):
            loss = train_step(
                net,
                build_optimizer(net, cfg, torch.device("cpu")),
                augment,
                ds.images[idx],
                ds.masks[idx],
                cfg,
                unlabelled,
            )
        losses.append(float(loss))
    term = losses[1] - losses[0]
    assert term > 0 and losses[2] - losses[0] == pytest.approx(2 * term, rel=1e-4)


@pytest.mark.parametrize(("bias", "keep_empty", "sure"), [(8.0, False, True), (-8.0, False, False), (-8.0, True, True)])
def test_scans_the_model_draws_no_lesion_on_teach_nothing_unless_empty_masks(
    data: Path, bias: float, keep_empty: bool, sure: bool
) -> None:
    model = build_model("unet", "resnet18", load_dataset(data).channels).eval()
    with torch.no_grad():  # every pixel a sure lesion (+8) or a sure background (-8)
        model.segmentation_head[0].bias.fill_(bias)
    images = load_dataset(data).images[:6]
    with seeded(0, "cpu"):
        _, target, got = strong_batch(model, WeakStrongViews(32), images, 0.95, False, False, keep_empty=keep_empty)
    assert bool(target.any()) == (bias > 0)
    assert got.float().mean() > 0.9 if sure else not got.any()


def test_a_semi_run_learns_from_the_pool_outside_its_labels(data: Path, tmp_path: Path) -> None:
    result = run_finetune(tiny_finetune_config(data, tmp_path / "semi", label_fraction=0.25, semi="fixmatch"))
    ds = load_dataset(data)
    pool = teacher_pool(ds, 0.25, 0, label_subset(ds, 0.25, seed=0, empty_masks=False))
    resolved = json.loads((result.out / "config.json").read_text())["resolved"]
    assert pool and resolved["semi_unlabelled"] == len(pool)
    assert json.loads((result.out / "metrics.json").read_text())["semi_unlabelled"] == len(pool)
    assert read_metadata(result.out / "model.safetensors")["semi"] == "fixmatch"
    full = run_finetune(tiny_finetune_config(data, tmp_path / "all", semi="fixmatch"))  # every label known
    assert json.loads((full.out / "config.json").read_text())["resolved"]["semi_unlabelled"] == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"semi": "meanteacher"}, "--semi"),
        ({"semi": "fixmatch", "semi_threshold": 0.4}, "--semi-threshold"),
        ({"semi": "fixmatch", "semi_weight": -1.0}, "--semi-weight"),
        ({"semi": "fixmatch", "folds": 2}, "--folds"),
    ],
)
def test_semi_errors_come_before_any_output(data: Path, tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        run_finetune(tiny_finetune_config(data, tmp_path / "a", **options))
    assert not (tmp_path / "a").exists()
