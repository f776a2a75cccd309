"""``benchmarks/finetune_recipe.py``: the reference loop trains, writes a mosl weight file and is scored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mosl_cli.models import load_weights
from tiny import blob_dataset

ROOT = Path(__file__).resolve().parents[1]


def test_reference_loop_writes_a_model_that_evaluate_scores(tmp_path: Path) -> None:
    data = blob_dataset(tmp_path / "blobs", split_cycle=("train", "train", "val", "test", "train"))
    work = tmp_path / "bench"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "finetune_recipe.py"), "--data", str(data), "--size", "32"]
    cmd += ["--epochs", "1", "--part", "reference", "--device", "cpu", "--work", str(work)]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    assert 0.0 <= result["reference_lesion_dice"] <= 1.0
    assert result["reference_seconds"] > 0
    _, meta = load_weights(work / "reference" / "model.safetensors")
    assert meta["encoder"] == "resnet18" and meta["size"] == 32
    assert json.loads((work / "reference.json").read_text())["settings"]["epochs"] == 1
