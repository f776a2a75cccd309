"""``mosl prepare DICOM_FOLDER`` → finetune → evaluate (mm figures) → predict on a cine, as a user runs it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dicom_files import region, write
from mosl_cli.cli import app


def dicom_folder(root: Path, patients: int = 10) -> Path:
    """``images/P<k>_<i>.dcm`` (60×70, a 48×56 imaging region at 0.1 mm) with ``masks/P<k>_<i>.png``, and a cine."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:60, 0:70]
    for k in range(patients):
        for i in range(2):
            cy, cx, r = rng.integers(20, 40), rng.integers(25, 45), rng.integers(5, 10)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            grey = np.where(inside, 40, 160) + rng.integers(0, 40, (60, 70))
            grey[:5] = 255  # burned-in text above the region
            write(
                root / "images" / f"P{k}_{i}.dcm",
                grey.astype(np.uint8),
                patient=f"P{k}",
                regions=[region(6, 6, 61, 53, delta_cm=(0.01, 0.01))],
            )
            (root / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray((inside * 255).astype(np.uint8)).save(root / "masks" / f"P{k}_{i}.png")
    write(
        root / "images" / "P0_cine.dcm",
        rng.integers(0, 256, (4, 60, 70), dtype=np.uint8),
        frames=4,
        patient="P0",
        regions=[region(6, 6, 61, 53, delta_cm=(0.01, 0.01))],
    )
    return root


def test_dicom_folder_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = dicom_folder(tmp_path / "exam")
    monkeypatch.chdir(tmp_path)
    small = ["--encoder", "resnet18", "--size", "32", "--epochs", "1", "--device", "cpu"]
    steps = [
        ["prepare", str(src), "--size", "32", "--frames-per-video", "2", "--workers", "1"],
        ["finetune", "--init", "none", *small, "--batch-size", "4", "--steps-per-epoch", "2"],
        ["evaluate", "--split", "all", "--device", "cpu", "--nsd-tolerance", "1.5"],
        [
            "predict",
            str(src / "images" / "P0_cine.dcm"),
            "--out",
            "pred",
            "--overlay",
            "--device",
            "cpu",
            "--measurements",
            "pred/measurements.csv",
        ],
    ]
    for args in steps:
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 0, (args, result.output)
    manifest = json.loads((tmp_path / "mosl_data" / "manifest.json").read_text())
    assert manifest["sources"][0]["reader"] == "dicom" and len(manifest["samples"]) == 22
    labelled = [s for s in manifest["samples"] if s["has_mask"]]
    assert len(labelled) == 20 and all(s["crop"] == [6, 6, 62, 54] and s["spacing_mm"] == [0.1, 0.1] for s in labelled)
    metrics = json.loads((tmp_path / "mosl_eval" / "metrics.json").read_text())
    assert metrics["cases_with_spacing"] == 20 and metrics["nsd_tolerance_mm"] == 1.5
    scale = np.array([48 * 0.1 / 32, 56 * 0.1 / 32])  # the stored grid's spacing (rows, columns)
    for case in metrics["cases"]:
        assert case["nsd"] is not None and 0 <= case["nsd"] <= 1
        if case["hd95"] is not None:
            assert scale.min() * case["hd95"] - 1e-9 <= case["hd95_mm"] <= scale.max() * case["hd95"] + 1e-9
    with (tmp_path / "mosl_eval" / "per_case.csv").open() as fh:
        assert {"hd95_mm", "assd_mm", "nsd"} <= set(next(csv.reader(fh)))
    masks = sorted((tmp_path / "pred" / "P0_cine_mask").iterdir())
    assert [m.name for m in masks] == [f"{i:05d}.png" for i in range(4)]
    assert all(Image.open(m).size == (70, 60) for m in masks)
    assert (tmp_path / "pred" / "P0_cine_overlay.mp4").is_file()
    rows = list(csv.DictReader((tmp_path / "pred" / "measurements.csv").open()))
    assert [r["frame"] for r in rows] == ["0", "1", "2", "3"] and all(r["spacing_row_mm"] == "0.1000" for r in rows)
