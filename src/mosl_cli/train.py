"""What the pretrain and finetune loops share: device, schedule, distributed plumbing, run directory,
checkpoint and resume.

A checkpoint (``checkpoint.safetensors`` in the run directory) holds the whole trainable state as
tensors (model, optimizer moments, RNG state) and the rest as JSON in its header: no pickle is written.
It is replaced atomically at the end of an epoch (:class:`CheckpointClock` says which), so a killed
run resumes at the epoch of its last checkpoint and, because every epoch draws its randomness from
``(seed, epoch)``, ends exactly where an uninterrupted run would.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mosl_cli import __version__
from mosl_cli.config import to_dict
from mosl_cli.device import autocast, resolve_device  # noqa: F401 (autocast: pretrain and finetune import it from here)
from mosl_cli.errors import MoslError, UsageError
from mosl_cli.fsutil import atomic_path, read_jsonl, remove_stale_temps, write_json, write_text
from mosl_cli.names import CHECKPOINT_FILE, CONFIG_FILE, LOG_FILE, METRICS_FILE, WEIGHTS_FILE  # also imported from here

# A progress callback receives an event name ("start", "step", "epoch", "message") and its fields.
Callback = Callable[[str, dict[str, Any]], None]


def no_callback(event: str, info: dict[str, Any]) -> None:
    """The callback used when the caller passes none."""


# --------------------------------------------------------------------------- device and schedule


def _warmup_then(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, decay: Callable[[float], float]
) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then ``base_lr·decay(progress)``, progress going
    from 0 to 1 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * decay(progress)


def cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, final_ratio: float = 0.0) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then half-cosine decay to ``final_ratio·base_lr``
    at ``total_steps`` (Loshchilov & Hutter 2017; the schedule of SimCLR, MoCo v2 and SimSiam)."""
    return _warmup_then(
        step,
        total_steps,
        warmup_steps,
        base_lr,
        lambda p: final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * p)),
    )


