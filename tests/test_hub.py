"""``--init imagenet``: one line offline, and a weight file in the Hugging Face cache loads with a key report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mosl_cli import hub
from mosl_cli.cli import app
from tiny import TINY, blob_dataset

runner = CliRunner()


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache in ``tmp_path``, offline (no network wait)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _finetune(data: Path, out: Path, *extra: str):
    args = [
        "finetune",
        "--data",
        str(data),
        *TINY,
        "--out",
        str(out),
        *extra,
    ]
    return runner.invoke(app, args, env={"COLUMNS": "400"})


def test_names_come_from_smp() -> None:
    assert "imagenet" in hub.weight_names("resnet18") and hub.is_weight_name("imagenet")
    assert not hub.is_weight_name("model.safetensors")


def test_offline_is_one_line_exit_1(hf_cache: Path, tmp_path: Path) -> None:
    data = blob_dataset(tmp_path / "ds", n=12, size=32)
    result = _finetune(data, tmp_path / "run", "--init", "imagenet")
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert (
        len(lines) == 1 and lines[0].startswith("error: --init imagenet") and "smp-hub/resnet18.imagenet" in lines[0]
    ), result.output
    assert not (tmp_path / "run").exists()


def test_unknown_name_for_encoder_lists_the_names(tmp_path: Path) -> None:
    data = blob_dataset(tmp_path / "ds", n=12, size=32)
    result = _finetune(data, tmp_path / "run", "--init", "instagram")  # a resnext name, not resnet18's
    assert result.exit_code == 1 and "imagenet, ssl, swsl" in result.output, result.output


def test_cached_weight_file_loads_with_key_report(hf_cache: Path, tmp_path: Path) -> None:
    """A fake ImageNet file where hf_hub_download looks for it: RGB conv1 summed for grey scans."""
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    torch.manual_seed(1)
    rgb = smp.encoders.get_encoder("resnet18", in_channels=3).state_dict()
    rgb["fc.weight"] = torch.zeros(1000, 512)  # a classifier head: dropped
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    snapshot = hf_cache / f"models--{settings['repo_id'].replace('/', '--')}" / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in rgb.items()}, str(snapshot / "model.safetensors"))

    data = blob_dataset(tmp_path / "ds", n=12, size=32)
    result = _finetune(data, tmp_path / "run", "--init", "imagenet", "--epochs", "1", "--lr", "0")
    assert result.exit_code == 0, result.output
    assert "imagenet: " in result.output and "tensors loaded" in result.output
    init = json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]["init"]
    assert init["init"] == "imagenet" and init["source"] == "smp-hub/resnet18.imagenet"
    assert init["load"]["loaded"] == len([k for k in rgb if not k.startswith("fc.")])
    assert init["load"]["adapted"] == ["encoder.conv1.weight"] and init["load"]["unexpected"] == 0

    from mosl_cli.config import FinetuneConfig
    from mosl_cli.finetune import build_finetune_model

    model, _ = build_finetune_model(FinetuneConfig(encoder="resnet18"), "imagenet", 1)
    assert torch.allclose(model.encoder.conv1.weight, rgb["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(model.encoder.layer4[1].bn2.running_var, rgb["layer4.1.bn2.running_var"])
