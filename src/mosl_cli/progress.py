"""Training progress for people and for log files.

On a terminal: a Rich bar whose numbers sit on their own line, so nothing is cut to ``…`` at 80
columns. Elsewhere (nohup, SLURM, CI, ``> log``): plain lines on stdout, flushed at once, one per
epoch and, with ``--log-every N``, one every N steps (at the loop's own reporting granularity).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text


class TwoLineProgress(Progress):
    """A progress bar with each task's ``info`` field on the line below it (folded, never truncated)."""

    def get_renderables(self) -> Any:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            info = task.fields.get("info")
            if info:
                yield Text(f"  {info}", overflow="fold")


def make_bar(console: Console) -> TwoLineProgress:
    """The terminal bar: title, bar (takes the width left), steps, elapsed, remaining; numbers below."""
    return TwoLineProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=None),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        expand=True,
    )


def step_text(info: dict[str, Any]) -> str:
    """The numbers of a step event (loss, lr, throughput, embedding std when defined)."""
    text = f"loss {info['loss']:.4f} lr {info['lr']:.2e} {info['images_per_s']:.0f} img/s"
    if info.get("embedding_std") == info.get("embedding_std") and info.get("embedding_std") is not None:
        text += f" std {info['embedding_std']:.4f}"
    return text


def epoch_text(info: dict[str, Any]) -> str:
    """The numbers of an epoch record (loss, val Dice, embedding std, seconds)."""
    text = f"loss {info['loss']:.4f}"
    if "val_dice" in info and info["val_dice"] == info["val_dice"]:
        text += f" val Dice {info['val_dice']:.3f} (best ep {info['best_epoch']})"
    if info.get("embedding_std") is not None and info["embedding_std"] == info["embedding_std"]:
        text += f" std {info['embedding_std']:.4f}"
    if "seconds" in info:
        text += f" {info['seconds']:.1f} s"
    return text


class PlainLines:
    """A training callback writing one plain line per epoch (and every ``log_every`` steps) to ``stream``."""

    def __init__(self, title: str, log_every: int = 0, stream: TextIO | None = None) -> None:
        self.title, self.log_every, self.stream = title, log_every, stream
        self.epochs = self.steps = 0
        self.t0 = time.monotonic()
        self.last_block = 0

    def _print(self, text: str) -> None:
        stream = self.stream or sys.stdout
        elapsed = int(time.monotonic() - self.t0)
        stream.write(f"{self.title} [{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}] {text}\n")
        stream.flush()

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "start":
            self.epochs, self.steps = info["epochs"], info["steps_per_epoch"]
            resume = f", resuming after epoch {info['start_epoch']}" if info["start_epoch"] else ""
            self._print(
                f"{info['images']} images on {info['device']}, {self.epochs} epochs of {self.steps} steps{resume}"
            )
        elif event == "step" and self.log_every > 0:
            block = ((info["epoch"] - 1) * self.steps + info["step"]) // self.log_every
            if block > self.last_block and info["step"] < self.steps:  # the epoch line covers the last step
                self.last_block = block
                self._print(f"ep {info['epoch']}/{self.epochs} step {info['step']}/{self.steps} {step_text(info)}")
        elif event == "epoch":
            self._print(f"ep {info['epoch']}/{self.epochs} {epoch_text(info)}")


__all__ = ["TwoLineProgress", "PlainLines", "make_bar", "step_text", "epoch_text"]
