"""Speed of one ``mosl finetune`` step on a CPU: bf16 autocast + channels_last against float32; prints JSON.

Both arms run ``mosl_cli.finetune.train_step`` (the step of ``run_finetune``) on the recipe's network
(smp U-Net, ``--encoder``, one input channel) over the same uint8 batch: :class:`SegAugment` (image +
mask) → forward → Dice + BCE → backward → fused AdamW step. They differ only in what :mod:`mosl_cli.device` chooses:

- ``mixed``: channels_last tensors and bf16 autocast (the default on a CPU with native bf16, see
  :func:`mosl_cli.device.cpu_bf16`);
- ``float32``: contiguous tensors, no autocast (``--no-amp`` and ``channels_last=False``).

They are timed in interleaved rounds (the machine is noisy); the JSON gives seconds per step of each and
``speedup`` = float32 / mixed, the median over rounds. Target: ``speedup >= 1.5`` where ``cpu_bf16`` is true.

    python benchmarks/cpu_precision.py [--encoder resnet18] [--size 128] [--batch-size 16] [--steps 3]
        [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from mosl_cli.augment import SegAugment
from mosl_cli.config import FinetuneConfig
from mosl_cli.device import cpu_bf16, memory_format
from mosl_cli.finetune import build_optimizer, train_step
from mosl_cli.models import build_model

TARGET_SPEEDUP = 1.5
ARMS = {"mixed": True, "float32": False}  # arm → autocast and channels_last on


def step_seconds(args: argparse.Namespace, mixed: bool, images: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean seconds of ``args.steps`` fine-tuning steps (after one warm-up step) in one precision arm."""
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model("unet", args.encoder, in_channels=1, classes=1).to(memory_format=memory_format(device, mixed))
    cfg = FinetuneConfig(amp=mixed, channels_last=mixed)
    optimizer = build_optimizer(model, cfg, device)  # the recipe's fused AdamW and parameter groups
    augment = SegAugment(args.size, True)
    times = []
    for _ in range(args.steps + 1):
        t0 = time.perf_counter()
        train_step(model, optimizer, augment, images, masks, cfg)
        times.append(time.perf_counter() - t0)
    return statistics.mean(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch_size, 1, 256, 256), dtype=torch.uint8, generator=gen)
    masks = (torch.rand(args.batch_size, 1, 256, 256, generator=gen) > 0.8).to(torch.uint8)
    seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for r in range(args.rounds):
        order = list(ARMS) if r % 2 == 0 else list(reversed(ARMS))
        for arm in order:
            seconds[arm].append(step_seconds(args, ARMS[arm], images, masks))
    speedups = [f / m for f, m in zip(seconds["float32"], seconds["mixed"], strict=True)]
    speedup = statistics.median(speedups)
    print(
        json.dumps(
            {
                "benchmark": "cpu_precision",
                "encoder": args.encoder,
                "size": args.size,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "cpu": platform.processor() or platform.machine(),
                "cpu_bf16": cpu_bf16(),
                "seconds_per_step": {arm: round(statistics.median(v), 4) for arm, v in seconds.items()},
                "speedup": round(speedup, 3),
                "target": TARGET_SPEEDUP,
                "pass": speedup >= TARGET_SPEEDUP if cpu_bf16() else None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
