"""``studies/paper-grid/paper_grid.sh``: the commands it chains, resuming, and two copies sharing one grid.

A stand-in ``mosl`` (a small Python script) records each call and writes the files the real step
would (metrics.json, model.safetensors), so the script's own logic is tested in seconds; the real
subcommands are tested on their own and by the quick start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

GRID = Path(__file__).resolve().parent / "paper_grid.sh"
pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("flock") is None, reason="needs bash and flock"
)

FAKE_MOSL = r"""
import json, os, sys, time
from pathlib import Path
args = sys.argv[1:]
command, out = args[0], Path(args[args.index("--out") + 1])
with open(os.environ["GRID_CALLS"], "a") as log:  # one short line per call: appends do not interleave
    log.write(f"{os.getpid()} {command} {out}\n")
time.sleep(float(os.environ.get("GRID_STEP_SECONDS", "0")))
out.mkdir(parents=True, exist_ok=True)
if command in ("pretrain", "finetune"):
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_text("")
(out / "metrics.json" if command != "report" else out / "report.md").write_text("{}")
"""

SETTINGS = {
    "METHODS": "simclr moco",
    "DATA_GROUPS": "breast multiorgan natural",
    "SCOPES": "encoder",
    "SIZES": "32",
    "FRACTIONS": "0.5 1.0",
    "SEEDS": "0 1",
    "PASS_WAIT": "0.2",
}
# 2 methods × 2 groups (natural holds no other folder than multiorgan here, so it is skipped)
PRETRAINS, INITS = 4, 5  # + the supervised baseline
FINETUNES = INITS * 2 * 2


def _dataset(path: Path, organ: str) -> Path:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"sources": [{"organ": organ}]}))
    return path


@pytest.fixture()
def grid_env(tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    fake = tmp_path / "fake_mosl.py"
    fake.write_text(FAKE_MOSL)
    env = {
        **os.environ,
        **SETTINGS,
        "MOSL": f"{sys.executable} {fake}",
        "PYTHON": sys.executable,
        "WORKDIR": str(tmp_path / "grid"),
        "GRID_CALLS": str(tmp_path / "calls.txt"),
    }
    datasets = [str(_dataset(tmp_path / "busi", "breast")), str(_dataset(tmp_path / "hc18", "fetal head"))]
    return env, datasets


def _calls(env: dict[str, str]) -> list[tuple[str, str, str]]:
    return [tuple(line.split(" ", 2)) for line in Path(env["GRID_CALLS"]).read_text().splitlines()]  # type: ignore[misc]


def _run(env: dict[str, str], datasets: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", str(GRID), *datasets], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def test_dry_run_prints_the_whole_grid(grid_env: tuple[dict[str, str], list[str]]) -> None:
    env, datasets = grid_env
    out = subprocess.run(
        ["bash", str(GRID), *datasets], env={**env, "MOSL": "echo"}, text=True, capture_output=True, check=True
    ).stdout
    lines = out.splitlines()
    assert sum(line.startswith("pretrain ") for line in lines) == PRETRAINS
    assert sum(line.startswith("finetune ") for line in lines) == FINETUNES
    assert sum(line.startswith("evaluate ") for line in lines) == FINETUNES
    assert lines[-1].startswith("report ")


def test_one_copy_runs_every_step_once_and_a_rerun_skips_them(grid_env: tuple[dict[str, str], list[str]]) -> None:
    env, datasets = grid_env
    first = _run(env, datasets)
    assert first.wait(timeout=120) == 0, first.stdout.read() if first.stdout else ""
    counts = Counter(command for _, command, _ in _calls(env))
    assert counts == {"pretrain": PRETRAINS, "finetune": FINETUNES, "evaluate": FINETUNES, "report": 1}
    again = _run(env, datasets)
    assert again.wait(timeout=120) == 0
    assert Counter(command for _, command, _ in _calls(env))["finetune"] == FINETUNES  # nothing ran twice


def test_two_copies_share_the_grid_each_step_runs_once(grid_env: tuple[dict[str, str], list[str]]) -> None:
    env, datasets = grid_env
    env = {**env, "GRID_STEP_SECONDS": "0.3"}
    copies = [_run(env, datasets) for _ in range(2)]
    logs = []
    for copy in copies:
        assert copy.wait(timeout=300) == 0
        logs.append(copy.stdout.read() if copy.stdout else "")
    calls = _calls(env)
    per_run = Counter((command, out) for _, command, out in calls if command != "report")
    assert len(per_run) == PRETRAINS + 2 * FINETUNES and set(per_run.values()) == {1}, per_run
    assert all("\n== " in "\n" + log for log in logs)  # both copies ran steps ...
    assert any("running in another copy" in log for log in logs)  # ... and stepped around each other's
    # each fine-tune of a pre-trained arm was called after that pre-training (the script waits for its metrics.json)
    for i, (_, command, out) in enumerate(calls):
        if command == "finetune" and "/supervised/" not in out:
            group, method_scope = Path(out).parent.name.split("_", 1)
            pretrain = str(Path(env["WORKDIR"]) / "pretrain" / group / f"{method_scope}_32px")
            assert any(c == "pretrain" and o == pretrain for _, c, o in calls[:i]), out
            assert (Path(pretrain) / "metrics.json").is_file()
    assert Counter(command for _, command, _ in calls)["report"] == 2  # each copy ends with the full report
