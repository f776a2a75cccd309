"""Throughput of one ``mosl pretrain`` step against the bare method and a DataLoader reference; prints one JSON object.

Three pipelines train the same model (``--method`` on a U-Net ``--encoder``, built by
:func:`mosl_cli.pretrain.build_method` exactly as ``run_pretrain`` builds it) and are timed in one run,
in interleaved rounds (the order rotates each round; these machines are noisy):

- ``mosl`` (A): ``run_pretrain``'s step: uint8 batch indexed on the device → :class:`SSLViews` (two kornia
  views) → :func:`mosl_cli.pretrain.train_step` (forward → backward → SGD step → ``after_step``).
- ``bare`` (B): ``train_step`` alone on two ready float32 views (no augmentation, no data movement).
- ``reference`` (C): a torch ``Dataset`` over the same uint8 images making two views per sample with
  torchvision.transforms.v2 (RandomResizedCrop, flip, ColorJitter, GaussianBlur, to float, normalise),
  in a ``DataLoader(num_workers=2, persistent_workers=True)``, then ``train_step``. Each round is one
  epoch of ``--steps`` batches, timed from ``iter(loader)`` (so it pays for filling the pipeline once).

Targets: ``mosl / bare >= 0.85`` and ``mosl / reference >= 1.3``, ratios taken per round and the median
reported. Also timed each round, for diagnosis: the views alone (``images_per_s.views``); on CUDA the
JSON lists where three mosl steps make the host wait for the GPU (``host_syncs_in_3_mosl_steps``).
On a CPU the model step dominates (resnet50: about 20 s per batch on two cores, the views about 0.4 s),
so both pipelines run at the model's speed there and ``mosl / reference`` stays near 1 whatever the
augmentation costs; the second target is about GPUs, where per-sample CPU augmentation starves the model.

    python benchmarks/pretrain.py [--encoder resnet50] [--size 64] [--batch-size 64] [--method simsiam]
        [--steps N] [--rounds R] [--warmup W] [--device auto] [--data DIR] [--json-out FILE]

Without ``--data`` a synthetic dataset (512 scans at 256 px, ``mosl prepare synthetic``) is made in a
temporary folder. ``--steps`` (per pipeline per round) defaults to 1 on CPU (a resnet50 step takes
tens of seconds on two cores; the whole run then takes about 4-5 minutes) and 30 on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from mosl_cli.augment import SSLViews, seeded
from mosl_cli.config import PrepareConfig, PretrainConfig
from mosl_cli.device import resolve_device
from mosl_cli.methods import SSLMethod
from mosl_cli.models import NORMALISATION
from mosl_cli.pretrain import build_method, load_pretrain_data, resolve_hparams, train_step
from mosl_cli.train import epoch_order

TARGET_VS_BARE = 0.85
TARGET_VS_REFERENCE = 1.3
REFERENCE_WORKERS = 2
PIPELINES = ("mosl", "bare", "reference")


def reference_transform(size: int, crop_scale: tuple[float, float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-sample torchvision v2 view: uint8 ``[C, S, S]`` → normalised float32 ``[C, size, size]``.

    The ops and strengths of mosl's ``ultrasound`` preset (crop, flip, brightness/contrast jitter with
    p 0.8, blur with p 0.5 and the same kernel and σ range), minus its speckle noise.
    """
    from torchvision.transforms import v2

    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # as mosl_cli.augment._blur
    sigma_max = max(0.1, 2.0 * size / 224)
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=crop_scale, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8),
            v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, sigma_max))], p=0.5),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[NORMALISATION["mean"]], std=[NORMALISATION["std"]]),
        ]
    )


class TwoViewDataset(TorchDataset):
    """The reference pipeline's dataset: item ``i`` is two augmented views of uint8 image ``i`` (CPU)."""

    def __init__(self, images: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i]
        return self.transform(image), self.transform(image)


class EpochSampler(torch.utils.data.Sampler[int]):
    """``count`` indices per epoch, a fresh random order each time it is iterated (so one ``iter(loader)``
    is exactly one timed round and the workers idle between rounds)."""

    def __init__(self, n: int, count: int, seed: int = 0) -> None:
        self.n, self.count, self.epoch, self.seed = n, count, 0, seed

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        self.epoch += 1
        return iter(epoch_order(self.n, self.count, self.seed, self.epoch, None).tolist())


