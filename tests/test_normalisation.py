"""``mosl finetune --normalisation image``: each scan standardised, stored with the model, applied by
inference and inside exported graphs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mosl_cli.data.store import load_dataset
from mosl_cli.export import TOLERANCE, run_export
from mosl_cli.finetune import run_finetune
from mosl_cli.inference import forward_probabilities, load_ensemble
from mosl_cli.models import (
    NORMALISATIONS,
    build_model,
    model_from_file,
    model_inputs,
    normalise,
    save_weights,
    weights_metadata,
)
from tiny import blob_dataset, tiny_finetune_config

PER_IMAGE = NORMALISATIONS["image"]


def test_per_image_normalisation_standardises_each_scan_and_ignores_its_gain_and_offset() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 1, 16, 16) * 0.5 + torch.tensor([0.0, 0.2, 0.4])[:, None, None, None]
    y = normalise(x, PER_IMAGE)
    assert y.mean(dim=(1, 2, 3)).abs().max() < 1e-5
    assert torch.allclose(y.std(dim=(1, 2, 3)), torch.ones(3), atol=1e-5)
    assert torch.allclose(normalise(x * 0.6 + 0.1, PER_IMAGE), y, atol=1e-4)  # a darker, brighter-offset scan
    assert not torch.allclose(normalise(x * 0.6 + 0.1), normalise(x), atol=1e-2)  # the fixed one is not invariant
    blank = normalise(torch.full((1, 1, 8, 8), 0.3), PER_IMAGE)
    assert torch.isfinite(blank).all() and blank.abs().max() < 1e-3


def test_finetune_stores_the_normalisation_and_inference_applies_it(tmp_path: Path) -> None:
    data = blob_dataset(tmp_path / "ds", n=24)
    result = run_finetune(tiny_finetune_config(data, tmp_path / "run", normalisation="image"))
    path = result.out / "model.safetensors"
    model, meta = model_from_file(path)
    assert meta["normalisation"] == PER_IMAGE
    images = load_dataset(data).images[:4]
    prob = load_ensemble(path, torch.device("cpu")).probabilities(images)
    model.eval()
    errors = []  # against the stored normalisation, then the fixed one (bf16 forward passes: not bit-equal)
    for norm in (PER_IMAGE, None):
        expected = forward_probabilities(model, model_inputs(images, 32, norm))
        expected = F.interpolate(expected, size=images.shape[-2:], mode="bilinear", align_corners=False)
        errors.append(float((prob - expected).abs().max()))
    assert errors[0] < 0.02 and errors[1] > 10 * errors[0], errors


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_exported_per_image_model_standardises_inside_its_graph(fmt: str, tmp_path: Path) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", 1)
    meta = weights_metadata(
        kind="segmentation",
        arch="unet",
        encoder="resnet18",
        in_channels=1,
        size=64,
        scope="encoder-decoder",
        normalisation=PER_IMAGE,
    )
    save_weights(tmp_path / "model.safetensors", model.state_dict(), meta)
    result = run_export(tmp_path / "model.safetensors", fmt, tmp_path / f"m.{fmt}")
    assert result.max_abs_diff is not None and result.max_abs_diff <= TOLERANCE
    x = torch.randint(0, 256, (3, 1, 64, 96)).float()
    x[1] = x[1] // 2 + 40  # a scan with another gain and offset (whole numbers, as uint8 pixels)
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    else:
        with torch.no_grad():
            got = torch.jit.load(str(tmp_path / "m.torchscript"))(x)
    with torch.no_grad():
        expected = model.eval()(normalise(x.to(torch.uint8), PER_IMAGE))
    assert torch.allclose(got, expected, atol=TOLERANCE)
