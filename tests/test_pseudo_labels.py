"""`mosl finetune --teacher`: the teacher labels the train scans outside the label fraction, and only those."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mosl_cli.augment import UNSURE_PIXEL
from mosl_cli.data.store import load_dataset
from mosl_cli.errors import MoslError, UsageError
from mosl_cli.finetune import dice_bce_loss, label_subset, run_finetune, share_weights
from mosl_cli.fsutil import read_jsonl
from mosl_cli.inference import load_ensemble
from mosl_cli.models import read_metadata, save_weights
from mosl_cli.pseudo_labels import most_confident, teacher_masks, unlabelled_pool
from mosl_cli.train import DistInfo, epoch_indices
from tiny import blob_dataset, tiny_finetune_config

HEAD_BIAS = "segmentation_head.0.bias"  # smp's last 1×1 convolution: its bias sets every pixel's logit offset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blob_dataset(tmp_path_factory.mktemp("pl") / "ds", n=48)


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny fine-tuned model (its post-processing rule switched off, so a bias alone decides its masks)."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    run_finetune(tiny_finetune_config(data, out, postprocess=False))
    return out / "model.safetensors"


def _biased(trained: Path, out: Path, bias: float) -> Path:
    """A copy of ``trained`` whose mask logits are shifted by ``bias``: +50 draws a lesion on every pixel."""
    state = load_file(str(trained))
    state[HEAD_BIAS] = torch.full_like(state[HEAD_BIAS], bias)
    save_weights(out, state, read_metadata(trained))
    return out


def test_the_pool_is_the_train_split_outside_the_labelled_scans(data: Path) -> None:
    ds = load_dataset(data)
    labelled = label_subset(ds, 0.25, seed=0, empty_masks=False)
    pool = unlabelled_pool(ds, labelled)
    assert pool and not set(pool) & set(labelled)
    assert set(pool) | set(labelled) == set(ds.indices("train"))
    assert all(ds.records[i]["split"] == "train" for i in pool)


def test_teacher_masks_are_the_teachers_not_the_labels(data: Path, trained: Path, tmp_path: Path) -> None:
    ds = load_dataset(data)
    pool = unlabelled_pool(ds, label_subset(ds, 0.25, seed=0))
    assert any(ds.records[i]["class"] == "normal" for i in pool)  # scans whose true mask is empty
    full = teacher_masks(str(_biased(trained, tmp_path / "full.safetensors", 50.0)), ds, pool, torch.device("cpu"))
    assert full.indices == pool and full.dropped == 0
    assert full.masks.shape == (len(pool), 1, *ds.images.shape[-2:]) and full.masks.dtype == torch.uint8
    assert bool((full.masks == 1).all())  # a lesion everywhere, normal scans included: no label was read
    empty_teacher = str(_biased(trained, tmp_path / "empty.safetensors", -50.0))
    empty = teacher_masks(empty_teacher, ds, pool, torch.device("cpu"))
    assert empty.indices == [] and empty.dropped == len(pool) and empty.masks.shape[0] == 0
    kept = teacher_masks(empty_teacher, ds, pool, torch.device("cpu"), keep_empty=True)
    assert kept.indices == pool and not bool(kept.masks.any())


def test_most_confident_keeps_the_top_fraction_of_the_lesion_masks() -> None:
    score = torch.tensor([0.9, 0.2, 0.8, 0.99, 0.5, 0.7])
    lesion = torch.tensor([True, True, True, False, True, True])  # entry 3 has no mask: never chosen
    assert most_confident(score, lesion, 0.4).tolist() == [True, False, True, False, False, False]  # ceil(2.0)
    assert most_confident(score, lesion, 0.5).tolist() == [True, False, True, False, False, True]  # ceil(2.5)
    assert most_confident(score, lesion, 1.0).tolist() == lesion.tolist()
    assert most_confident(torch.ones(4), torch.ones(4, dtype=torch.bool), 0.5).tolist() == [True, True, False, False]


def test_teacher_keep_drops_the_unsure_masks(data: Path, trained: Path) -> None:
    ds = load_dataset(data)
    pool = unlabelled_pool(ds, label_subset(ds, 0.25, seed=0))
    every = teacher_masks(str(trained), ds, pool, torch.device("cpu"))
    half = teacher_masks(str(trained), ds, pool, torch.device("cpu"), keep_fraction=0.5)
    assert len(every.indices) >= 4 and every.unsure == 0
    assert set(half.indices) < set(every.indices) and len(half.indices) == -(-len(every.indices) // 2)
    assert half.unsure == len(every.indices) - len(half.indices) and half.dropped == every.dropped
    rows = {i: k for k, i in enumerate(every.indices)}
    assert torch.equal(half.masks, every.masks[[rows[i] for i in half.indices]])  # the same masks, fewer of them


def test_teacher_sure_marks_the_pixels_between_1_minus_p_and_p_and_keeps_the_same_scans(
    data: Path, trained: Path
) -> None:
    ds = load_dataset(data)
    pool = unlabelled_pool(ds, label_subset(ds, 0.25, seed=0))
    plain = teacher_masks(str(trained), ds, pool, torch.device("cpu"), keep_fraction=0.7)
    marked = teacher_masks(str(trained), ds, pool, torch.device("cpu"), keep_fraction=0.7, sure=0.9)
    assert marked.indices == plain.indices and marked.unsure == plain.unsure
    unsure = marked.masks == UNSURE_PIXEL
    assert bool(unsure.any()) and not bool((plain.masks == UNSURE_PIXEL).any())
    assert torch.equal(marked.masks[~unsure], plain.masks[~unsure])  # every other pixel as before
    prob = load_ensemble(str(trained), torch.device("cpu")).probabilities(ds.images[marked.indices], tta=True)
    band = (prob > 0.1) & (prob < 0.9)
    assert torch.equal(band, unsure)


def test_pixels_without_a_label_add_nothing_to_the_loss() -> None:
    torch.manual_seed(0)
    target = (torch.rand(3, 1, 16, 16) > 0.6).float()
    logits = torch.randn(3, 1, 16, 16)
    unsure = torch.zeros_like(target, dtype=torch.bool)
    unsure[:, :, :6] = True
    marked = torch.where(unsure, -1.0, target)
    other = torch.where(unsure, torch.randn_like(logits) * 10, logits)  # other logits where there is no label
    for per_image in (False, True):
        loss = dice_bce_loss(logits, marked, per_image=per_image)
        assert float(loss) == pytest.approx(float(dice_bce_loss(other, marked, per_image=per_image)), abs=1e-6)
        assert float(loss) != pytest.approx(float(dice_bce_loss(logits, target, per_image=per_image)), abs=1e-3)


def test_a_student_trains_on_its_labels_and_the_teachers_masks(data: Path, trained: Path, tmp_path: Path) -> None:
    teacher = _biased(trained, tmp_path / "full.safetensors", 50.0)
    ds = load_dataset(data)
    lesion = label_subset(ds, 0.25, seed=0, empty_masks=False)  # what the recipe trains on
    labelled = label_subset(ds, 0.25, seed=0)  # the labels the run has: normal scans' empty masks too
    assert set(lesion) < set(labelled)
    result = run_finetune(tiny_finetune_config(data, tmp_path / "student", label_fraction=0.25, teacher=str(teacher)))
    resolved = json.loads((tmp_path / "student" / "config.json").read_text())["resolved"]
    assert result.labelled == resolved["labelled_train"] == len(lesion)
    pool = len(unlabelled_pool(ds, labelled))  # every mask drawn (a lesion everywhere); the surest 70 % kept
    assert resolved["pseudo_labelled"] == -(-7 * pool // 10) and resolved["pseudo_dropped_empty"] == 0
    assert resolved["pseudo_labelled"] + resolved["pseudo_dropped_unsure"] == pool
    assert read_metadata(tmp_path / "student" / "model.safetensors")["teacher"] == str(teacher)
    full = run_finetune(tiny_finetune_config(data, tmp_path / "all", teacher=str(teacher)))  # every label known
    assert json.loads((full.out / "config.json").read_text())["resolved"]["pseudo_labelled"] == 0
    unsure = run_finetune(  # a student that leaves its teacher's unsure pixels out of the loss
        tiny_finetune_config(data, tmp_path / "sure", label_fraction=0.25, teacher=str(trained), teacher_sure=0.9)
    )
    assert read_metadata(unsure.out / "model.safetensors")["teacher_sure"] == 0.9
    assert all(math.isfinite(record["loss"]) for record in read_jsonl(unsure.out / "log.jsonl"))


def test_teacher_errors_come_before_any_output(data: Path, tmp_path: Path) -> None:
    with pytest.raises(MoslError, match="nope"):
        run_finetune(tiny_finetune_config(data, tmp_path / "a", teacher=str(tmp_path / "nope.safetensors")))
    assert not (tmp_path / "a").exists()
    for keep, teacher in ((0.0, "x"), (1.5, "x"), (0.0, None)):
        with pytest.raises(UsageError, match="--teacher-keep"):
            run_finetune(tiny_finetune_config(data, tmp_path / "c", teacher=teacher, teacher_keep=keep))
    assert not (tmp_path / "c").exists()
    for sure, supervised in ((0.4, False), (1.0, False), (0.9, True)):
        with pytest.raises(UsageError, match="--teacher-sure"):
            run_finetune(
                tiny_finetune_config(data, tmp_path / "d", teacher="x", teacher_sure=sure, deep_supervision=supervised)
            )
    assert not (tmp_path / "d").exists()
    with pytest.raises(UsageError, match="--folds"):
        run_finetune(tiny_finetune_config(data, tmp_path / "b", teacher="x", folds=2))


def test_labelled_share_sets_the_labelled_scans_share_of_the_draws() -> None:
    indices = list(range(100, 140))  # 10 labelled scans among 40
    labelled = list(range(100, 110))
    weights = share_weights(indices, labelled, 0.5)
    assert weights is not None and weights.shape == (40,)
    assert abs(float(weights[:10].sum()) - 0.5) < 1e-6 and abs(float(weights.sum()) - 1.0) < 1e-6
    order = epoch_indices(indices, 4000, 0, 0, DistInfo(), torch.device("cpu"), weights)
    drawn = float((order < 110).float().mean())  # the share of draws that are labelled scans
    assert 0.45 < drawn < 0.55  # against 0.25 in proportion to the counts
    assert set(order.tolist()) <= set(indices)
    assert share_weights(indices, labelled, None) is None  # in proportion: shuffled passes, as before
    assert share_weights(labelled, labelled, 0.5) is None  # no teacher-labelled scan to mix in


def test_labelled_share_needs_a_teacher_and_a_share_in_0_1(data: Path, tmp_path: Path) -> None:
    for share, teacher in ((0.5, None), (0.0, "x"), (1.0, "x")):
        with pytest.raises(UsageError, match="--labelled-share"):
            run_finetune(tiny_finetune_config(data, tmp_path / "c", teacher=teacher, labelled_share=share))
    assert not (tmp_path / "c").exists()
