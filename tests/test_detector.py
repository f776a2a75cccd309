"""``--detector``: a second model decides which scans show a lesion; the segmenter draws the rest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mosl_cli.config import EvaluateConfig, PredictConfig
from mosl_cli.errors import MoslError
from mosl_cli.evaluate import run_evaluate
from mosl_cli.inference import load_ensemble
from mosl_cli.models import build_model, save_weights, weights_metadata
from mosl_cli.predict import run_predict
from tiny import blob_dataset

CPU = torch.device("cpu")


def constant_model(path: Path, logit: float, channels: int = 1, **meta_extra: object) -> Path:
    """A U-Net whose masks are ``logit`` everywhere (+10: lesion everywhere, -10: empty), saved at 32 px."""
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", channels).eval()
    with torch.no_grad():
        model.segmentation_head[0].weight.zero_()
        model.segmentation_head[0].bias.fill_(logit)
    meta = weights_metadata(
        kind="segmentation", arch="unet", encoder="resnet18", in_channels=channels, size=32, scope="encoder-decoder"
    )
    save_weights(path, model.state_dict(), {**meta, **meta_extra})
    return path


def test_the_detector_empties_the_scans_it_calls_normal_and_keeps_the_others(tmp_path: Path) -> None:
    images = torch.randint(0, 255, (3, 1, 40, 40), dtype=torch.uint8)
    segmenter = constant_model(tmp_path / "seg.safetensors", 10.0)
    plain = load_ensemble(segmenter, CPU).probabilities(images)
    assert (plain > 0.99).all()
    says_normal = load_ensemble(segmenter, CPU).with_detector(constant_model(tmp_path / "n.safetensors", -10.0))
    assert (says_normal.probabilities(images) == 0).all()
    says_lesion = load_ensemble(segmenter, CPU).with_detector(str(constant_model(tmp_path / "l.safetensors", 10.0)))
    assert torch.equal(says_lesion.probabilities(images), plain)  # the segmenter's probabilities untouched
    scans = [images[:1], torch.randint(0, 255, (1, 1, 24, 56), dtype=torch.uint8)]  # predict's path: own sizes
    assert all((p == 0).all() for p in says_normal.scan_probabilities(scans))
    assert [tuple(p.shape) for p in says_lesion.scan_probabilities(scans)] == [(1, 1, 40, 40), (1, 1, 24, 56)]


def test_the_detectors_decision_is_its_own_threshold_and_post_processing_rule(tmp_path: Path) -> None:
    detector = load_ensemble(constant_model(tmp_path / "d.safetensors", 0.0, postprocess={"min_area": 0.05}), CPU)
    prob = torch.full((3, 1, 20, 20), 0.3)
    prob[0, :, 2:12, 2:12] = 0.9  # a quarter of the image: a lesion
    prob[1, :, 0:2, 0:2] = 0.9  # 1 % of the image: below the detector's minimum area
    assert detector.finds_lesion(prob).tolist() == [1.0, 0.0, 0.0]


def test_evaluate_and_predict_record_and_apply_the_detector(tmp_path: Path) -> None:
    data = blob_dataset(tmp_path / "ds", n=12)
    segmenter = constant_model(tmp_path / "seg.safetensors", 10.0)
    detector = constant_model(tmp_path / "det.safetensors", -10.0)
    cfg = EvaluateConfig(model=str(segmenter), data=str(data), split="all", out=str(tmp_path / "ev"))
    report = run_evaluate(EvaluateConfig(**{**cfg.__dict__, "detector": str(detector)}))
    assert report.metrics["detector"] == [str(detector)]
    assert all(case["pred_pixels"] == 0 for case in report.metrics["cases"])
    assert report.metrics["per_class"]["normal"]["dice"]["mean"] == 1.0  # every normal scan called normal
    without = json.loads(Path(run_evaluate(cfg).out / "metrics.json").read_text())
    assert without["detector"] is None and all(case["pred_pixels"] > 0 for case in without["cases"])
    scan = tmp_path / "scan.png"
    Image.fromarray(np.full((30, 50), 90, np.uint8)).save(scan)
    out = tmp_path / "mask.png"
    run_predict(PredictConfig(inputs=(str(scan),), model=str(segmenter), detector=str(detector), out=str(out)))
    assert not np.asarray(Image.open(out)).any()


def test_a_detector_for_other_channels_is_a_clear_error(tmp_path: Path) -> None:
    rgb = constant_model(tmp_path / "rgb.safetensors", 0.0, channels=3)
    with pytest.raises(MoslError, match="--detector .*3-channel"):
        load_ensemble(constant_model(tmp_path / "seg.safetensors", 0.0), CPU).with_detector(str(rgb))