@dataclass
class Bench:
    """Everything the three pipelines share: one model, optimiser, views and the data."""

    device: torch.device
    method: SSLMethod
    optimizer: torch.optim.Optimizer
    views: SSLViews
    images: torch.Tensor  # uint8 [N, C, S, S] on the device
    ready: tuple[torch.Tensor, torch.Tensor]  # two float32 views [B, C, size, size] on the device
    loader: DataLoader
    batch: int
    amp: bool
    channels_last: bool

    def step(self, view1: torch.Tensor, view2: torch.Tensor) -> None:
        train_step(
            self.method,
            self.method,
            self.optimizer,
            view1,
            view2,
            self.device,
            amp=self.amp,
            channels_last=self.channels_last,
        )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_mosl(b: Bench, steps: int, seed: int) -> None:
    order = epoch_order(b.images.shape[0], steps * b.batch, 0, seed, None).to(b.device)  # once, as run_pretrain
    with seeded(seed, b.device):
        for step in range(steps):
            idx = order[step * b.batch : (step + 1) * b.batch]
            with torch.no_grad():
                view1, view2 = b.views(b.images[idx])
            b.step(view1, view2)


def run_views(b: Bench, steps: int, seed: int) -> None:
    order = epoch_order(b.images.shape[0], steps * b.batch, 0, seed, None).to(b.device)
    with seeded(seed, b.device), torch.no_grad():
        for step in range(steps):
            b.views(b.images[order[step * b.batch : (step + 1) * b.batch]])


def run_bare(b: Bench, steps: int, seed: int) -> None:
    for _ in range(steps):
        b.step(*b.ready)


def run_reference(b: Bench, steps: int, seed: int) -> None:
    for view1, view2 in b.loader:  # one epoch = ``steps`` batches
        b.step(view1.to(b.device, non_blocking=True), view2.to(b.device, non_blocking=True))


RUNNERS: dict[str, Callable[[Bench, int, int], None]] = {
    "mosl": run_mosl,
    "bare": run_bare,
    "reference": run_reference,
    "views": run_views,
}


def timed(b: Bench, name: str, steps: int, seed: int) -> float:
    """Images per second of ``steps`` steps of pipeline ``name``."""
    sync(b.device)
    start = time.perf_counter()
    RUNNERS[name](b, steps, seed)
    sync(b.device)
    return steps * b.batch / (time.perf_counter() - start)


def host_syncs(b: Bench, steps: int = 3) -> dict[str, int]:
    """CUDA only: where ``steps`` mosl steps make the host wait for the GPU (``file:line`` → count).

    A stream synchronisation stops the host from queueing the next kernels while the GPU works, so
    the augmentation's Python time is no longer hidden behind the previous step's kernels.
    """
    import warnings

    if b.device.type != "cuda":
        return {}
    sites: dict[str, int] = {}
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_mosl(b, steps, 20_000)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message):
            key = f"{Path(w.filename).name}:{w.lineno}"
            sites[key] = sites.get(key, 0) + 1
    return sites


