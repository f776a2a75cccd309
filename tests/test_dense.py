"""The pixel-level loss: view correspondence from the crop geometry, the point InfoNCE against a
plain loop, the decoder receiving gradient, and `mosl pretrain --dense-weight` end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from mosl_cli.augment import Correspondence, SSLViews, sample_correspondence, seeded
from mosl_cli.config import PretrainConfig
from mosl_cli.errors import MoslError
from mosl_cli.methods import METHODS, PooledBackbone
from mosl_cli.methods.dense import point_infonce, sample_features
from mosl_cli.models import build_model, read_metadata
from mosl_cli.pretrain import run_pretrain
from tiny import blob_dataset

CPU = torch.device("cpu")


def _smooth_images(n: int, side: int) -> torch.Tensor:
    """uint8 ``[n, 1, side, side]`` of smooth random texture (bilinear resampling barely changes it)."""
    g = torch.Generator().manual_seed(0)
    x = F.avg_pool2d(torch.rand(n, 1, side + 16, side + 16, generator=g), 17, 1)
    x = (x - x.amin()) / (x.amax() - x.amin())
    return (x * 255).round().to(torch.uint8)


def test_matched_points_show_the_same_content_in_both_views() -> None:
    views = SSLViews(64, 1, "ultrasound")
    views.pipeline = nn.Sequential(*list(views.pipeline)[:2])  # crop and flip only: no intensity change
    with seeded(2, CPU):
        v1, v2 = views(_smooth_images(16, 64))
        points = views.correspondence(16, CPU)
    assert points.grid1.shape == points.grid2.shape == (16, 16, 2) and points.valid.shape == (16,)
    flips = views.pipeline[1]._params["batch_prob"]
    assert 0 < int(flips.sum()) < 32  # some views flipped, some not: both branches are checked
    valid = points.valid.repeat_interleave(16)
    a, b = sample_features(v1, points.grid1), sample_features(v2, points.grid2)
    matched = (a - b)[valid].abs().mean()
    mirrored = (a - sample_features(v2, points.grid2 * torch.tensor([-1.0, 1.0])))[valid].abs().mean()
    assert matched < 0.05 < 0.3 < mirrored  # a wrong flip (or box) mapping would not match


def test_correspondence_geometry_by_hand() -> None:
    boxes1 = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    boxes2 = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    torch.manual_seed(0)
    points = sample_correspondence(boxes1, torch.tensor([1.0, 0.0]), boxes2, torch.tensor([0.0, 0.0]), 50)
    assert points.valid.tolist() == [True, False]  # the second pair of crops does not overlap
    # overlap x ∈ [5, 10]: view 1 (flipped) sees it at u ∈ [0, 0.5] → grid [-1, 0]; view 2 at u ∈ [0, 0.5]
    x1, x2 = points.grid1[0, :, 0], points.grid2[0, :, 0]
    assert (x1 >= -1).all() and (x1 <= 1e-6).all() and (x2 <= 1e-6).all()
    torch.testing.assert_close(x1, -1.0 - x2)  # input x = 5 + 5u: view 1 at 1 - 2·x/10, view 2 at 2·(x-5)/10 - 1
    torch.testing.assert_close(points.grid1[0, :, 1], points.grid2[0, :, 1])  # same rows in both


def test_point_infonce_matches_a_plain_loop() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = F.normalize(torch.randn(6, 4, generator=g), dim=1), F.normalize(torch.randn(6, 4, generator=g), dim=1)
    valid = torch.tensor([True, True, False, True, True, False])
    t = 0.2
    ok = [i for i in range(6) if valid[i]]
    total = 0.0
    for i in ok:
        for anchor, keys in ((z1[i], z2), (z2[i], z1)):
            logits = [float(anchor @ keys[j]) / t for j in ok]
            total += -(float(anchor @ keys[i]) / t - math.log(sum(math.exp(v) for v in logits)))
    assert point_infonce(z1, z2, valid, t).item() == pytest.approx(total / (2 * len(ok)), rel=1e-5)
    assert point_infonce(z1, z2, torch.zeros(6, dtype=torch.bool), t).item() == 0.0


@pytest.mark.parametrize("name", ["simclr", "simsiam"])  # simsiam builds its own optimiser groups
def test_dense_loss_reaches_the_decoder(name: str) -> None:
    torch.manual_seed(0)
    method = METHODS[name](PooledBackbone(build_model("unet", "resnet18", 1), "encoder-decoder"))
    method.add_dense_loss(1.0)
    optimised = {id(p) for group in method.param_groups() for p in group["params"]}
    assert all(id(p) in optimised for p in method.dense.parameters())
    v1, v2 = torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)
    grid = torch.rand(4, 8, 2) * 2 - 1
    points = Correspondence(grid, grid, torch.ones(4, dtype=torch.bool))
    own = method(v1, v2).loss  # without points: the method's own loss
    with_dense = method(v1, v2, points).loss
    assert with_dense.item() > own.item()
    method.zero_grad()
    (with_dense - own).backward()  # the pixel term alone
    last_decoder_weight = list(method.backbone.model.decoder.parameters())[-1]
    assert last_decoder_weight.grad is not None and last_decoder_weight.grad.abs().sum() > 0


def test_dense_loss_needs_the_decoder_and_a_weight() -> None:
    method = METHODS["simclr"](PooledBackbone(build_model("unet", "resnet18", 1), "encoder"))
    with pytest.raises(MoslError, match="--scope encoder-decoder"):
        method.add_dense_loss(1.0)
    with pytest.raises(MoslError, match="negative"):
        method.add_dense_loss(-1.0)


def test_pretrain_with_dense_weight(tmp_path: Path) -> None:
    data = blob_dataset(tmp_path / "ds", n=24)
    base = dict(
        data=(str(data),),
        encoder="resnet18",
        size=32,
        epochs=1,
        batch_size=8,
        warmup_epochs=0,
        proj_hidden=64,
        proj_dim=32,
        device="cpu",
        method="simclr",
        scope="encoder-decoder",
    )
    plain = run_pretrain(PretrainConfig(**base, out=str(tmp_path / "plain")))  # type: ignore[arg-type]
    dense = run_pretrain(PretrainConfig(**base, dense_weight=1.0, out=str(tmp_path / "dense")))  # type: ignore[arg-type]
    assert math.isfinite(dense.final_loss) and dense.final_loss > plain.final_loss  # the pixel term is added
    weights = tmp_path / "dense" / "model.safetensors"
    assert read_metadata(weights)["dense_weight"] == 1.0
    assert any(n.startswith("decoder.") for n in load_file(str(weights)))
    with pytest.raises(MoslError, match="--scope encoder-decoder"):
        run_pretrain(PretrainConfig(**{**base, "scope": "encoder"}, dense_weight=1.0, out=str(tmp_path / "bad")))  # type: ignore[arg-type]
