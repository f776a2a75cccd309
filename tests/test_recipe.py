"""The fine-tuning recipe's pieces: post-processing, the weight average, folds, ensembles, augmentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mosl_cli.augment import RandomLowResolution, SegAugment
from mosl_cli.config import EvaluateConfig, FinetuneConfig
from mosl_cli.data.store import load_dataset
from mosl_cli.errors import MoslError
from mosl_cli.evaluate import run_evaluate
from mosl_cli.finetune import fold_indices, run_finetune, run_folds
from mosl_cli.inference import load_ensemble, model_paths, model_probabilities, prepare_model
from mosl_cli.models import build_model, model_from_file, read_metadata, save_weights, weights_metadata
from mosl_cli.postprocess import PostProcess, choose_postprocess, combine, largest_component
from mosl_cli.train import WeightAverage
from tiny import blob_dataset, tiny_finetune_config


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blob_dataset(tmp_path_factory.mktemp("recipe") / "ds", n=60)


def _cfg(data: Path, out: Path, **kw: object) -> FinetuneConfig:
    return tiny_finetune_config(data, out, **kw)


def _masks() -> torch.Tensor:
    m = torch.zeros(3, 1, 40, 40, dtype=torch.bool)
    m[0, 0, 2:12, 2:12] = True  # 100 px lesion ...
    m[0, 0, 30:33, 30:33] = True  # ... and a 9 px speck
    m[1, 0, 20:22, 20:22] = True  # a normal scan with a 4 px false lesion
    return m


def test_default_decoder_is_unetplusplus_from_256_px_and_unet_below_or_with_deep_supervision() -> None:
    assert FinetuneConfig(size=128).arch == "unet"
    assert FinetuneConfig(size=256).arch == FinetuneConfig(size=384).arch == "unetplusplus"
    assert FinetuneConfig(size=256, deep_supervision=True).arch == "unet"
    assert FinetuneConfig(size=256, arch="unet").arch == "unet"
    assert FinetuneConfig(size=64, arch="unetplusplus").arch == "unetplusplus"


def test_largest_component_keeps_one_8_connected_region() -> None:
    m = _masks()
    m[2, 0, 5, 5] = m[2, 0, 6, 6] = m[2, 0, 7, 7] = True  # diagonal touching: one 8-connected component
    kept = largest_component(m)
    assert kept.sum(dim=(1, 2, 3)).tolist() == [100, 4, 3]
    assert kept[0, 0, 2:12, 2:12].all() and not kept[0, 0, 30:33, 30:33].any()
    assert not largest_component(torch.zeros(1, 1, 8, 8, dtype=torch.bool)).any()


def test_min_area_empties_small_masks_only() -> None:
    rule = PostProcess(largest=True, min_area=4.5 / 1600)  # 4 px < 4.5 px ≤ 100 px
    out = rule(_masks())
    assert out.sum(dim=(1, 2, 3)).tolist() == [100, 0, 0]
    assert PostProcess.from_dict(rule.to_dict()) == rule and PostProcess.from_dict(None).is_identity


def test_choose_postprocess_prefers_the_identity_on_ties_and_fixes_false_lesions() -> None:
    target = _masks()
    rule, scores = choose_postprocess(target, target)
    assert rule.is_identity and len(scores) == 28  # perfect predictions: nothing to gain
    target = torch.zeros_like(target)
    target[0, 0, 2:12, 2:12] = True
    rule, _ = choose_postprocess(_masks(), target)  # speck on case 0 and a false lesion on normal case 1
    assert rule.largest and rule.min_area > 0
    assert torch.equal(rule(_masks()), target)


def test_choose_postprocess_never_buys_empty_normals_with_missed_lesions() -> None:
    target = torch.zeros(3, 1, 40, 40, dtype=torch.bool)
    target[0, 0, 2:6, 2:6] = True  # a small lesion (16 px)
    pred = target.clone()
    pred[1, 0, 10:14, 10:14] = True  # a false lesion of the same size on normal scans 1 and 2
    pred[2, 0, 10:14, 10:14] = True
    rule, scores = choose_postprocess(pred, target)
    assert scores["largest=False,min_area=0.016"] > scores["largest=False,min_area=0.0"]  # better on average ...
    assert rule.is_identity  # ... but it would erase the lesion


def test_combine_takes_majority_and_median() -> None:
    rules = [PostProcess(True, 0.001), PostProcess(False, 0.004), PostProcess(True, 0.002)]
    assert combine(rules) == PostProcess(True, 0.002)
    assert combine([]).is_identity


def test_weight_average_follows_the_formula_with_warm_up() -> None:
    model = nn.BatchNorm1d(2)
    average = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.running_mean.fill_(1.0)
    average.update(model, step=0)  # d = min(0.9, 1/10) = 0.1
    torch.testing.assert_close(average.module.weight, torch.full((2,), 0.1 * 1.0 + 0.9 * 2.0))
    torch.testing.assert_close(average.module.running_mean, torch.full((2,), 0.9))
    before = average.module.weight.clone()
    average.update(model, step=1000)  # d = 0.9
    torch.testing.assert_close(average.module.weight, 0.9 * before + 0.1 * 2.0)
    assert average.module.num_batches_tracked == model.num_batches_tracked
    with pytest.raises(MoslError, match="ema-decay"):
        WeightAverage(model, decay=1.0)


def test_folds_are_disjoint_cover_train_and_val_and_never_split_a_group(data: Path) -> None:
    ds = load_dataset(data)
    parts = fold_indices(ds, 3, seed=0)
    flat = [i for p in parts for i in p]
    assert len(flat) == len(set(flat))
    assert set(flat) == set(ds.indices("train", labelled=True)) | set(ds.indices("val", labelled=True))
    fold_of = {i: k for k, p in enumerate(parts) for i in p}
    groups: dict[str, set[int]] = {}
    for i in flat:
        groups.setdefault(ds.records[i]["group"], set()).add(fold_of[i])
    assert all(len(f) == 1 for f in groups.values())
    assert max(map(len, parts)) - min(map(len, parts)) <= 4  # balanced
    assert fold_indices(ds, 3, seed=0) == parts
    with pytest.raises(MoslError, match="folds"):
        fold_indices(ds, 1, seed=0)


def test_near_duplicates_stay_in_one_fold(data: Path, tmp_path: Path) -> None:
    from mosl_cli.data.store import write_dataset

    ds = load_dataset(data)
    manifest = dict(ds.manifest)
    samples = [dict(r) for r in ds.records]
    pool = [i for i in range(len(samples)) if samples[i]["split"] in ("train", "val") and samples[i]["has_mask"]]
    for i in pool[:6]:
        samples[i]["group"] = "duplicates"  # six scans of one group, of several classes
    manifest["samples"] = samples
    write_dataset(tmp_path / "dup", ds.images, ds.masks, manifest)
    dup = load_dataset(tmp_path / "dup")
    parts = fold_indices(dup, 4, seed=3)
    assert sum(set(pool[:6]) <= set(p) for p in parts) == 1


def _member_probabilities(path: Path, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    model, meta = model_from_file(path)
    model = prepare_model(model, meta, path, torch.device("cpu"))  # the ensemble's memory layout: same bf16 kernels
    return model_probabilities(model, images, meta, tta=tta)


def test_folds_train_one_model_each_and_evaluate_averages_them(data: Path, tmp_path: Path) -> None:
    results = run_folds(_cfg(data, tmp_path / "cv", folds=2))
    assert [r.out.name for r in results] == ["fold_0", "fold_1"]
    assert [read_metadata(r.out / "model.safetensors")["fold"] for r in results] == [0, 1]
    assert model_paths(tmp_path / "cv") == [tmp_path / "cv" / f"fold_{k}" / "model.safetensors" for k in (0, 1)]
    ds = load_dataset(data)
    ensemble = load_ensemble(tmp_path / "cv", torch.device("cpu"))
    images = ds.images[:4]
    expected = sum(_member_probabilities(p, images) for p in ensemble.paths) / 2
    torch.testing.assert_close(ensemble.probabilities(images), expected)
    doc = run_evaluate(
        EvaluateConfig(model=str(tmp_path / "cv"), data=str(data), out=str(tmp_path / "e"), device="cpu")
    ).metrics
    assert len(doc["models"]) == 2 and doc["tta"] is True


def test_fold_option_trains_that_fold_only(data: Path, tmp_path: Path) -> None:
    """``--fold 1``: the second of two folds alone, the same model as the full run's fold_1."""
    (result,) = run_folds(_cfg(data, tmp_path / "cv", folds=2, fold=1))
    assert result.out == tmp_path / "cv" / "fold_1" and not (tmp_path / "cv" / "fold_0").exists()
    full = run_folds(_cfg(data, tmp_path / "all", folds=2))
    alone, in_full_run = (load_file(str(r.out / "model.safetensors")) for r in (result, full[1]))
    torch.testing.assert_close(alone, in_full_run)
    with pytest.raises(MoslError, match="fold_0 of its 2 folds has no model.safetensors"):
        model_paths(tmp_path / "cv")  # an ensemble of the folds there would silently average 1 of 2
    assert model_paths(tmp_path / "cv" / "fold_1") == [result.out / "model.safetensors"]