def poly_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, exponent: float = 0.9) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then ``base_lr·(1 − progress)^exponent``, which
    reaches 0 at ``total_steps`` (nnU-Net's "poly" schedule, exponent 0.9)."""
    return _warmup_then(step, total_steps, warmup_steps, base_lr, lambda p: (1 - p) ** exponent)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every param group's lr to ``lr × group['lr_scale']``; groups flagged ``fix_lr`` keep ``lr``
    unscaled by the schedule's base."""
    for group in optimizer.param_groups:
        if group.get("fix_lr"):
            group["lr"] = group["initial_lr"]
        else:
            group["lr"] = lr * group.get("lr_scale", 1.0)


def epoch_order(n: int, count: int, seed: int, epoch: int, weights: torch.Tensor | None) -> torch.Tensor:
    """The global sample order of one epoch, ``int64 [count]``, a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if weights is not None:
        return torch.multinomial(weights, count, replacement=True, generator=g)
    perms = [torch.randperm(n, generator=g) for _ in range(-(-count // n))]
    return torch.cat(perms)[:count]


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run plainly)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


LEAVE_BARRIER_SECONDS = 60  # at exit, how long a rank waits for the others before leaving the process group


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the ``torchrun`` process group when its variables are set (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device_name)
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
        atexit.register(_leave_process_group)
    return info, device


def _leave_process_group() -> None:
    """Destroy the process group while Python is still whole (as torch advises): left to interpreter
    finalisation, gloo's threads can release tensors after the interpreter is gone and abort a rank
    that finished its work. On gloo the ranks first meet at a barrier, so that no rank tears its
    connections down while another still reads from them; a rank that is gone ends the wait early."""
    if not dist.is_initialized():
        return
    if dist.get_backend() == "gloo":
        try:
            dist.monitored_barrier(timeout=timedelta(seconds=LEAVE_BARRIER_SECONDS))
        except RuntimeError:  # a rank failed or left first: nothing to wait for
            pass
    dist.destroy_process_group()


def wrap_ddp(module: nn.Module, info: DistInfo, device: torch.device, find_unused: bool = False) -> nn.Module:
    """DistributedDataParallel (with synchronised batch norm on GPUs) when distributed, else ``module``.

    PyTorch's SyncBatchNorm runs on accelerators only; on CPU (gloo) each rank keeps local BN
    statistics during an epoch and :func:`sync_buffers` copies rank 0's at its end. Buffers are not
    broadcast every step (a MoCo queue would be re-sent each time; it already agrees across ranks).
    """
    if not info.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused, broadcast_buffers=False)


def sync_buffers(module: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BN statistics, MoCo queue) to every rank so saved states agree."""
    if info.enabled:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def mean_over_ranks(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of a scalar tensor over all ranks (each rank's loss averages only its own samples)."""
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value)
        value /= info.world_size
    return value


def all_ranks_agree(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True when ``flag`` holds on every rank (a rank that fails stops the others)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def shard(indices: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's strided share of an epoch's global index order."""
    return indices[info.rank :: info.world_size] if info.enabled else indices


def epoch_indices(
    indices: list[int],
    count: int,
    seed: int,
    epoch: int,
    dist_info: DistInfo,
    device: torch.device,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """This rank's share of one epoch's order over the dataset ``indices``: int64 ``[count / world]``,
    copied to ``device`` once an epoch, so that no step waits on a blocking copy (on CUDA it would wait
    for the queue each time). ``weights`` (float ``[len(indices)]``) draw with replacement in
    proportion to them; None: shuffled passes."""
    order = epoch_order(len(indices), count, seed, epoch, weights)
    return torch.tensor(indices)[shard(order, dist_info)].to(device)


# --------------------------------------------------------------------------- run directory


@dataclass(frozen=True)
class RunDir:
    """The run directory of docs/design.md: model, config, per-epoch log, final metrics, checkpoint."""

    path: Path

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def log(self) -> Path:
        return self.path / LOG_FILE

    def file(self, name: str) -> Path:
        return self.path / name

    def prepare(self, resume: bool, overwrite: bool, is_main: bool) -> bool:
        """Check the folder; return True when a checkpoint should be resumed.

        A folder holding an earlier run needs ``--resume`` (continue) or ``--overwrite`` (start again).
        """
        has_run = self.checkpoint.exists() or (self.path / CONFIG_FILE).exists()
        if has_run and not (resume or overwrite):
            raise MoslError(
                f"{self.path} already holds a run; "
                "pass --resume to continue it, --overwrite to replace it, or another --out"
            )
        if has_run and overwrite and not resume and is_main:
            for name in (CHECKPOINT_FILE, CONFIG_FILE, LOG_FILE, METRICS_FILE, WEIGHTS_FILE):
                (self.path / name).unlink(missing_ok=True)
        if is_main:
            self.path.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.path)  # half-written files of a run killed with SIGKILL
        return resume and self.checkpoint.exists()

    def trim_log(self, last_epoch: int) -> None:
        """Drop log lines after ``last_epoch`` (written by a run killed before its checkpoint)."""
        kept = [r for r in read_jsonl(self.log) if int(r.get("epoch", 0)) <= last_epoch]
        write_text(self.log, "".join(json.dumps(r) + "\n" for r in kept))


def versions() -> dict[str, str]:
    """Versions of what shaped the result, written into ``config.json``."""
    import kornia
    import segmentation_models_pytorch as smp

    return {
        "mosl": __version__,
        "torch": torch.__version__,
        "smp": smp.__version__,
        "kornia": kornia.__version__,
        "python": platform.python_version(),
    }


def write_config(run: RunDir, command: str, cfg: Any, resolved: dict[str, Any]) -> None:
    """``config.json``: the whole settings dataclass, what defaults resolved to, versions."""
    write_json(
        run.file(CONFIG_FILE),
        {
            "command": command,
            "config": to_dict(cfg),
            "resolved": resolved,
            "versions": versions(),
        },
    )


# Settings that may differ on --resume: where the run is, how it is checkpointed, where it computes.
RESUME_FREE = frozenset({"out", "resume", "overwrite", "device", "checkpoint_every"})
# Option names that are not the field name with dashes.
_OPTION_NAMES = {"amp": "--no-amp", "augment": "--no-augment", "crop_scale": "--crop-min"}


def check_resume(run: RunDir, cfg: Any, resuming: bool) -> None:
    """Refuse ``--resume`` when an option that shapes the result differs from the run's ``config.json``.

    Compared: every setting of ``cfg`` except :data:`RESUME_FREE`; a key that only one side has (a
    setting added or removed by another mosl version) is not compared. Nothing is checked when no
    checkpoint is resumed (the run then starts from scratch).
    """
    if not resuming:
        return
    path = run.file(CONFIG_FILE)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["config"]
        if not isinstance(saved, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise MoslError(
            f"{path}: missing or unreadable, so --resume cannot check the run's options; "
            "pass --overwrite to start again"
        ) from None
    now = to_dict(cfg)
    changed = [k for k in now if k in saved and k not in RESUME_FREE and now[k] != saved[k]]
    if changed:
        parts = ", ".join(f"{_option(k)} {_show(k, saved[k])} → {_show(k, now[k])}" for k in changed)
        raise MoslError(
            f"{run.path}: --resume with changed options ({parts}); resume with the run's options, "
            "or pass --overwrite or another --out to start a new run"
        )


def _option(field_name: str) -> str:
    return _OPTION_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def _show(field_name: str, value: Any) -> str:
    """A setting as its option shows it (``--no-amp True`` for ``amp`` False)."""
    if isinstance(value, bool) and _option(field_name).startswith("--no-"):
        value = not value
    if isinstance(value, list):
        return ",".join(_show("", v) for v in value)
    return "default" if value is None else str(value)


# --------------------------------------------------------------------------- checkpoint


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, extra in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(extra)
    return {"state": state, "param_groups": meta["param_groups"]}


def _match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each restored state tensor (Adam's moments, SGD's momentum) its parameter's memory layout.

    The checkpoint stores contiguous tensors, but a model in channels_last has channels_last conv
    weights; the fused optimisers walk a parameter and its state as flat memory, so a moment left
    contiguous would be added to the wrong elements and a resumed run would drift from an
    uninterrupted one.
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    optimizer.state[param][key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


class CheckpointClock:
    """When an epoch's end writes the checkpoint: after the first epoch, after the last, and otherwise
    once at least ``every`` seconds have passed since the last write (0: every epoch).

    A checkpoint holds the model, the optimiser state and the RNG state (a hundred megabytes or more
    for a resnet U-Net), so writing one after every short epoch can cost more time than the epoch;
    writing on a clock bounds that cost. An interrupted run loses at most ``every`` seconds of
    training; ``resume`` trims the log back to the checkpoint.
    """

    def __init__(self, every: float) -> None:
        check_checkpoint_every(every)
        self.every, self.last = every, None

    def due(self, final: bool) -> bool:
        now = time.monotonic()
        if final or self.last is None or now - self.last >= self.every:
            self.last = now
            return True
        return False


class RunCost:
    """What a run has cost so far, across ``--resume``: wall seconds, process CPU seconds summed over
    ranks, and GPU seconds (wall × GPUs in use on CUDA, else 0).

    ``earlier``: the totals a checkpoint stored (:meth:`totals` of the interrupted run), added to
    this process's. The work between that checkpoint and the interruption is redone and counted once.
    """

    KEYS = ("wall_s", "cpu_s", "gpu_s")

    def __init__(self, device: torch.device, info: DistInfo) -> None:
        self.device, self.info = device, info
        self.earlier = dict.fromkeys(self.KEYS, 0.0)
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def resume_from(self, earlier: dict[str, Any] | None) -> None:
        self.earlier = {k: float((earlier or {}).get(k, 0.0)) for k in self.KEYS}

    def totals(self) -> dict[str, float]:
        """Totals in seconds, JSON-ready for a checkpoint. A collective under DDP: every rank calls it."""
        wall = time.perf_counter() - self.wall0
        cpu = time.process_time() - self.cpu0
        if self.info.enabled:
            summed = mean_over_ranks(torch.tensor(cpu, dtype=torch.float64, device=self.device), self.info)
            cpu = float(summed) * self.info.world_size
        gpus = self.info.world_size if self.device.type == "cuda" else 0
        now = {"wall_s": wall, "cpu_s": cpu, "gpu_s": wall * gpus}
        return {k: self.earlier[k] + now[k] for k in self.KEYS}

    def summary(self, totals: dict[str, float]) -> dict[str, Any]:
        """``metrics.json``'s ``cost``: this process's device type and rank count, and the totals in minutes."""
        return {
            "device": self.device.type,
            "world_size": self.info.world_size,
            **{k.replace("_s", "_minutes"): round(totals[k] / 60, 4) for k in self.KEYS},
        }


def check_checkpoint_every(every: float) -> None:
    """``--checkpoint-every`` is a number of seconds, 0 or more."""
    if not every >= 0:
        raise UsageError(f"--checkpoint-every {every} must be 0 or more seconds (0: a checkpoint after every epoch)")


def save_checkpoint(
    run: RunDir,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: dict[str, Any],
    extra: dict[str, nn.Module] | None = None,
) -> None:
    """Write model + optimizer + RNG state and ``progress`` (epoch, step, best …) atomically.

    ``extra``: further modules (an EMA copy of the model) saved under their name as prefix.
    """
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    for name, other in (extra or {}).items():
        tensors.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in other.state_dict().items()})
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    tensors.update({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()})
    tensors["rng.cpu"] = torch.get_rng_state()
    meta = {"progress": json.dumps(progress), "optimizer": json.dumps(opt_meta)}
    with atomic_path(run.checkpoint) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_checkpoint(
    run: RunDir,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    extra: dict[str, nn.Module] | None = None,
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote (``extra`` modules too); return its ``progress``."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(run.checkpoint), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(run.checkpoint), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise MoslError(f"{run.checkpoint}: unreadable checkpoint ({exc}); pass --overwrite to start again") from exc
    for name, target in {"model": module, **(extra or {})}.items():
        state = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(f"{name}.")}
        try:
            target.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise MoslError(
                f"{run.checkpoint}: does not fit these settings ({str(exc).splitlines()[0]}); "
                "resume with the same options"
            ) from exc
    opt_tensors = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, json.loads(meta["optimizer"])))
    _match_param_layout(optimizer)
    torch.set_rng_state(tensors["rng.cpu"].cpu())
    return json.loads(meta["progress"])


class WeightAverage(nn.Module):
    """An exponential moving average of a model's weights (and float buffers: BN statistics).

    ``update(model, step)`` after optimizer step ``step`` (0-based): ``avg ← d·avg + (1 − d)·current``
    with ``d = min(decay, (1 + step) / (10 + step))``, the warm-up of timm's ModelEmaV3, so early
    averages are not dominated by the random initial weights. ``module`` is a full copy usable for
    validation and saving.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        import copy

        if not 0.0 <= decay < 1.0:
            raise UsageError(f"--ema-decay {decay} must be in [0, 1), e.g. 0.998")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        current = dict(model.state_dict())
        floats, targets = [], []
        for name, avg in self.module.state_dict().items():
            if avg.is_floating_point():
                targets.append(avg)
                floats.append(current[name])
            else:
                avg.copy_(current[name])
        torch._foreach_lerp_(targets, floats, 1.0 - decay)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state: Any, strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        return self.module.load_state_dict(state, strict=strict, assign=assign)
