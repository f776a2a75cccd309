"""``mosl export``: ONNX and TorchScript round trips, the smp folder, the model card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mosl_cli.cli import app
from mosl_cli.export import TOLERANCE, model_card, read_torchscript_metadata, run_export
from mosl_cli.models import build_model, model_from_file, normalise, save_weights, weights_metadata

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 1-channel unet/resnet18 segmentation weight file with a finetune-like config beside it."""
    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", 1)
    with torch.no_grad():  # non-trivial BN statistics, so eval mode matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    meta = weights_metadata(
        kind="segmentation",
        arch="unet",
        encoder="resnet18",
        in_channels=1,
        size=64,
        scope="encoder-decoder",
        method="simclr",
        data={"path": "busi", "fingerprint": "abc"},
        seed=0,
        extra={"init": "mosl_pretrain/model.safetensors", "label_fraction": 0.25},
    )
    save_weights(folder / "model.safetensors", model.state_dict(), meta)
    (folder / "config.json").write_text(
        json.dumps({"resolved": {"labelled_train": 91, "init": {"method": "simclr", "scope": "encoder"}}})
    )
    return folder / "model.safetensors"


def _reference(path: Path, x: torch.Tensor) -> torch.Tensor:
    model, meta = model_from_file(path)
    with torch.no_grad():
        return model(normalise(x.to(torch.uint8), meta["normalisation"]))


def test_onnx_round_trip_dynamic_batch_and_size(weights: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    result = run_export(weights, "onnx", tmp_path / "m.onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff <= TOLERANCE
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randint(0, 256, (5, 1, 128, 96)).float()  # a batch and size not used at export
    got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    assert torch.allclose(got, _reference(weights, x), atol=TOLERANCE)
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["normalisation"]) == {"mean": 0.5, "std": 0.25} and props["size"] == "64"


def test_torchscript_round_trip_and_metadata(weights: Path, tmp_path: Path) -> None:
    result = run_export(weights, "torchscript", tmp_path / "m.pt")
    assert result.max_abs_diff is not None and result.max_abs_diff <= TOLERANCE
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randint(0, 256, (2, 1, 96, 128)).float()
    with torch.no_grad():
        assert torch.allclose(scripted(x), _reference(weights, x), atol=TOLERANCE)
    meta = read_torchscript_metadata(tmp_path / "m.pt")
    assert meta["normalisation"] == {"mean": 0.5, "std": 0.25} and meta["mosl"]["arch"] == "unet"


def test_smp_folder_loads_with_from_pretrained(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import segmentation_models_pytorch as smp

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mosl_eval").mkdir()
    (tmp_path / "mosl_eval" / "metrics.json").write_text(
        json.dumps(
            {
                "model": str(weights),
                "split": "test",
                "data": "busi",
                "threshold": 0.5,
                "tta": False,
                "summary": {"n": 10, "dice": {"mean": 0.7123}, "iou": {"mean": 0.6}},
                "per_class": {},
                "lesion": None,
            }
        )
    )
    run_export(weights, "smp", tmp_path / "folder")
    loaded = smp.from_pretrained(str(tmp_path / "folder"))
    original, _ = model_from_file(weights)
    for name, tensor in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    card = (tmp_path / "folder" / "README.md").read_text()
    for fragment in ("label fraction: 0.25", "91 labelled", "simclr", "0.7123", "busi"):
        assert fragment in card, fragment
    assert json.loads((tmp_path / "folder" / "mosl.json").read_text())["size"] == 64


def test_model_card_without_metrics_says_so() -> None:
    meta = weights_metadata(
        kind="segmentation", arch="unet", encoder="resnet18", in_channels=1, size=64, scope="encoder-decoder"
    )
    assert "Not measured yet" in model_card(meta, None, None)


def test_cli_export_json_and_bad_format(weights: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["export", str(weights), "--format", "torchscript", "--out", str(tmp_path / "x.pt"), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["format"] == "torchscript" and doc["max_abs_diff"] <= doc["tolerance"]
    bad = runner.invoke(app, ["export", str(weights), "--format", "tflite"], env={"COLUMNS": "200"})
    assert bad.exit_code == 2 and "onnx" in bad.output
