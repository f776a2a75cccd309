"""Interruptions and reruns: a killed `prepare` leaves the old or the new dataset, SIGTERM acts like
Ctrl-C, `--resume` refuses changed options and still equals an uninterrupted run, a killed run's
temporary files are cleaned on its next start, and files honour the umask."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mosl_cli
from badinput import fails, succeeds
from mosl_cli.config import FinetuneConfig
from mosl_cli.data.store import load_dataset, read_manifest
from mosl_cli.errors import MoslError
from mosl_cli.finetune import run_finetune
from mosl_cli.fsutil import temp_name
from tiny import TINY

ENV = {**os.environ, "PYTHONPATH": str(Path(mosl_cli.__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
PREPARE = ["prepare", "synthetic", "--size", "32", "--workers", "1"]

# Runs `mosl ARGS` and SIGKILLs itself just before the KILL_AT-th write event of the dataset folder.
KILLER = """
import os, shutil, signal, sys
import safetensors.torch
import mosl_cli.data.store as store
at, count, writing = int(os.environ["KILL_AT"]), [0], [False]
def hook(fn, first=False):
    def wrapped(*args, **kwargs):
        writing[0] = writing[0] or first  # count from the dataset write on (not the start's clean-up)
        if writing[0]:
            count[0] += 1
            if count[0] == at:
                os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return wrapped