def test_several_model_files_are_one_ensemble(tmp_path: Path) -> None:
    paths = []
    for seed, size in ((0, 32), (1, 48)):  # members may differ in training size
        torch.manual_seed(seed)
        meta = weights_metadata(
            kind="segmentation",
            arch="unet",
            encoder="resnet18",
            in_channels=1,
            size=size,
            scope="encoder-decoder",
            extra={"postprocess": {"largest": True, "min_area": 0.001 * (seed + 1)}},
        )
        paths.append(tmp_path / f"m{seed}.safetensors")
        save_weights(paths[-1], build_model("unet", "resnet18", 1).state_dict(), meta)
    ensemble = load_ensemble([str(p) for p in paths], torch.device("cpu"))
    images = torch.randint(0, 256, (2, 1, 40, 40), dtype=torch.uint8)
    prob = ensemble.probabilities(images, tta=True)
    members = [_member_probabilities(p, images, tta=True) for p in paths]
    torch.testing.assert_close(prob, (members[0] + members[1]) / 2)
    scans = ensemble.scan_probabilities([images[:1], images[1:, :, :30, :20]], tta=True)
    assert [tuple(p.shape) for p in scans] == [(1, 1, 40, 40), (1, 1, 30, 20)]
    torch.testing.assert_close(scans[0], prob[:1])
    assert ensemble.postprocess() == PostProcess(True, 0.001) and ensemble.postprocess(False).is_identity
    (tmp_path / "empty").mkdir()
    with pytest.raises(MoslError, match="no model.safetensors"):
        model_paths(tmp_path / "empty")


