"""`mosl pretrain --positives group`: positive pairs from two frames or scans of one group (USCL)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import noise, save, write_video
from mosl_cli.config import PrepareConfig, PretrainConfig
from mosl_cli.data.positives import GroupPartners
from mosl_cli.data.store import read_manifest
from mosl_cli.errors import MoslError
from mosl_cli.prepare import run_prepare
from mosl_cli.pretrain import load_pretrain_data, run_pretrain


def test_partners_stay_in_their_group() -> None:
    groups = ["a", "a", "b", "c", "c", "c"]
    partners = GroupPartners(groups)
    torch.manual_seed(0)
    idx = torch.arange(6).repeat(50)
    got = partners(idx)
    for i, j in zip(idx.tolist(), got.tolist()):
        assert groups[i] == groups[j]
        assert (i == j) == (groups[i] == "b")  # only the lone scan is its own partner
    assert set(got[idx == 3].tolist()) == {4, 5}  # every other member is drawn


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two videos (no patient key in their names) and two still scans, prepared with every frame."""
    root = tmp_path_factory.mktemp("pos") / "clips"
    write_video(root / "clip a.mp4", frames=5, seed=1)
    write_video(root / "clip b.mp4", frames=4, seed=2)
    rng = np.random.default_rng(3)
    for k in range(2):
        save(root / f"still {k}.png", noise(rng, 48, 64))
    out = root.parent / "ds"
    run_prepare(
        PrepareConfig(sources=(str(root),), out=str(out), size=32, workers=1, frames_per_video=None, organ="lung")
    )
    return out


def test_group_positives_pair_frames_of_one_video_only(videos: Path) -> None:
    data = load_pretrain_data(PretrainConfig(data=(str(videos),), include_test=True))
    paths = [s["paths"][0] for s in read_manifest(videos)["samples"]]
    assert len(paths) == 5 + 4 + 2 and data.groups is not None
    torch.manual_seed(1)
    idx = torch.arange(len(paths)).repeat(20)
    for i, j in zip(idx.tolist(), GroupPartners(data.groups)(idx).tolist()):
        assert paths[i] == paths[j], (paths[i], paths[j])  # a frame's partner is a frame of the same video
        assert (i == j) == paths[i].endswith(".png")  # another frame whenever there is one; a still is its own


def test_tiny_run_with_group_positives(videos: Path, tmp_path: Path) -> None:
    cfg = PretrainConfig(
        data=(str(videos),),
        include_test=True,
        method="simclr",
        positives="group",
        encoder="resnet18",
        size=32,
        epochs=1,
        batch_size=4,
        warmup_epochs=0,
        proj_hidden=32,
        proj_dim=16,
        device="cpu",
        out=str(tmp_path / "run"),
    )
    result = run_pretrain(cfg)
    assert math.isfinite(result.final_loss)
    with pytest.raises(MoslError, match="--positives"):
        run_pretrain(PretrainConfig(data=(str(videos),), positives="video", out=str(tmp_path / "x")))
    with pytest.raises(MoslError, match="--dense-weight 0"):
        run_pretrain(
            PretrainConfig(
                data=(str(videos),),
                method="simclr",
                positives="group",
                scope="encoder-decoder",
                dense_weight=1.0,
                out=str(tmp_path / "y"),
            )
        )
