"""``studies/finetune-recipe/run.sh``'s ``folds_K`` arm and ``summarise.py``'s rows for it: one tiny
end-to-end run (synthetic data, 32 px, one epoch) through the real subcommands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_folds_arm_trains_each_fold_as_a_job_then_scores_the_ensemble(tmp_path: Path) -> None:
    mosl = [sys.executable, "-m", "mosl_cli"]
    data = tmp_path / "synthetic"
    subprocess.run([*mosl, "prepare", "synthetic", "--synthetic-count", "24", "--out", str(data)], check=True)
    env = {
        **os.environ,
        "SIZE": "32",
        "EPOCHS": "1",
        "SEEDS": "0",
        "ARMS": "folds_2",
        "PARALLEL": "2",
        "MOSL": " ".join(mosl),
        "OMP_NUM_THREADS": "1",
    }
    work = tmp_path / "work"
    run = subprocess.run(["bash", str(HERE / "run.sh"), str(data), str(work)], env=env, text=True, capture_output=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    seed = work / "32" / "folds_2" / "s0"
    ensemble = json.loads((seed / "eval_test" / "metrics.json").read_text())
    assert len(ensemble["models"]) == 2 and ensemble["split"] == "test"
    for k in (0, 1):
        assert json.loads((seed / f"fold_{k}" / "config.json").read_text())["config"]["fold"] == k
        assert json.loads((seed / f"fold_{k}" / "eval_test" / "metrics.json").read_text())["split"] == "test"
    assert "| folds_2 | 0 | – |" in run.stdout and "| folds_2 one fold | 0 | – |" in run.stdout

    sys.path.insert(0, str(HERE))
    try:
        import summarise
    finally:
        sys.path.remove(str(HERE))
    (work / "32" / "folds_2" / "s1" / "fold_0").mkdir(parents=True)  # a seed still training: left out
    runs: list[list[object]] = []
    table = summarise.rows(work / "32", runs)
    assert [row[:2] for row in table] == [["folds_2", "0"], ["folds_2 one fold", "0"]]
    assert [r[0] for r in runs] == ["folds_2", "folds_2/fold_0", "folds_2/fold_1"]
    single = (runs[1][3] + runs[2][3]) / 2
    assert runs[0][3] == ensemble["lesion"]["dice"]["mean"] and table[1][3] == f"{single:.3f}"
    assert runs[0][6] == pytest.approx(runs[1][6] + runs[2][6])  # the folds' training minutes summed
