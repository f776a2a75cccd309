"""The auxiliary benign/malignant output: labelled lesion scans only, the plain model in the weights file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mosl_cli.class_aux import ClassAux, class_aux_loss, class_targets
from mosl_cli.config import FinetuneConfig
from mosl_cli.data.store import load_dataset
from mosl_cli.errors import MoslError, UsageError
from mosl_cli.finetune import check_finetune_options, run_finetune
from mosl_cli.models import build_model, model_from_file
from tiny import blob_dataset, tiny_finetune_config


def test_the_head_reads_the_deepest_encoder_features_and_trains() -> None:
    net = ClassAux(build_model("unet", "resnet18", 1))
    out, logit = net(torch.zeros(2, 1, 64, 64))
    assert out.shape == (2, 1, 64, 64) and logit.shape == (2, 1)
    assert net.head[-1].in_features == 512  # resnet18's last stage
    logit.sum().backward()
    assert all(p.grad is not None for p in net.head.parameters())
    assert net.model.encoder.conv1.weight.grad is not None  # the class term reaches the encoder


def test_a_model_without_an_encoder_is_a_clear_error() -> None:
    with pytest.raises(MoslError, match="--class-aux"):
        ClassAux(torch.nn.Conv2d(1, 1, 3))


def test_only_the_runs_labelled_benign_and_malignant_scans_have_targets(tmp_path: Path) -> None:
    ds = load_dataset(blob_dataset(tmp_path / "ds", n=12))
    classes = [r["class"] for r in ds.records]
    labelled = [0, 1, 2, 4]
    targets = class_targets(ds, labelled)
    for i, cls in enumerate(classes):
        expected = {"benign": 0.0, "malignant": 1.0}.get(cls) if i in labelled else None
        assert math.isnan(float(targets[i])) if expected is None else float(targets[i]) == expected, (i, cls)


def test_the_loss_leaves_out_scans_without_a_target() -> None:
    logit = torch.tensor([[2.0], [-1.0], [5.0]])
    target = torch.tensor([1.0, float("nan"), 0.0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logit[[0, 2], 0], target[[0, 2]])
    assert float(class_aux_loss(logit, target)) == pytest.approx(float(expected))
    none = class_aux_loss(logit, torch.full((3,), float("nan")))
    assert float(none) == 0.0 and none.requires_grad is False  # a batch of normal scans adds nothing


def test_negative_weight_or_deep_supervision_is_a_usage_error() -> None:
    for cfg in (FinetuneConfig(class_aux=-1.0), FinetuneConfig(class_aux=0.5, deep_supervision=True)):
        with pytest.raises(UsageError, match="--class-aux"):
            check_finetune_options(cfg)


def test_finetune_with_the_class_output_saves_the_plain_model_and_resumes(tmp_path: Path) -> None:
    data = blob_dataset(tmp_path / "ds", n=24)
    out = tmp_path / "run"
    run_finetune(tiny_finetune_config(data, out, class_aux=0.5, epochs=2, checkpoint_every=0))
    assert json.loads((out / "config.json").read_text())["config"]["class_aux"] == 0.5
    model, _ = model_from_file(out / "model.safetensors")  # strict load: no class head in the file
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    with safe_open(str(out / "checkpoint.safetensors"), framework="pt") as fh:
        assert any(k.startswith("class_head.") for k in fh.keys())  # the head resumes with the run
    resumed = run_finetune(tiny_finetune_config(data, out, class_aux=0.5, epochs=2, resume=True))
    assert resumed.epochs_run == 2
