"""``--decoder-attention scse``: squeeze-and-excitation in the U-Net decoder, rebuilt from the weight file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mosl_cli.errors import MoslError, UsageError
from mosl_cli.finetune import run_finetune
from mosl_cli.models import build_model, model_from_file
from tiny import blob_dataset, tiny_finetune_config


def _scse_blocks(model: torch.nn.Module) -> int:
    return sum(type(m).__name__ == "SCSEModule" for m in model.modules())


def test_scse_adds_attention_to_every_decoder_block() -> None:
    plain = build_model("unet", "resnet18", 1)
    scse = build_model("unet", "resnet18", 1, decoder_attention="scse")
    assert _scse_blocks(plain) == 0
    assert _scse_blocks(scse) == 2 * len(scse.decoder.blocks)  # before and after each block's convolutions
    assert scse(torch.zeros(2, 1, 32, 32)).shape == (2, 1, 32, 32)
    with pytest.raises(MoslError, match="unet or unetplusplus, not 'fpn'"):
        build_model("fpn", "resnet18", 1, decoder_attention="scse")


def test_finetune_with_scse_saves_a_model_that_evaluate_rebuilds(tmp_path: Path) -> None:
    data = blob_dataset(tmp_path / "ds", n=24)
    out = tmp_path / "run"
    run_finetune(tiny_finetune_config(data, out, decoder_attention="scse", epochs=1))
    model, meta = model_from_file(out / "model.safetensors")  # strict load: the attention weights fit
    assert meta["decoder_attention"] == "scse"
    assert _scse_blocks(model) > 0


def test_bad_decoder_attention_is_a_usage_error(tmp_path: Path) -> None:
    data = blob_dataset(tmp_path / "ds", n=24)
    with pytest.raises(UsageError, match="--decoder-attention 'cbam' is not one of none, scse"):
        run_finetune(tiny_finetune_config(data, tmp_path / "a", decoder_attention="cbam"))
    with pytest.raises(UsageError, match="--decoder-attention works with --arch unet or unetplusplus"):
        run_finetune(tiny_finetune_config(data, tmp_path / "b", decoder_attention="scse", arch="fpn"))