def make_bench(args: argparse.Namespace, data_dir: Path, device: torch.device, steps: int) -> Bench:
    """Model, optimiser and views as ``run_pretrain`` builds them; the reference DataLoader over the same images."""
    cfg = PretrainConfig(
        method=args.method,
        data=(str(data_dir),),
        encoder=args.encoder,
        size=args.size,
        batch_size=args.batch_size,
        device=str(device),
    )
    data = load_pretrain_data(cfg)
    n, channels = data.images.shape[0], int(data.images.shape[1])
    hparams = resolve_hparams(cfg, max(1, n // cfg.batch_size))
    method, optimizer = build_method(cfg, channels, hparams, hparams["base_lr"] * cfg.batch_size / 256, device)
    method.train()
    views = SSLViews(cfg.size, channels, cfg.preset).to(device)
    images = data.images.to(device)
    with seeded(12345, device), torch.no_grad():
        ready = views(images[: cfg.batch_size])
    if cfg.channels_last and device.type == "cuda":
        ready = tuple(v.contiguous(memory_format=torch.channels_last) for v in ready)
    dataset = TwoViewDataset(data.images, reference_transform(cfg.size, views.crop_scale))
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=EpochSampler(n, steps * cfg.batch_size),
        num_workers=REFERENCE_WORKERS,
        persistent_workers=True,
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
    return Bench(device, method, optimizer, views, images, ready, loader, cfg.batch_size, cfg.amp, cfg.channels_last)


def synthetic_dataset(folder: Path) -> Path:
    """512 synthetic scans at 256 px, written by ``mosl prepare`` (a process pool: call under ``__main__``)."""
    from mosl_cli.prepare import run_prepare

    out = folder / "synthetic"
    run_prepare(PrepareConfig(("synthetic",), out=str(out), synthetic_count=512, size=256))
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def benchmark(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    device = resolve_device(args.device)
    steps = args.steps or (1 if device.type == "cpu" else 30)
    warmup = args.warmup if args.warmup is not None else (1 if device.type == "cpu" else 10)
    b = make_bench(args, data_dir, device, steps)
    # Warm-up: cuDNN algorithm choice, allocator, worker start-up; the reference loader's epochs are
    # ``steps`` long, so it warms up with at least one whole epoch.
    for name in ("views", *PIPELINES):
        RUNNERS[name](b, warmup if name != "reference" else steps, 10_000)
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        order = PIPELINES[r % 3 :] + PIPELINES[: r % 3]  # rotate: ABC, BCA, CAB, ...
        speeds = {name: timed(b, name, steps, r) for name in order}
        speeds["views"] = timed(b, "views", steps, r)
        rounds.append(speeds)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in speeds.items()), flush=True)

    def median(key: str) -> float:
        return statistics.median(s[key] for s in rounds)

    vs_bare = [s["mosl"] / s["bare"] for s in rounds]
    vs_reference = [s["mosl"] / s["reference"] for s in rounds]
    ratio_bare, ratio_reference = statistics.median(vs_bare), statistics.median(vs_reference)
    try:
        syncs: dict[str, Any] | None = host_syncs(b) if device.type == "cuda" else None
    except Exception as exc:  # a diagnosis only: never lose the timings over it
        syncs = {"error": repr(exc)}
    import kornia
    import torchvision

    return {
        "device": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "encoder": args.encoder,
        "method": args.method,
        "preset": b.views.preset,
        "size": args.size,
        "batch": args.batch_size,
        "images": int(b.images.shape[0]),
        "steps_per_round": steps,
        "rounds": args.rounds,
        "warmup": warmup,
        "reference_workers": REFERENCE_WORKERS,
        "images_per_s": {k: round(median(k), 2) for k in (*PIPELINES, "views")},
        "mosl_vs_bare": round(ratio_bare, 3),
        "mosl_vs_reference": round(ratio_reference, 3),
        "per_round": {
            "mosl_vs_bare": [round(v, 3) for v in vs_bare],
            "mosl_vs_reference": [round(v, 3) for v in vs_reference],
            "images_per_s": [{k: round(v, 2) for k, v in s.items()} for s in rounds],
        },
        "targets": {"mosl_vs_bare": TARGET_VS_BARE, "mosl_vs_reference": TARGET_VS_REFERENCE},
        "targets_met": {
            "mosl_vs_bare": ratio_bare >= TARGET_VS_BARE,
            "mosl_vs_reference": ratio_reference >= TARGET_VS_REFERENCE,
        },
        "host_syncs_in_3_mosl_steps": syncs,  # CUDA only: file:line -> count
        "versions": {
            "torch": torch.__version__,
            "kornia": kornia.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet50")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--method", default="simsiam")
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per pipeline per round (default: 1 on CPU, 30 on GPU)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps per pipeline (default: 1 on CPU, 10 on GPU)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data", type=Path, default=None, help="a prepared dataset dir (default: synthetic)")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data or synthetic_dataset(Path(tmp))
        result = benchmark(args, data_dir)
    result["data"] = str(args.data) if args.data else "synthetic (512 scans, 256 px)"
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
