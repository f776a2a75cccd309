"""``mosl pretrain``: self-supervised pre-training of exactly the U-Net that ``finetune`` will use.

The loop reads top to bottom: epoch order from ``(seed, epoch)`` → uint8 batch already on the device →
two kornia views (of one scan, or with ``--positives group`` of two members of its group) → method
forward (loss) → backward → step → momentum update → log. Labels and masks are never read. Under
``torchrun`` the same code runs data-parallel (see ``train.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mosl_cli.augment import PRESETS, Correspondence, SSLViews, check_jitter, seeded
from mosl_cli.config import WEIGHTS_FILE, PretrainConfig
from mosl_cli.data.positives import GroupPartners, check_positives
from mosl_cli.data.store import load_dataset
from mosl_cli.device import fused_optimizer, memory_format
from mosl_cli.errors import MoslError
from mosl_cli.fsutil import append_jsonl, read_jsonl, write_json
from mosl_cli.methods import METHODS, MethodOutput, SSLMethod
from mosl_cli.methods.backbone import SCOPES, PooledBackbone
from mosl_cli.methods.base import embedding_std
from mosl_cli.methods.dense import DENSE_POINTS, check_dense_weight
from mosl_cli.methods.mim import default_patch
from mosl_cli.models import ENCODER_PREFIX, build_model, save_weights, weights_metadata
from mosl_cli.train import (
    METRICS_FILE,
    Callback,
    CheckpointClock,
    RunCost,
    RunDir,
    all_ranks_agree,
    autocast,
    check_resume,
    cosine_lr,
    epoch_indices,
    init_distributed,
    load_checkpoint,
    mean_over_ranks,
    no_callback,
    save_checkpoint,
    set_lr,
    sync_buffers,
    wrap_ddp,
    write_config,
)

LOG_EVERY = 10  # steps between host syncs for the progress bar (keeps the device queue full)


@dataclass
class PretrainData:
    """Every pre-training image, one uint8 tensor ``[N, C, S, S]`` (on the training device).

    ``weights``: float ``[N]`` sampling weights when ``--data-weights`` mixes sources unevenly, else None.
    """

    images: torch.Tensor
    weights: torch.Tensor | None
    sources: list[dict[str, Any]]
    groups: list[str] | None = None  # each image's prepare group, prefixed by its --data index


@dataclass
class PretrainResult:
    out: Path
    epochs: int
    final_loss: float
    embedding_std: float
    images_per_s: float
    resumed_from: int | None
    model: torch.nn.Module  # the pre-trained smp model (encoder, and decoder for encoder-decoder)
    cost: dict[str, Any] = field(default_factory=dict)  # metrics.json's cost (RunCost.summary)


def load_pretrain_data(cfg: PretrainConfig) -> PretrainData:
    """Concatenate the images of every ``--data`` directory (test splits held out unless asked)."""
    if cfg.data_weights is not None and len(cfg.data_weights) != len(cfg.data):
        raise MoslError(
            f"--data-weights has {len(cfg.data_weights)} values for {len(cfg.data)} --data folders; give one per folder"
        )
    chunks: list[torch.Tensor] = []
    groups: list[str] = []
    weights: list[torch.Tensor] = []
    sources: list[dict[str, Any]] = []
    channels = size = None
    for i, path in enumerate(cfg.data):
        ds = load_dataset(path)
        keep = [j for j, r in enumerate(ds.records) if cfg.include_test or r["split"] != "test"]
        if not keep:
            raise MoslError(
                f"{path}: no images outside the test split; pass --include-test or prepare with other --splits"
            )
        images = ds.images[keep]
        groups += [f"{i}/{ds.records[j].get('group', ds.records[j]['id'])}" for j in keep]
        channels = channels or ds.channels
        if ds.channels != channels:
            raise MoslError(
                f"{path}: {ds.channels} channels but {cfg.data[0]} has {channels}; "
                "prepare both with the same --channels"
            )
        size = size or ds.size
        if ds.size != size:  # bring every source to the first one's stored size, once
            images = (
                F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
                .round()
                .clamp(0, 255)
                .to(torch.uint8)
            )
        chunks.append(images)
        w = cfg.data_weights[i] if cfg.data_weights else 1.0
        weights.append(torch.full((len(keep),), w / len(keep)))
        sources.append({"path": str(path), "fingerprint": ds.fingerprint(), "images": len(keep)})
    mixed = cfg.data_weights is not None
    return PretrainData(torch.cat(chunks), torch.cat(weights) if mixed else None, sources, groups)


def resolve_hparams(cfg: PretrainConfig, steps_per_epoch: int) -> dict[str, Any]:
    """The method's paper defaults overridden by the options that were given (an option the method
    does not have is a user error)."""
    method_cls = METHODS[cfg.method]
    given = {
        "temperature": cfg.temperature,
        "proj_dim": cfg.proj_dim,
        "proj_hidden": cfg.proj_hidden,
        "pred_hidden": cfg.pred_hidden,
        "momentum": cfg.momentum,
        "queue_size": cfg.queue_size,
        "mask_ratio": cfg.mask_ratio,
        "patch_size": cfg.patch_size,
        "base_lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
    }
    hp = method_cls.resolve(given)
    if "queue_size" in hp and cfg.queue_size is None:
        # MoCo's 65,536 assumes ImageNet; on a small set keep about a quarter epoch of keys so the
        # queue never holds the same image twice.
        hp["queue_size"] = min(int(hp["queue_size"]), cfg.batch_size * max(1, steps_per_epoch // 4))
    if "patch_size" in hp and hp["patch_size"] is None:
        hp["patch_size"] = default_patch(cfg.size)  # recorded in config.json as the size it resolved to
    return hp


def build_method(
    cfg: PretrainConfig, channels: int, hparams: dict[str, Any], base_lr: float, device: torch.device
) -> tuple[SSLMethod, torch.optim.SGD]:
    """The U-Net (seeded with ``cfg.seed``) inside ``cfg.method`` on ``device``, and its SGD optimiser
    (``base_lr`` already scaled to the batch; each group's ``initial_lr`` set for :func:`set_lr`)."""
    torch.manual_seed(cfg.seed)  # the same seed gives the same initial weights
    model = build_model(cfg.arch, cfg.encoder, channels)
    method = METHODS[cfg.method](PooledBackbone(model, cfg.scope), **hparams)
    if cfg.dense_weight:
        method.add_dense_loss(cfg.dense_weight)
    method = method.to(device)
    method = method.to(memory_format=memory_format(device, cfg.channels_last))
    groups = method.param_groups()
    for group in groups:
        group["initial_lr"] = base_lr
    optimizer = torch.optim.SGD(
        groups,
        lr=base_lr,
        momentum=hparams.get("sgd_momentum", 0.9),
        weight_decay=hparams["weight_decay"],
        fused=fused_optimizer(device),
    )
    return method, optimizer


def train_step(
    trained: torch.nn.Module,
    method: SSLMethod,
    optimizer: torch.optim.Optimizer,
    view1: torch.Tensor,
    view2: torch.Tensor,
    device: torch.device,
    *,
    amp: bool = True,
    channels_last: bool = True,
    points: Correspondence | None = None,
) -> MethodOutput:
    """One optimiser step on two views, float32 ``[B, C, size, size]`` on ``device`` (and the points both
    show, for the pixel-level loss): forward (autocast, device.autocast) → backward → SGD step →
    :meth:`SSLMethod.after_step`. ``trained`` is ``method`` or its DDP wrapper.

    The body of :func:`run_pretrain`'s loop after the views are made; ``benchmarks/pretrain.py`` times it too.
    """
    fmt = memory_format(device, channels_last)
    view1, view2 = view1.contiguous(memory_format=fmt), view2.contiguous(memory_format=fmt)
    with autocast(device, amp):
        out = trained(view1, view2, points)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    method.after_step()
    return out


def run_pretrain(cfg: PretrainConfig, callback: Callback = no_callback) -> PretrainResult:
    """Pre-train ``cfg.arch``/``cfg.encoder`` with ``cfg.method``; write the run directory ``cfg.out``."""
    if cfg.method not in METHODS:
        raise MoslError(f"unknown --method {cfg.method!r}; use one of {', '.join(METHODS)}")
    if cfg.scope not in SCOPES:
        raise MoslError(f"unknown --scope {cfg.scope!r}; use encoder or encoder-decoder")
    if cfg.preset not in PRESETS:
        raise MoslError(f"unknown --preset {cfg.preset!r}; use one of {', '.join(PRESETS)}")
    METHODS[cfg.method].check_config(cfg)  # all before any output is written
    check_dense_weight(cfg.dense_weight, cfg.scope)
    check_positives(cfg.positives, cfg.dense_weight)
    check_jitter(cfg.jitter)
    clock = CheckpointClock(cfg.checkpoint_every)
    if cfg.epochs < 1 or cfg.batch_size < 2:
        raise MoslError("--epochs must be ≥ 1 and --batch-size ≥ 2")
    dist_info, device = init_distributed(cfg.device)
    cost = RunCost(device, dist_info)
    if cfg.batch_size % dist_info.world_size:
        raise MoslError(
            f"--batch-size {cfg.batch_size} is the global batch: "
            f"make it a multiple of the {dist_info.world_size} processes"
        )
    run = RunDir(Path(cfg.out))
    resume = run.prepare(cfg.resume, cfg.overwrite, dist_info.is_main)
    check_resume(run, cfg, resume)

    data = load_pretrain_data(cfg)
    n_images, channels = data.images.shape[0], data.images.shape[1]
    images = data.images.to(device)  # uint8 stays uint8 until the views are made on the device
    partners = GroupPartners(data.groups or [], device) if cfg.positives == "group" else None
    batch, per_rank = cfg.batch_size, cfg.batch_size // dist_info.world_size
    steps_per_epoch = cfg.steps_per_epoch or max(1, n_images // batch)
    total_steps, warmup_steps = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    hparams = resolve_hparams(cfg, steps_per_epoch)
    base_lr = hparams["base_lr"] * batch / 256  # linear scaling (Goyal et al. 2017)
    weight_decay = hparams["weight_decay"]

    method, optimizer = build_method(cfg, int(channels), hparams, base_lr, device)
    model = method.backbone.model
    views = SSLViews(
        cfg.size, int(channels), cfg.preset, tuple(cfg.crop_scale) if cfg.crop_scale else None, cfg.jitter
    ).to(device)

    start_epoch, resumed_from = 0, None
    if resume:
        progress = load_checkpoint(run, method, optimizer, device)
        start_epoch = resumed_from = int(progress["epoch"])
        cost.resume_from(progress.get("cost"))
        if dist_info.is_main:
            run.trim_log(start_epoch)
    trained = wrap_ddp(method, dist_info, device)
    resolved = {
        "effective_lr": base_lr,
        "weight_decay": weight_decay,
        "hparams": method.hparams,
        "images": n_images,
        "channels": int(channels),
        "steps_per_epoch": steps_per_epoch,
        "global_batch": batch,
        "world_size": dist_info.world_size,
        "device": str(device),
        "data": data.sources,
        "positives": cfg.positives,
        **({"positive_groups": partners.groups} if partners else {}),
    }
    if dist_info.is_main:
        write_config(run, "pretrain", cfg, resolved)
    callback(
        "start",
        {
            "epochs": cfg.epochs,
            "steps_per_epoch": steps_per_epoch,
            "start_epoch": start_epoch,
            "images": n_images,
            "device": str(device),
            "lr": base_lr,
        },
    )

    record: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        method.train()
        order = epoch_indices(
            list(range(n_images)), steps_per_epoch * batch, cfg.seed, epoch, dist_info, device, data.weights
        )
        loss_sum = torch.zeros((), device=device)
        std_last, t0 = float("nan"), time.perf_counter()
        with seeded(cfg.seed * 7919 + epoch * 104729 + dist_info.rank, device):
            for step in range(steps_per_epoch):
                global_step = epoch * steps_per_epoch + step
                lr = cosine_lr(global_step, total_steps, warmup_steps, base_lr)
                set_lr(optimizer, lr)
                idx = order[step * per_rank : (step + 1) * per_rank]
                with torch.no_grad():
                    view1, view2 = views(images[idx], None if partners is None else images[partners(idx)])
                    points = views.correspondence(DENSE_POINTS, device) if method.dense is not None else None
                out = train_step(
                    trained,
                    method,
                    optimizer,
                    view1,
                    view2,
                    device,
                    amp=cfg.amp,
                    channels_last=cfg.channels_last,
                    points=points,
                )
                loss_sum += out.loss.detach().float()
                if (step + 1) % LOG_EVERY == 0 or step + 1 == steps_per_epoch:
                    loss_now = float(out.loss.detach())
                    if not all_ranks_agree(bool(torch.isfinite(loss_sum)), dist_info, device):
                        raise MoslError(
                            f"loss became NaN/inf at epoch {epoch + 1} step {step + 1}; lower --lr or check the data "
                            f"({run.path} keeps the last good epoch)"
                        )
                    std_last = embedding_std(out.embedding.detach().float())
                    seen = (step + 1) * batch
                    callback(
                        "step",
                        {
                            "epoch": epoch + 1,
                            "step": step + 1,
                            "loss": loss_now,
                            "lr": lr,
                            "embedding_std": std_last,
                            "images_per_s": seen / (time.perf_counter() - t0),
                        },
                    )
        sync_buffers(method, dist_info)
        loss_sum = mean_over_ranks(loss_sum, dist_info)
        seconds = time.perf_counter() - t0
        record = {
            "epoch": epoch + 1,
            "loss": float(loss_sum) / steps_per_epoch,
            "lr": lr,
            "embedding_std": std_last,
            "images_per_s": steps_per_epoch * batch / seconds,
            "seconds": seconds,
        }
        spent = cost.totals()  # a collective under DDP: before the rank-0 branch
        if dist_info.is_main:
            append_jsonl(run.log, record)
            if clock.due(final=epoch + 1 == cfg.epochs):
                save_checkpoint(run, method, optimizer, {"epoch": epoch + 1, "cost": spent})
                _save_pretrained(run.file(WEIGHTS_FILE), method, cfg, data.sources)
        callback("epoch", record)

    if not record and resumed_from is not None:  # the run had already finished
        record = (read_jsonl(run.log) or [{}])[-1]
    result = PretrainResult(
        run.path,
        cfg.epochs,
        float(record.get("loss", float("nan"))),
        float(record.get("embedding_std", float("nan"))),
        float(record.get("images_per_s", 0.0)),
        resumed_from,
        model,
        cost.summary(cost.totals()),
    )
    if dist_info.is_main:
        write_json(
            run.file(METRICS_FILE),
            {
                "final_loss": result.final_loss,
                "embedding_std": result.embedding_std,
                "images_per_s": result.images_per_s,
                "epochs": cfg.epochs,
                "cost": result.cost,
            },
        )
    return result


def _save_pretrained(path: Path, method: torch.nn.Module, cfg: PretrainConfig, sources: list[dict[str, Any]]) -> None:
    """Write the U-Net's encoder (and decoder for ``encoder-decoder``) under smp's names."""
    model = method.backbone.model
    keep = (ENCODER_PREFIX,) if cfg.scope == "encoder" else (ENCODER_PREFIX, "decoder.")
    state = {k: v for k, v in model.state_dict().items() if k.startswith(keep)}
    meta = weights_metadata(
        kind="pretrained",
        arch=cfg.arch,
        encoder=cfg.encoder,
        in_channels=int(model.encoder._in_channels),
        size=cfg.size,
        scope=cfg.scope,
        method=cfg.method,
        data=sources,
        seed=cfg.seed,
        extra={"epochs": cfg.epochs, "preset": cfg.preset, "jitter": cfg.jitter, "dense_weight": cfg.dense_weight},
    )
    save_weights(path, state, meta)
