"""Data-parallel training under ``torchrun --nproc_per_node=2`` on CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mosl_cli.fsutil import read_jsonl
from tiny import blob_dataset

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blob_dataset(tmp_path_factory.mktemp("ddp") / "ds", n=36)


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _assert_ranks_identical(dump: Path) -> None:
    a, b = load_file(str(dump / "rank0.safetensors")), load_file(str(dump / "rank1.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        if k.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("method", ["simclr", "moco", "simsiam"])
def test_pretrain_two_ranks(data: Path, tmp_path: Path, method: str) -> None:
    dump = tmp_path / "dump"
    dump.mkdir()
    proc = _torchrun(
        [str(HERE / "ddp_worker.py"), "pretrain", str(data), str(tmp_path / "run"), str(dump), method], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_ranks_identical(dump)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["resolved"]["world_size"] == 2 and config["resolved"]["global_batch"] == 8
    assert len(read_jsonl(tmp_path / "run" / "log.jsonl")) == 2  # one line per epoch: rank 0 alone writes
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint.safetensors",
        "config.json",
        "log.jsonl",
        "metrics.json",
        "model.safetensors",
    ]


def test_finetune_two_ranks(data: Path, tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    dump.mkdir()
    proc = _torchrun(
        [str(HERE / "ddp_worker.py"), "finetune", str(data), str(tmp_path / "run"), str(dump), "-"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_ranks_identical(dump)
    assert len(read_jsonl(tmp_path / "run" / "log.jsonl")) == 2


def test_cli_under_torchrun_and_resume(data: Path, tmp_path: Path) -> None:
    args = [
        "-m",
        "mosl_cli",
        "pretrain",
        "--method",
        "simclr",
        "--data",
        str(data),
        "--encoder",
        "resnet18",
        "--size",
        "32",
        "--batch-size",
        "8",
        "--steps-per-epoch",
        "2",
        "--warmup-epochs",
        "0",
        "--proj-hidden",
        "64",
        "--proj-dim",
        "32",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
    ]
    first = _torchrun([*args, "--epochs", "2", "--checkpoint-every", "0"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _torchrun([*args, "--epochs", "2", "--checkpoint-every", "0", "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["epoch"] for r in read_jsonl(tmp_path / "run" / "log.jsonl")] == [1, 2]
    printed = resumed.stdout + resumed.stderr  # plain progress lines go to stdout off a terminal
    assert printed.count("resuming after epoch 2") == 1  # only rank 0 prints
    changed = _torchrun([*args, "--epochs", "3", "--resume"], tmp_path)  # a changed option is refused on every rank
    assert changed.returncode != 0 and "--epochs 2 → 3" in changed.stderr
