"""The pipeline on BUSI from ../shared/data (skipped when absent): issue 3's and 4's acceptance runs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file

from mosl_cli.config import EvaluateConfig, FinetuneConfig, PredictConfig, PrepareConfig, PretrainConfig
from mosl_cli.data.store import load_dataset
from mosl_cli.evaluate import run_evaluate
from mosl_cli.finetune import run_finetune
from mosl_cli.models import read_metadata
from mosl_cli.predict import run_predict
from mosl_cli.prepare import run_prepare


@pytest.fixture(scope="module")
def busi(real, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("busi") / "busi"
    run_prepare(PrepareConfig((str(real("busi")),), out=str(out), size=64))
    return out


@pytest.fixture(scope="module")
def simsiam_weights(busi: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mosl_cli.pretrain import run_pretrain

    out = tmp_path_factory.mktemp("pre") / "simsiam"
    run_pretrain(
        PretrainConfig(
            method="simsiam",
            data=(str(busi),),
            encoder="resnet18",
            size=32,
            epochs=1,
            batch_size=64,
            device="cpu",
            out=str(out),
        )
    )
    return out / "model.safetensors"


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_pretrain_each_method_on_busi(busi: Path, tmp_path: Path, method: str) -> None:
    from mosl_cli.pretrain import run_pretrain

    cfg = PretrainConfig(
        method=method,
        data=(str(busi),),
        encoder="resnet18",
        size=32,
        epochs=1,
        batch_size=64,
        device="cpu",
        out=str(tmp_path / "a"),
    )
    first = run_pretrain(cfg)
    meta = read_metadata(tmp_path / "a" / "model.safetensors")
    assert meta["method"] == method and meta["kind"] == "pretrained"
    assert all(k.startswith("encoder.") for k in load_file(str(tmp_path / "a" / "model.safetensors")))
    again = run_pretrain(PretrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "b")}))
    assert first.final_loss == again.final_loss


def test_simsiam_encoder_decoder_on_busi(busi: Path, simsiam_weights: Path, tmp_path: Path) -> None:
    from mosl_cli.pretrain import run_pretrain

    assert read_metadata(simsiam_weights)["method"] == "simsiam"
    run_pretrain(
        PretrainConfig(
            method="simsiam",
            data=(str(busi),),
            encoder="resnet18",
            size=32,
            epochs=1,
            batch_size=64,
            scope="encoder-decoder",
            device="cpu",
            out=str(tmp_path / "ed"),
        )
    )
    names = load_file(str(tmp_path / "ed" / "model.safetensors")).keys()
    assert any(n.startswith("decoder.") for n in names)


@pytest.mark.parametrize("init", ["simsiam", "none"])
def test_finetune_evaluate_predict_on_busi(busi: Path, simsiam_weights: Path, real, tmp_path: Path, init: str) -> None:  # type: ignore[no-untyped-def]
    ft = tmp_path / "ft"
    result = run_finetune(
        FinetuneConfig(
            data=str(busi),
            init=str(simsiam_weights) if init == "simsiam" else "none",
            encoder="resnet18",
            size=32,
            epochs=1,
            steps_per_epoch=3,
            device="cpu",
            out=str(ft),
        )
    )
    if init == "simsiam":
        assert result.init["load"]["loaded"] > 0 and result.init["method"] == "simsiam"
    run_evaluate(
        EvaluateConfig(
            model=str(ft / "model.safetensors"), data=str(busi), split="test", out=str(tmp_path / "ev"), device="cpu"
        )
    )
    rows = list(csv.DictReader(open(tmp_path / "ev" / "per_case.csv")))
    assert len(rows) == len(load_dataset(busi).indices("test", labelled=True))
    scan = real("busi") / "Dataset_BUSI_with_GT" / "malignant" / "malignant (1).png"
    [predicted] = run_predict(
        PredictConfig(
            inputs=(str(scan),), model=str(ft / "model.safetensors"), out=str(tmp_path / "m.png"), device="cpu"
        )
    )
    assert Image.open(tmp_path / "m.png").size == Image.open(scan).size
    assert (predicted.width, predicted.height) == Image.open(scan).size
