"""Deep supervision: auxiliary heads on the decoder while training, the plain model in the weights file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mosl_cli.deep_supervision import AUX_WEIGHTS, DeepSupervised, pooled_targets
from mosl_cli.errors import MoslError
from mosl_cli.finetune import dice_bce_loss, finetune_loss, run_finetune
from mosl_cli.models import build_model, model_from_file
from tiny import blob_dataset, tiny_finetune_config


def test_auxiliary_outputs_are_the_decoders_half_quarter_and_eighth_scales() -> None:
    net = DeepSupervised(build_model("unet", "resnet18", 1))
    out, aux = net(torch.zeros(2, 1, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    assert [tuple(a.shape) for a in aux] == [(2, 1, 32, 32), (2, 1, 16, 16), (2, 1, 8, 8)]
    out.sum().add(sum(a.sum() for a in aux)).backward()
    assert all(p.grad is not None for p in net.heads.parameters())


def test_pooled_targets_keep_the_lesions_area_fraction() -> None:
    target = torch.zeros(1, 1, 16, 16)
    target[:, :, 4:8, 4:10] = 1
    pooled = pooled_targets(target, [torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4)])
    assert [p.shape[-1] for p in pooled] == [8, 4]
    assert all(float(p.mean()) == pytest.approx(float(target.mean())) for p in pooled)
    assert float(pooled[1].max()) == 1.0 and 0 < float(pooled[1][pooled[1] > 0].min()) < 1


def test_loss_with_aux_is_the_weighted_mean_of_each_scales_term() -> None:
    torch.manual_seed(0)
    target = torch.zeros(2, 1, 16, 16)
    target[0, :, 2:9, 3:12] = 1
    logits = torch.randn(2, 1, 16, 16)
    aux = [torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4), torch.randn(2, 1, 2, 2)]
    terms = [dice_bce_loss(logits, target, per_image=True)] + [
        w * dice_bce_loss(a, t, per_image=True)
        for w, a, t in zip(AUX_WEIGHTS, aux, pooled_targets(target, aux), strict=True)
    ]
    expected = sum(terms) / (1 + sum(AUX_WEIGHTS))
    got = finetune_loss(logits, target, None, empty_masks=False, dice="image", aux=aux)
    assert float(got) == pytest.approx(float(expected), abs=1e-6)
    assert float(got) != pytest.approx(float(finetune_loss(logits, target, None, False, "image")), abs=1e-3)


def test_a_decoder_without_blocks_is_a_clear_error() -> None:
    with pytest.raises(MoslError, match="--deep-supervision"):
        DeepSupervised(torch.nn.Conv2d(1, 1, 3))


def test_finetune_with_deep_supervision_saves_the_plain_model_and_resumes(tmp_path: Path) -> None:
    data = blob_dataset(tmp_path / "ds", n=24)
    out = tmp_path / "run"
    run_finetune(tiny_finetune_config(data, out, deep_supervision=True, epochs=2, checkpoint_every=0))
    assert json.loads((out / "config.json").read_text())["config"]["deep_supervision"] is True
    model, _ = model_from_file(out / "model.safetensors")  # strict load: no auxiliary head in the file
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    with safe_open(str(out / "checkpoint.safetensors"), framework="pt") as fh:
        assert any(k.startswith("aux_heads.") for k in fh.keys())  # the heads resume with the run
    resumed = run_finetune(tiny_finetune_config(data, out, deep_supervision=True, epochs=2, resume=True))
    assert resumed.epochs_run == 2  # the checkpoint, heads included, loaded strictly
