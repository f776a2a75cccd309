"""``run_evaluate`` on a tiny dataset and an untrained resnet18 U-Net at 32 px; its error paths."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from mosl_cli import metrics as M
from mosl_cli.config import EvaluateConfig
from mosl_cli.data.store import write_dataset
from mosl_cli.device import autocast, resolve_device
from mosl_cli.errors import MoslError
from mosl_cli.evaluate import CSV_COLUMNS, run_evaluate
from mosl_cli.models import build_model, model_from_file, normalise, save_weights, weights_metadata

SIZE = 40  # the dataset's stored size, deliberately not the model's 32


def save_model(path: Path, *, kind: str = "segmentation", in_channels: int = 1, size: int = 32) -> Path:
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels)
    scope = "encoder-decoder" if kind == "segmentation" else "encoder"
    meta = weights_metadata(kind=kind, arch="unet", encoder="resnet18", in_channels=in_channels, size=size, scope=scope)
    save_weights(path, model.state_dict(), meta)
    return path


def record(i: int, cls: str, split: str, has_mask: bool = True) -> dict[str, Any]:
    return {
        "id": f"busi/{cls}/{i}",
        "source": "busi",
        "organ": "breast",
        "class": cls,
        "paths": [f"{cls} ({i}).png"],
        "height": SIZE,
        "width": SIZE,
        "has_mask": has_mask,
        "group": f"g{i}",
        "split": split,
    }


def make_dataset(
    out: Path, splits: list[str], classes: list[str], channels: int = 1, with_masks: bool = True
) -> tuple[Path, torch.Tensor, torch.Tensor]:
    n = len(splits)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, channels, SIZE, SIZE), dtype=torch.uint8, generator=g)
    masks = torch.zeros(n, 1, SIZE, SIZE, dtype=torch.uint8)
    for i, cls in enumerate(classes):
        if cls != "normal":
            masks[i, 0, 5 + i : 20 + i, 8 : 25 + i] = 1
    manifest = {
        "size": SIZE,
        "channels": channels,
        "sources": [{"name": "busi", "reader": "busi", "root": "x", "organ": "breast", "count": n}],
        "samples": [record(i, c, s, with_masks) for i, (c, s) in enumerate(zip(classes, splits))],
    }
    write_dataset(out, images, masks if with_masks else None, manifest)
    return out, images, masks


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tmp_path_factory.mktemp("model") / "model.safetensors")


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, torch.Tensor, torch.Tensor]:
    splits = ["train", "test", "test", "val", "test", "train"]
    classes = ["benign", "benign", "malignant", "normal", "normal", "malignant"]
    return make_dataset(tmp_path / "data", splits, classes)


def test_writes_metrics_json_and_per_case_csv(model_file: Path, dataset: tuple, tmp_path: Path) -> None:
    data, images, masks = dataset
    out = tmp_path / "eval"
    result = run_evaluate(
        EvaluateConfig(model=str(model_file), data=str(data), out=str(out), batch_size=2, device="cpu")
    )
    assert result.out == out
    with open(out / "per_case.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [r["id"] for r in rows] == ["busi/benign/1", "busi/malignant/2", "busi/normal/4"]
    assert [int(r["gt_pixels"]) for r in rows] == [int(masks[i].sum()) for i in (1, 2, 4)]
    assert rows[2]["hd95"] == ""  # normal: empty ground truth, hd95 undefined

    doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for key in (
        "format",
        "version",
        "model",
        "model_meta",
        "data",
        "split",
        "size_evaluated",
        "tta",
        "threshold",
        "empty_mask_rule",
        "summary",
        "per_class",
        "lesion",
        "cases",
    ):
        assert key in doc, key
    assert doc["format"] == "mosl-metrics" and doc["version"] == 1
    assert doc["empty_mask_rule"] == M.EMPTY_MASK_RULE
    assert doc["split"] == "test" and doc["size_evaluated"] == SIZE and doc["model_meta"]["size"] == 32
    assert doc["summary"]["n"] == 3 and doc["lesion"]["n"] == 2
    assert set(doc["per_class"]) == {"benign", "malignant", "normal"}
    assert doc["summary"]["hd95_undefined"] >= 1
    assert doc == result.metrics
    groups = [r["group"] for r in result.rows]
    assert groups == ["all", "benign", "malignant", "normal", "lesion"]
    overall = result.rows[0]
    assert overall["n"] == 3 and overall["dice_mean"] == pytest.approx(doc["summary"]["dice"]["mean"])
    assert overall["dice"] == f"{doc['summary']['dice']['mean']:.3f} ± {doc['summary']['dice']['std']:.3f}"
    assert result.rows[3]["hd95"].startswith("–") and "(1 n/a)" in result.rows[3]["hd95"]  # normal: no lesion


def test_predictions_match_an_independent_forward_pass(model_file: Path, dataset: tuple, tmp_path: Path) -> None:
    data, images, masks = dataset
    result = run_evaluate(
        EvaluateConfig(model=str(model_file), data=str(data), out=str(tmp_path / "e"), tta=False, device="cpu")
    )
    model, meta = model_from_file(model_file)
    test = [1, 2, 4]
    with torch.no_grad(), autocast(torch.device("cpu")):  # evaluate's precision: bf16 where the CPU has it
        x = F.interpolate(images[test].float(), size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        prob = torch.sigmoid(model(normalise(x / 255.0, meta["normalisation"])).float())
        prob = F.interpolate(prob, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    pred = prob > 0.5
    expected = M.case_metrics(pred, masks[test] > 0)
    for j, case in enumerate(result.metrics["cases"]):
        assert abs(case["pred_pixels"] - int(expected["pred_pixels"][j])) <= 2  # float noise at the threshold
        assert case["dice"] == pytest.approx(float(expected["dice"][j]), abs=0.02)
        if case["gt_pixels"] == 0:
            assert case["dice"] == (1.0 if case["pred_pixels"] == 0 else 0.0)
            assert case["hd95"] is None


def test_tta_and_other_split(model_file: Path, dataset: tuple, tmp_path: Path) -> None:
    data, _, _ = dataset
    cfg = EvaluateConfig(
        model=str(model_file), data=str(data), split="train", tta=True, out=str(tmp_path / "t"), device="cpu"
    )
    result = run_evaluate(cfg)
    assert result.metrics["tta"] is True
    assert [c["id"] for c in result.metrics["cases"]] == ["busi/benign/0", "busi/malignant/5"]


def test_empty_split_is_a_one_line_error(model_file: Path, tmp_path: Path) -> None:
    data, _, _ = make_dataset(tmp_path / "d", ["train", "train"], ["benign", "normal"])
    out = tmp_path / "eval"
    with pytest.raises(MoslError, match="no labelled images in split 'test'") as info:
        run_evaluate(EvaluateConfig(model=str(model_file), data=str(data), out=str(out), device="cpu"))
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_unlabelled_dataset_is_rejected(model_file: Path, tmp_path: Path) -> None:
    data, _, _ = make_dataset(tmp_path / "d", ["test"], ["normal"], with_masks=False)
    with pytest.raises(MoslError, match="no masks"):
        run_evaluate(EvaluateConfig(model=str(model_file), data=str(data), out=str(tmp_path / "e"), device="cpu"))
    assert not (tmp_path / "e").exists()


def test_channel_mismatch_is_rejected(model_file: Path, tmp_path: Path) -> None:
    data, _, _ = make_dataset(tmp_path / "d", ["test"], ["benign"], channels=3)
    with pytest.raises(MoslError, match="1-channel model but .* 3-channel images"):
        run_evaluate(EvaluateConfig(model=str(model_file), data=str(data), out=str(tmp_path / "e"), device="cpu"))
    assert not (tmp_path / "e").exists()


def test_pretrained_and_foreign_weight_files_are_rejected(dataset: tuple, tmp_path: Path) -> None:
    data, _, _ = dataset
    pretrained = save_model(tmp_path / "pre.safetensors", kind="pretrained")
    with pytest.raises(MoslError, match="pretrained weight file, not a segmentation model"):
        run_evaluate(EvaluateConfig(model=str(pretrained), data=str(data), out=str(tmp_path / "e"), device="cpu"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weight file")
    with pytest.raises(MoslError, match="junk.safetensors"):
        run_evaluate(EvaluateConfig(model=str(junk), data=str(data), out=str(tmp_path / "e"), device="cpu"))
    assert not (tmp_path / "e").exists()


def test_bad_threshold_is_rejected(model_file: Path, dataset: tuple, tmp_path: Path) -> None:
    with pytest.raises(MoslError, match="--threshold"):
        run_evaluate(EvaluateConfig(model=str(model_file), data=str(dataset[0]), threshold=1.0, device="cpu"))


def test_resolve_device() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(MoslError, match="--device"):
        resolve_device("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(MoslError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_evaluation_matches_cpu(model_file: Path, dataset: tuple, tmp_path: Path) -> None:
    data, _, _ = dataset
    cpu = run_evaluate(EvaluateConfig(model=str(model_file), data=str(data), out=str(tmp_path / "c"), device="cpu"))
    gpu = run_evaluate(
        EvaluateConfig(model=str(model_file), data=str(data), out=str(tmp_path / "g"), tta=True, device="cuda")
    )
    assert gpu.metrics["device"].startswith("cuda")
    assert [c["id"] for c in cpu.metrics["cases"]] == [c["id"] for c in gpu.metrics["cases"]]
    assert [c["gt_pixels"] for c in cpu.metrics["cases"]] == [c["gt_pixels"] for c in gpu.metrics["cases"]]
