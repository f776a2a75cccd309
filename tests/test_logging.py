"""Progress output: plain lines under a scheduler (stdout not a terminal), a bar that fits its terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from mosl_cli.progress import PlainLines, make_bar
from tiny import blob_dataset

SRC = Path(__file__).resolve().parents[1] / "src"


def test_pretrain_redirected_prints_one_line_per_epoch(tmp_path: Path) -> None:
    data = blob_dataset(tmp_path / "ds", n=12, size=32)
    log = tmp_path / "out.log"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "mosl_cli",
        "pretrain",
        "--data",
        str(data),
        "--method",
        "simsiam",
        "--encoder",
        "resnet18",
        "--size",
        "32",
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--steps-per-epoch",
        "2",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
    ]
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    epochs = [line for line in lines if " ep " in f" {line} " and "/3 loss" in line]
    assert [line.split(" ep ")[1].split()[0] for line in epochs] == ["1/3", "2/3", "3/3"], lines
    assert lines[-1].startswith("pre-trained weights:")
    assert "━" not in proc.stderr  # no bar on a non-terminal stderr


def test_log_every_adds_step_lines() -> None:
    out = io.StringIO()
    lines = PlainLines("pretrain simclr", log_every=20, stream=out)
    lines("start", {"epochs": 1, "steps_per_epoch": 50, "start_epoch": 0, "images": 100, "device": "cpu"})
    for step in (10, 20, 30, 40, 50):
        lines("step", {"epoch": 1, "step": step, "loss": 1.0, "lr": 0.1, "images_per_s": 5.0, "embedding_std": 0.1})
    lines("epoch", {"epoch": 1, "loss": 1.0, "seconds": 2.0})
    text = out.getvalue().splitlines()
    assert [t.split("] ")[1].split(" loss")[0] for t in text[1:]] == [
        "ep 1/1 step 20/50",
        "ep 1/1 step 40/50",
        "ep 1/1",
    ]


def test_terminal_bar_fits_80_columns_without_ellipsis() -> None:
    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    bar = make_bar(console)
    task = bar.add_task("finetune 0.25 labels", total=5000, info="")
    info = "ep 123 loss 0.123456 lr 1.23e-03 12345 img/s std 0.012345 val Dice 0.812 (best ep 120)"
    bar.update(task, completed=1234, info=info)
    console.print(bar.get_renderable())
    text = console.file.getvalue()
    assert "…" not in text and "1234/5000" in text and "".join(text.split()).count("".join(info.split())) == 1, text
    assert all(len(line) <= 80 for line in text.splitlines())
