"""``studies/pretraining/pretraining_curve.sh``: what it runs, in which order, its summary, resuming, and its deadline.

A stand-in ``mosl`` (a small Python script) records each call and writes the files the real step
would; its test Dice is 0.5 from scratch and 0.5 + epochs / 1000 + seed / 10000 after pre-training,
so the gains the summary must report are known.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

CURVE = Path(__file__).resolve().parent / "pretraining_curve.sh"
pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("pgrep") is None, reason="needs bash and pgrep"
)

FAKE_MOSL = r"""
import json, os, sys, time
from pathlib import Path
args = sys.argv[1:]
command = args[0]
opt = lambda name: args[args.index(name) + 1]
out = Path(opt("--out"))
with open(os.environ["CURVE_CALLS"], "a") as log:
    log.write(f"{time.time():.3f} {command} {out} {opt('--init') if command == 'finetune' else '-'}\n")
out.mkdir(parents=True, exist_ok=True)
if command == "pretrain":
    epochs = int(opt("--epochs"))
    for e in range(epochs):
        time.sleep(float(os.environ["SECONDS_PER_EPOCH"]))
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps({"epoch": e + 1, "seconds": 0.5}) + "\n")
    (out / "model.safetensors").write_text("")
    (out / "metrics.json").write_text("{}")
elif command == "finetune":
    init = opt("--init")
    if init != "none" and not (Path(init).parent / "metrics.json").exists():
        sys.exit(f"{init} used before its pre-training finished")
    (out / "model.safetensors").write_text("")
    (out / "metrics.json").write_text("{}")
else:  # evaluate
    run = Path(opt("--model")).parent
    arm, seed = run.parent.name, int(run.name.split("_s")[1])
    dice = 0.5 if arm == "supervised" else 0.5 + int(arm.split("_e")[1]) / 1000 + seed / 10000
    (out / "metrics.json").write_text(json.dumps({"lesion": {"dice": {"mean": dice}}}))
"""


@pytest.fixture()
def curve_env(tmp_path: Path) -> dict[str, str]:
    fake = tmp_path / "fake_mosl.py"
    fake.write_text(FAKE_MOSL)
    (tmp_path / "work").mkdir()
    return {
        **os.environ,
        "MOSL": f"{sys.executable} {fake}",
        "CURVE_CALLS": str(tmp_path / "calls.txt"),
        "EPOCHS_LIST": "2 6",
        "SEEDS": "0 1",
        "EXTRA_SEEDS": "2",
        "PARALLEL": "3",
        "POLL": "0.2",
        "SECONDS_PER_EPOCH": "0.1",
        "MPLBACKEND": "Agg",
    }


def _calls(env: dict[str, str]) -> list[list[str]]:
    path = Path(env["CURVE_CALLS"])
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def _run(env: dict[str, str], work: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CURVE), str(work)], env=env, text=True, capture_output=True, timeout=120)


def test_runs_every_arm_after_its_weights_and_reports_the_gains(curve_env: dict[str, str], tmp_path: Path) -> None:
    work = tmp_path / "work"
    proc = _run(curve_env, work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = _calls(curve_env)
    assert sorted(c[2] for c in calls if c[1] == "pretrain") == ["pre/simclr_e2", "pre/simclr_e6"]
    finetunes = [c for c in calls if c[1] == "finetune"]
    assert len(finetunes) == 3 * 3 * 2  # (baseline + 2 lengths) × 3 seeds × 2 fractions
    assert sum(c[1] == "evaluate" for c in calls) == len(finetunes)
    # the script's start order (two jobs started in one pass can reach mosl in either order)
    order = [line.split()[1:] for line in (work / "logs" / "started.txt").read_text().splitlines()]
    assert sorted(f"ft/{arm}/{f}_{s}" for arm, f, s in order) == sorted(c[2] for c in finetunes)
    for arm in ("supervised", "simclr_e2", "simclr_e6"):  # an arm's extra seed starts after its seeds 0 and 1
        at = [(s, i) for i, (a, _, s) in enumerate(order) if a == arm]
        assert min(i for s, i in at if s == "s2") > max(i for s, i in at if s in ("s0", "s1"))
    curve = {row["arm"]: row for row in json.loads((work / "curve.json").read_text())}
    assert curve["simclr_e6"]["pretrain_epochs_done"] == 6 and curve["simclr_e6"]["pretrain_seconds"] == 3.0
    for arm, epochs in (("simclr_e2", 2), ("simclr_e6", 6)):
        for f in ("0.1", "0.25"):
            cell = curve[arm][f]
            assert cell["seeds"] == [0, 1, 2]
            assert cell["gain"] == pytest.approx(epochs / 1000 + 0.0001)  # seeds 0, 1, 2 average 1 / 10000
            assert cell["std"] == pytest.approx(0.0001)
    assert curve["supervised"]["0.1"]["gain"] == 0
    assert "simclr_e6" in proc.stdout and "Δ +0.006" in proc.stdout
    if _has_matplotlib():
        assert (work / "curve.png").stat().st_size > 0

    again = _run(curve_env, work)  # everything is done: nothing runs again
    assert again.returncode == 0 and len(_calls(curve_env)) == len(calls)


def test_deadline_stops_the_jobs_and_still_writes_the_summary(curve_env: dict[str, str], tmp_path: Path) -> None:
    work = tmp_path / "work"
    env = {**curve_env, "EPOCHS_LIST": "200", "DEADLINE": str(int(time.time()) + 3)}
    t0 = time.monotonic()
    proc = _run(env, work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 15
    assert "deadline: stopping" in proc.stdout
    curve = {row["arm"]: row for row in json.loads((work / "curve.json").read_text())}
    assert curve["simclr_e200"]["0.1"]["seeds"] == [] and 0 < curve["simclr_e200"]["pretrain_epochs_done"] < 200
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "fake_mosl.py")], capture_output=True, text=True).stdout
    assert leftover == ""  # the killed jobs' mosl processes went with them


def _has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None
