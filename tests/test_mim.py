"""Masked image modelling (``--method mim``): the mask, the loss on masked pixels only, a falling loss,
and ``mosl pretrain --method mim`` end to end into ``finetune --init``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mosl_cli.cli import app
from mosl_cli.config import PretrainConfig
from mosl_cli.errors import MoslError
from mosl_cli.finetune import build_finetune_model
from mosl_cli.methods import METHODS, PooledBackbone
from mosl_cli.methods.mim import MIM, masked_patch_loss, patchify, random_patch_mask
from mosl_cli.models import build_model, read_metadata
from tiny import blob_dataset, tiny_finetune_config

runner = CliRunner()


def _mim(**hparams: object) -> MIM:
    return MIM(PooledBackbone(build_model("unet", "resnet18", 1), "encoder-decoder"), **hparams)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blob_dataset(tmp_path_factory.mktemp("mim") / "ds", n=16, size=32)


def test_mask_covers_the_ratio_of_patches_and_the_encoder_sees_them_blank() -> None:
    torch.manual_seed(0)
    mask = random_patch_mask(5, 8, 0.6, torch.device("cpu"))
    assert mask.shape == (5, 8, 8) and mask.flatten(1).sum(1).tolist() == [38.0] * 5  # round(0.6 · 64)
    assert not torch.equal(mask[0], mask[1])

    method = _mim(mask_ratio=0.25, patch_size=8)
    seen: list[torch.Tensor] = []
    method.backbone.model.encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    view = torch.randn(3, 1, 32, 32) + 5.0  # no pixel is 0 unless masked
    method(view, torch.randn(3, 1, 32, 32))
    blank = (patchify(seen[0], 8) == 0).all(dim=-1)  # [B, 16] patches that were blanked
    assert blank.sum(1).tolist() == [4, 4, 4]  # 0.25 · 16
    kept = ~blank[:, :, None].expand(-1, -1, 64)
    torch.testing.assert_close(patchify(seen[0], 8)[kept], patchify(view, 8)[kept])  # visible pixels untouched


def test_loss_reads_masked_pixels_only_against_per_patch_normalised_targets() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 1, 16, 16, generator=g), torch.randn(2, 1, 16, 16, generator=g)
    mask = torch.zeros(2, 4, 4)
    mask[:, 1, 2] = mask[0, 3, 0] = 1.0
    pixel = mask.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None].bool()
    loss = masked_patch_loss(pred, target, mask, 4)
    visible_changed = torch.where(pixel, pred, pred + 100 * torch.randn(pred.shape, generator=g))
    assert masked_patch_loss(visible_changed, target, mask, 4) == loss
    masked_changed = torch.where(pixel, pred + 1.0, pred)
    assert masked_patch_loss(masked_changed, target, mask, 4) != loss
    # norm_pix_loss: a per-patch gain and offset of the target changes nothing
    gain = (torch.rand(2, 1, 4, 4, generator=g) * 3 + 0.5).repeat_interleave(4, 2).repeat_interleave(4, 3)
    torch.testing.assert_close(masked_patch_loss(pred, gain * target + 7 * gain, mask, 4), loss, rtol=1e-4, atol=1e-4)
    # the reference: mean squared error over the masked patches of the normalised target
    t = patchify(target, 4)
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    m = mask.flatten(1).bool()
    torch.testing.assert_close(loss, (patchify(pred, 4) - t).pow(2)[m].mean())


def test_thirty_steps_lower_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    method = _mim()
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = torch.rand(8, 2, generator=torch.Generator().manual_seed(1)) * 20 + 6
    x = torch.stack([torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30) for cy, cx in centres])[:, None]
    x = 2 * x - 1 + 0.3 * torch.sin(xx / 3)

    def loss_on_fixed_mask() -> float:
        torch.manual_seed(123)
        with torch.no_grad():
            return float(method(x, x).loss)

    start = loss_on_fixed_mask()
    optimizer = torch.optim.SGD(method.param_groups(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    for step in range(30):
        torch.manual_seed(step)
        out = method(x, x)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        assert out.embedding.shape == (8, 512) and not out.embedding.requires_grad
    assert loss_on_fixed_mask() < 0.7 * start


def test_pretrain_builds_finetunes_decoder_by_size_and_mim_trains_a_unetplusplus() -> None:
    assert PretrainConfig(size=128).arch == "unet" and PretrainConfig(size=256).arch == "unetplusplus"
    torch.manual_seed(0)
    method = MIM(PooledBackbone(build_model("unetplusplus", "resnet18", 1), "encoder-decoder"))
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    out = method(x, x)
    out.loss.backward()
    decoder = method.backbone.model.decoder
    assert torch.isfinite(out.loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())


def test_settings_and_scope_errors() -> None:
    assert METHODS["mim"] is MIM and _mim().hparams["mask_ratio"] == 0.6
    with pytest.raises(MoslError, match="--scope encoder-decoder"):
        MIM(PooledBackbone(build_model("unet", "resnet18", 1), "encoder"))
    with pytest.raises(MoslError, match="--mask-ratio does not apply to --method simclr"):
        METHODS["simclr"](PooledBackbone(build_model("unet", "resnet18", 1)), mask_ratio=0.5)
    with pytest.raises(MoslError, match="--temperature does not apply to --method mim"):
        _mim(temperature=0.1)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--scope", "encoder"], "--method mim trains the decoder too: use --scope encoder-decoder"),
        (["--scope", "encoder-decoder", "--mask-ratio", "1.5"], "--mask-ratio 1.5"),
        (["--scope", "encoder-decoder", "--patch-size", "5"], "--patch-size 5 must divide --size 32"),
        (["--scope", "encoder-decoder", "--dense-weight", "1"], "--dense-weight does not apply to --method mim"),
    ],
)
def test_mim_usage_errors_are_one_line(data: Path, tmp_path: Path, extra: list[str], fragment: str) -> None:
    args = ["pretrain", "--method", "mim", "--data", str(data), "--size", "32", "--out", str(tmp_path / "r"), *extra]
    result = runner.invoke(app, args, env={"COLUMNS": "400"})
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.output
    assert not (tmp_path / "r").exists()


def test_default_pretrain_is_mim_end_to_end_then_finetune_loads_encoder_and_decoder_or_the_encoder_alone(
    data: Path, tmp_path: Path
) -> None:
    """No --method: mim, the best measured arm (studies/pretraining-baseline/README.md), on the whole U-Net."""
    out = tmp_path / "mim"
    args = ["pretrain", "--data", str(data), "--encoder", "resnet18"]  # method: mim, scope: encoder-decoder
    args += ["--size", "32", "--epochs", "2", "--batch-size", "8", "--steps-per-epoch", "2", "--warmup-epochs", "0"]
    result = runner.invoke(app, [*args, "--mask-ratio", "0.5", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output

    metrics = json.loads((out / "metrics.json").read_text())
    cost = metrics["cost"]
    assert cost["device"] == "cpu" and cost["world_size"] == 1 and cost["gpu_minutes"] == 0
    assert cost["wall_minutes"] > 0 and cost["cpu_minutes"] > 0
    hparams = json.loads((out / "config.json").read_text())["resolved"]["hparams"]
    assert hparams["mask_ratio"] == 0.5 and hparams["patch_size"] == 4  # 32 px // 8

    weights = out / "model.safetensors"
    assert read_metadata(weights)["method"] == "mim" and read_metadata(weights)["scope"] == "encoder-decoder"
    names = set(load_file(str(weights)))
    assert {n.split(".")[0] for n in names} == {"encoder", "decoder"}  # no pixel head, no segmentation head
    cfg = tiny_finetune_config(data, tmp_path / "ft", init=str(weights))
    _, init = build_finetune_model(cfg, str(weights), 1)
    assert init["scope"] == "encoder-decoder" and init["load"]["loaded"] == len(names)
    assert init["load"]["unexpected"] == 0

    # --init-part encoder: the same file's encoder alone; the decoder keeps its random start
    file = load_file(str(weights))
    encoder_names = {n for n in names if n.startswith("encoder.")}
    cfg = tiny_finetune_config(data, tmp_path / "ft_enc", init=str(weights), init_part="encoder")
    model, init = build_finetune_model(cfg, str(weights), 1)
    state = model.state_dict()
    assert init["init_part"] == "encoder" and init["load"]["loaded"] == len(encoder_names) > 0
    assert all(torch.equal(state[n], file[n]) for n in encoder_names)
    decoder_convs = [n for n in names - encoder_names if file[n].dim() == 4]
    assert decoder_convs and not any(torch.equal(state[n], file[n]) for n in decoder_convs)
    wrong = [
        "finetune",
        "--data",
        str(data),
        "--init",
        str(weights),
        "--init-part",
        "decoder",
        "--out",
        str(tmp_path / "x"),
    ]
    result = runner.invoke(app, wrong, env={"COLUMNS": "400"})
    assert result.exit_code == 2 and "--init-part 'decoder' is not one of all, encoder" in result.output, result.output