store.make_temp_dir = hook(store.make_temp_dir, first=True)        # 1: the temporary folder
safetensors.torch.save_file = hook(safetensors.torch.save_file)   # 2: the tensors
os.replace = hook(os.replace)                                      # 3, 4: each file into the temporary folder
store.exchange = hook(store.exchange)                              # 5: the swap
shutil.rmtree = hook(shutil.rmtree)                                # 6: removing the old dataset
from mosl_cli.cli import main
sys.argv = ["mosl", *sys.argv[1:]]
main()
"""
WRITE_EVENTS = 6


def _mosl(args: list[object], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", KILLER, *map(str, args)],
        capture_output=True,
        text=True,
        env={**ENV, "KILL_AT": "0", **env},
        timeout=300,
    )


def test_killed_prepare_leaves_the_old_or_the_new_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    assert _mosl([*PREPARE, "--synthetic-count", "40", "--out", out]).returncode == 0
    old = read_manifest(out)["digest"]
    shutil.copytree(out, tmp_path / "old")
    new_args = [*PREPARE, "--synthetic-count", "30", "--seed", "1", "--out", out, "--overwrite"]
    seen = []
    for at in range(1, WRITE_EVENTS + 2):
        proc = _mosl(new_args, KILL_AT=str(at))
        assert proc.returncode == (-signal.SIGKILL if at <= WRITE_EVENTS else 0), (at, proc.stderr)
        manifest = read_manifest(out)  # a mixed pair would raise here
        assert len(load_dataset(out).images) == len(manifest["samples"])
        seen.append("old" if manifest["digest"] == old else "new")
        if seen[-1] == "new":
            new = manifest["digest"]
        if at <= WRITE_EVENTS:  # back to the old dataset for the next kill
            shutil.rmtree(out)
            shutil.copytree(tmp_path / "old", out)
    assert seen == ["old"] * 5 + ["new"] * 2, seen  # the swap (event 5) is the one moment it changes
    assert new != old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "old"], (
        "each start removed the killed run's temporary folder"
    )


def _wait_for_log(run: Path, proc: subprocess.Popen[str], lines: int = 1) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        log = run / "log.jsonl"
        if log.exists() and len(log.read_text().splitlines()) >= lines:
            return
        time.sleep(0.05)
    pytest.fail("the run never logged an epoch")


def test_sigterm_is_like_ctrl_c_and_the_run_resumes(ds: Path, tmp_path: Path) -> None:
    run = tmp_path / "ft"
    args = [
        "finetune",
        "--data",
        ds,
        "--init",
        "none",
        *TINY,
        "--epochs",
        "5",
        "--steps-per-epoch",
        "2",
        "--checkpoint-every",
        "0",
        "--out",
        run,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mosl_cli", *map(str, args)],
        env=ENV,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_for_log(run, proc, lines=2)  # epoch 1's checkpoint is written before epoch 2 is logged
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("terminated:") and "--resume" in last and "Traceback" not in stderr
    assert (run / "checkpoint.safetensors").is_file() and not list(run.glob(".*.tmp"))
    resumed = subprocess.run(
        [sys.executable, "-m", "mosl_cli", *map(str, args), "--resume"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stderr + resumed.stdout  # plain progress lines go to stdout off a terminal
    assert [r["epoch"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())] == list(range(1, 6))


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int") / "ds"
    succeeds([*PREPARE, "--synthetic-count", "40", "--out", out])
    return out


@pytest.fixture(scope="module")
def pretrain_run(ds: Path) -> Path:
    out = ds.parent / "pt"
    succeeds(
        [
            "pretrain",
            "--data",
            ds,
            "--method",
            "simsiam",
            *TINY,
            "--epochs",
            "2",
            "--checkpoint-every",
            "0",
            "--out",
            out,
        ]
    )
    return out


@pytest.mark.parametrize(
    "change, named",
    [
        (["--seed", "5"], "--seed 0 → 5"),
        (["--lr", "3.0"], "--lr default → 3.0"),
        (["--epochs", "3"], "--epochs 2 → 3"),
        (["--method", "simclr"], "--method simsiam → simclr"),
        (["--data", "OTHER"], "--data"),
        (["--no-amp"], "--no-amp False → True"),
    ],
)
def test_pretrain_resume_refuses_changed_options(pretrain_run: Path, ds: Path, change: list[str], named: str) -> None:
    before = {p.name: p.read_bytes() for p in pretrain_run.iterdir()}
    change = [str(ds) if c == "OTHER" else c for c in change]  # a second --data
    args = [
        "pretrain",
        "--data",
        ds,
        "--method",
        "simsiam",
        *TINY,
        "--epochs",
        "2",
        "--checkpoint-every",
        "0",
        "--out",
        pretrain_run,
        "--resume",
        *change,
    ]
    line = fails(args)
    assert named in line and "--resume" in line
    assert {p.name: p.read_bytes() for p in pretrain_run.iterdir()} == before, "nothing was touched"


def test_resume_accepts_what_cannot_change_the_result(pretrain_run: Path, ds: Path) -> None:
    args = ["pretrain", "--data", ds, "--method", "simsiam", *TINY, "--epochs", "2", "--out", pretrain_run, "--resume"]
    succeeds([*args, "--checkpoint-every", "30"])  # another checkpoint interval; the device is cpu as before


def _ft(ds: Path, out: Path, **kw: object) -> FinetuneConfig:
    base = dict(
        data=str(ds),
        init="none",
        encoder="resnet18",
        size=32,
        epochs=3,
        batch_size=4,
        steps_per_epoch=2,
        device="cpu",
        checkpoint_every=0.0,
        out=str(out),
    )
    base.update(kw)
    return FinetuneConfig(**base)  # type: ignore[arg-type]


def test_finetune_resume_same_options_is_bit_identical_changed_are_refused(ds: Path, tmp_path: Path) -> None:
    run_finetune(_ft(ds, tmp_path / "full"))

    def stop_after_first_epoch(event: str, info: dict) -> None:
        if event == "epoch" and info["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_finetune(_ft(ds, tmp_path / "cut"), stop_after_first_epoch)
    with pytest.raises(MoslError, match=r"--label-fraction 1.0 → 0.5"):
        run_finetune(_ft(ds, tmp_path / "cut", label_fraction=0.5, resume=True))
    with pytest.raises(MoslError, match=r"--no-augment False → True"):
        run_finetune(_ft(ds, tmp_path / "cut", augment=False, resume=True))
    run_finetune(_ft(ds, tmp_path / "cut", resume=True, checkpoint_every=60.0))
    a, b = (
        load_file(str(tmp_path / "full" / "model.safetensors")),
        load_file(str(tmp_path / "cut" / "model.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_a_readable_config_is_refused(pretrain_run: Path, ds: Path, tmp_path: Path) -> None:
    run = tmp_path / "pt"
    shutil.copytree(pretrain_run, run)
    (run / "config.json").write_text("[")
    line = fails(["pretrain", "--data", ds, "--method", "simsiam", *TINY, "--epochs", "2", "--out", run, "--resume"])
    assert "config.json" in line and "--overwrite" in line


def test_stale_temporary_files_are_removed_on_the_next_start(ds: Path, tmp_path: Path) -> None:
    run = tmp_path / "ft"
    args = ["finetune", "--data", ds, "--init", "none", *TINY, "--checkpoint-every", "0", "--out", run]
    succeeds(args)
    for option in ("--resume", "--overwrite"):
        full = temp_name(run / "checkpoint.safetensors")
        full.write_bytes(b"\0" * 4096)  # what a SIGKILL during a checkpoint write leaves
        empty = temp_name(run / "model.safetensors")
        empty.touch()
        (run / "notes.tmp").write_text("mine")
        succeeds([*args, option])
        assert not full.exists() and not empty.exists()
        assert (run / "notes.tmp").read_text() == "mine"
    stale = temp_name(tmp_path / "ds2")
    stale.mkdir()
    (stale / "data.safetensors").write_bytes(b"\0" * 100)
    other = temp_name(tmp_path / "elsewhere")
    other.mkdir()
    succeeds([*PREPARE, "--synthetic-count", "40", "--out", tmp_path / "ds2"])
    assert not stale.exists() and other.exists()


def test_written_files_honour_the_umask(ds: Path, tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        succeeds([*PREPARE, "--synthetic-count", "40", "--out", tmp_path / "ds"])
        succeeds(["finetune", "--data", ds, "--init", "none", *TINY, "--out", tmp_path / "ft"])
        succeeds(
            [
                "predict",
                Path(__file__).parents[1] / "assets" / "example_scan.png",
                "--model",
                tmp_path / "ft" / "model.safetensors",
                "--device",
                "cpu",
                "--out",
                tmp_path / "m.png",
            ]
        )
    finally:
        os.umask(previous)
    for path in [
        "ds/data.safetensors",
        "ds/manifest.json",
        "ft/model.safetensors",
        "ft/config.json",
        "ft/checkpoint.safetensors",
        "ft/metrics.json",
        "m.png",
    ]:
        assert (tmp_path / path).stat().st_mode & 0o777 == 0o640, path
    assert (tmp_path / "ds").stat().st_mode & 0o777 == 0o750


def test_resumed_optimizer_state_takes_the_channels_last_layout_of_its_parameters(tmp_path: Path) -> None:
    """The checkpoint stores contiguous tensors; a fused AdamW over channels_last weights must get its
    moments back in that layout, or it adds them to the wrong elements (a resume then drifts)."""
    from mosl_cli.train import RunDir, load_checkpoint, save_checkpoint

    def conv_step() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
        return model, torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)

    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    model, opt = conv_step()
    run = RunDir(tmp_path)
    for step in range(3):
        if step == 1:
            save_checkpoint(run, model, opt, {"epoch": 1})
            model, opt = conv_step()
            load_checkpoint(run, model, opt, torch.device("cpu"))
            moment = opt.state[model.weight]["exp_avg"]
            assert moment.stride() == model.weight.stride()
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    reference, ref_opt = conv_step()
    for _ in range(3):
        ref_opt.zero_grad()
        reference(x).square().mean().backward()
        ref_opt.step()
    torch.testing.assert_close(model.weight, reference.weight, rtol=0, atol=0)
