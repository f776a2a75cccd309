"""``mosl evaluate --pred DIR --ref DIR``: pairing by scan name, classes from sub-folders, merged
masks, figures checked against numpy, and one-line refusals that write nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import box_mask, noise, save
from mosl_cli.cli import app
from mosl_cli.config import EvaluateFolderConfig
from mosl_cli.errors import MoslError
from mosl_cli.evaluate_folder import index_masks, run_evaluate_folder

H, W = 60, 80


def _box(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    return box_mask(H, W, y0, x0, y1, x1) > 0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 if not a.any() and not b.any() else 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """A BUSI-like reference tree (scans beside their masks, a second mask of one lesion) and a flat
    folder of predictions as ``mosl predict --overlay`` writes them (0/1 values, overlays beside)."""
    rng = np.random.default_rng(0)
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    truth: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cases = {
        "benign (1)": ("benign", _box(10, 10, 30, 40), _box(12, 10, 32, 40)),
        "benign (2)": ("benign", _box(20, 20, 40, 60), np.zeros((H, W), bool)),  # a missed lesion
        "malignant (1)": ("malignant", _box(5, 5, 50, 70), _box(5, 5, 50, 35)),
        "normal (1)": ("normal", np.zeros((H, W), bool), _box(0, 0, 4, 4)),  # a false lesion
    }
    for name, (cls, gt, pr) in cases.items():
        save(ref / cls / f"{name}.png", noise(rng, H, W))
        save(ref / cls / f"{name}_mask.png", gt.astype(np.uint8) * 255)
        save(pred / f"{name}_mask.png", pr.astype(np.uint8))  # 0/1, as --mask-values 0-1 writes
        save(pred / f"{name}_overlay.png", noise(rng, H, W, rgb=True))
        truth[name] = (gt, pr)
    second = _box(40, 50, 55, 75)  # BUSI's _mask_1: another lesion of the same scan
    save(ref / "benign" / "benign (1)_mask_1.png", second.astype(np.uint8) * 255)
    truth["benign (1)"] = (truth["benign (1)"][0] | second, truth["benign (1)"][1])
    save(pred / "extra_mask.png", np.zeros((H, W), np.uint8))  # no reference: counted, left out
    return pred, ref, truth


def test_scores_each_reference_scan_against_its_prediction(folders, tmp_path: Path) -> None:
    pred, ref, truth = folders
    out = tmp_path / "eval"
    result = run_evaluate_folder(EvaluateFolderConfig(pred=str(pred), ref=str(ref), out=str(out)))
    doc = json.loads((out / "metrics.json").read_text())
    by_id = {c["id"]: c for c in doc["cases"]}
    assert sorted(by_id) == sorted(truth)
    for name, (gt, pr) in truth.items():
        assert by_id[name]["dice"] == pytest.approx(_dice(pr, gt), abs=1e-9), name
        assert by_id[name]["gt_pixels"] == int(gt.sum()) and by_id[name]["pred_pixels"] == int(pr.sum())
    assert by_id["benign (1)"]["class"] == "benign" and by_id["normal (1)"]["dice"] == 0.0
    assert doc["predictions_without_reference"] == 1 and doc["format"] == "mosl-metrics"
    lesion = [_dice(truth[n][1], truth[n][0]) for n in ("benign (1)", "benign (2)", "malignant (1)")]
    assert doc["lesion"]["n"] == 3 and doc["lesion"]["dice"]["mean"] == pytest.approx(np.mean(lesion))
    assert sorted(doc["per_class"]) == ["benign", "malignant", "normal"]
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert len(rows) == 4 and {r["id"] for r in rows} == set(truth)
    assert [r["group"] for r in result.rows] == ["all", "benign", "malignant", "normal", "lesion"]


def test_untagged_files_are_the_masks_of_a_folder_without_tags(tmp_path: Path) -> None:
    """A plain folder of masks named like their scans (x.png) pairs with predict's x_mask.png."""
    save(tmp_path / "gt" / "a.png", _box(0, 0, 10, 10).astype(np.uint8) * 255)
    save(tmp_path / "pr" / "a_mask.png", _box(0, 0, 10, 10).astype(np.uint8) * 255)
    [entry] = index_masks(tmp_path / "gt", "--ref").values()
    assert entry.scan == "a" and entry.cls == "none"
    result = run_evaluate_folder(
        EvaluateFolderConfig(pred=str(tmp_path / "pr"), ref=str(tmp_path / "gt"), out=str(tmp_path / "e"))
    )
    assert result.metrics["summary"]["dice"]["mean"] == 1.0 and result.metrics["lesion"] is None


def test_refusals_name_the_file_and_write_nothing(folders, tmp_path: Path) -> None:
    pred, ref, _ = folders
    out = tmp_path / "eval"
    (pred / "malignant (1)_mask.png").unlink()
    with pytest.raises(MoslError, match=r"no mask for 1 of 4 reference scans .*malignant \(1\)_mask\.png"):
        run_evaluate_folder(EvaluateFolderConfig(pred=str(pred), ref=str(ref), out=str(out)))
    save(pred / "malignant (1)_mask.png", np.zeros((H + 1, W), np.uint8))
    with pytest.raises(MoslError, match=r"malignant \(1\)_mask\.png: 80x61 but its reference .* is 80x60"):
        run_evaluate_folder(EvaluateFolderConfig(pred=str(pred), ref=str(ref), out=str(out)))
    assert not out.exists()
    save(ref / "malignant" / "benign (2)_mask.png", np.zeros((H, W), np.uint8))
    with pytest.raises(MoslError, match=r"same scan name 'benign \(2\)'"):
        index_masks(ref, "--ref")
    with pytest.raises(MoslError, match="not a folder"):
        index_masks(tmp_path / "missing", "--pred")


def test_cli_one_line_errors_and_options_that_do_not_apply(folders, tmp_path: Path) -> None:
    pred, ref, _ = folders
    runner = CliRunner()
    args = ["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "e"), "--json"]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["lesion"]["n"] == 3
    alone = runner.invoke(app, ["evaluate", "--pred", str(pred)])
    assert alone.exit_code == 2 and "--pred and --ref go together" in alone.output
    mixed = runner.invoke(app, ["evaluate", "--pred", str(pred), "--ref", str(ref), "--model", "m.safetensors"])
    assert mixed.exit_code == 2 and "--model: not used when scoring mask folders" in mixed.output
    gone = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "none"), "--ref", str(ref)])
    assert gone.exit_code == 1 and len(gone.output.strip().splitlines()) == 1