def test_finetune_stores_the_rule_chosen_on_val_and_the_selected_weights(data: Path, tmp_path: Path) -> None:
    result = run_finetune(_cfg(data, tmp_path / "run", select="ema"))
    meta = read_metadata(tmp_path / "run" / "model.safetensors")
    assert meta["select"] == "ema" and set(meta["postprocess"]) == {"largest", "min_area"}
    ema = model_from_file(tmp_path / "run" / "model.safetensors")[0].state_dict()
    assert any(not torch.equal(ema[k], v) for k, v in result.model.state_dict().items())  # the average, not the last
    import json

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"val_dice", "val_dice_tta", "val_dice_tta_postprocessed"} <= set(metrics)
    assert metrics["val_dice_tta_postprocessed"] >= metrics["val_dice_tta"] - 1e-9  # the identity is a candidate
    assert result.epochs_run == 2
    last = run_finetune(_cfg(data, tmp_path / "last", select="last", postprocess=False))
    saved = model_from_file(tmp_path / "last" / "model.safetensors")[0].state_dict()
    for k, v in last.model.state_dict().items():
        torch.testing.assert_close(saved[k], v)
    assert "postprocess" not in read_metadata(tmp_path / "last" / "model.safetensors")
    for bad, match in (
        ({"select": "median"}, "--select"),
        ({"augment_strength": "wild"}, "--augment-strength"),
        ({"ema_decay": 1.5}, "--ema-decay"),
    ):
        with pytest.raises(MoslError, match=match):
            run_finetune(_cfg(data, tmp_path / "bad", **bad))


def test_no_empty_masks_leaves_normal_scans_out(data: Path) -> None:
    from mosl_cli.finetune import label_subset

    ds = load_dataset(data)
    kept = label_subset(ds, 1.0, seed=0, empty_masks=False)
    assert kept and all(ds.masks[i].any() for i in kept)
    assert len(kept) < len(label_subset(ds, 1.0, seed=0))


def test_strong_augmentation_keeps_masks_binary_and_aligned() -> None:
    torch.manual_seed(0)
    images = torch.zeros(8, 1, 64, 64, dtype=torch.uint8)
    masks = torch.zeros(8, 1, 64, 64, dtype=torch.uint8)
    images[:, :, 16:48, 16:48] = 255
    masks[:, :, 16:48, 16:48] = 1
    x, m = SegAugment(32, intensity=False)(images, masks)
    assert x.shape == (8, 1, 32, 32) and set(m.unique().tolist()) <= {0.0, 1.0}
    bright = x > x.amin(dim=(2, 3), keepdim=True) + 1.0
    assert (bright == m.bool()).float().mean() > 0.95  # geometry applied to both alike
    low = RandomLowResolution((0.25, 0.25), p=1.0)(torch.rand(2, 1, 16, 16))
    assert low.shape == (2, 1, 16, 16)
    with pytest.raises(MoslError, match="augment-strength"):
        SegAugment(32, strength="wild")
