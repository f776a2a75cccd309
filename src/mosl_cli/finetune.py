"""``mosl finetune``: train a segmentation U-Net on a fraction of the labels, from pre-trained weights
(mosl's own or another project's) or from scratch (``--init none``, the supervised baseline).

Training uses the train split, model selection the val split (best val Dice kept, early stopping with
patience). Loss: soft Dice + BCE. Image and mask are augmented together by kornia on the device.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mosl_cli import hub
from mosl_cli.augment import SegAugment, seeded
from mosl_cli.config import DEFAULT_PRETRAIN_RUN, WEIGHTS_FILE, FinetuneConfig
from mosl_cli.data.store import Dataset, load_dataset
from mosl_cli.device import fused_optimizer, memory_format
from mosl_cli.errors import MoslError
from mosl_cli.evaluate import forward_probabilities
from mosl_cli.fsutil import append_jsonl, read_jsonl, write_json
from mosl_cli.metrics import confusion, dice
from mosl_cli.models import build_model, load_into, model_inputs, read_metadata, save_weights, weights_metadata
from mosl_cli.train import (
    METRICS_FILE, Callback, CheckpointClock, RunDir, all_ranks_agree, autocast, cosine_lr, epoch_order,
    init_distributed, load_checkpoint, mean_over_ranks, no_callback, save_checkpoint, set_lr, shard, sync_buffers,
    wrap_ddp, write_config,
)

MIN_STEPS_PER_EPOCH = 10


@dataclass
class FinetuneResult:
    out: Path
    best_epoch: int
    best_val_dice: float
    epochs_run: int
    labelled: int
    init: dict[str, Any]
    model: nn.Module  # the last epoch's weights (the best ones are in out/model.safetensors)


def label_subset(ds: Dataset, fraction: float, seed: int) -> list[int]:
    """Labelled train indices kept at ``fraction``: stratified by class, nested across fractions.

    Each class's train images are put in one seeded order and the first ``ceil(fraction·n)`` are kept,
    so with one seed the 10 % subset lies inside the 25 % subset, which lies inside the 50 % one.
    """
    if not 0 < fraction <= 1:
        raise MoslError(f"--label-fraction {fraction} is outside (0, 1]; use e.g. 0.1 for 10 % of the labels")
    by_class: dict[str, list[int]] = {}
    for i in ds.indices("train", labelled=True):
        by_class.setdefault(str(ds.records[i]["class"]), []).append(i)
    if not by_class:
        raise MoslError(f"{ds.path}: the train split has no labelled image; prepare a dataset with masks")
    kept: list[int] = []
    for name in sorted(by_class):
        members = by_class[name]
        g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        order = torch.randperm(len(members), generator=g).tolist()
        kept += [members[j] for j in order[: max(1, math.ceil(fraction * len(members)))]]
    return sorted(kept)


def resolve_init(cfg: FinetuneConfig) -> str:
    """``auto`` → the weights ``mosl pretrain`` wrote by default here when they exist, else ``none``;
    a published name (``imagenet``, see :mod:`hub`) is fetched; a named file must exist (checked before
    any output folder is made)."""
    if cfg.init == "auto":
        default = Path(DEFAULT_PRETRAIN_RUN) / WEIGHTS_FILE
        return str(default) if default.is_file() else "none"
    if hub.is_weight_name(cfg.init):  # published weights (imagenet, ...): fetched here, before any output
        hub.fetch(cfg.encoder, cfg.init)
        return cfg.init
    if cfg.init != "none" and not Path(cfg.init).is_file():
        raise MoslError(f"--init {cfg.init}: no such file; pass a weight file, imagenet, `auto` or `none`")
    return cfg.init


def build_finetune_model(cfg: FinetuneConfig, init: str, channels: int) -> tuple[nn.Module, dict[str, Any]]:
    """The U-Net to fine-tune and a description of its initialisation (what was loaded)."""
    if init == "none":
        return build_model(cfg.arch, cfg.encoder, channels), {"init": "none"}
    if hub.is_weight_name(init):
        model = build_model(cfg.arch, cfg.encoder, channels)
        return model, {**hub.load_published(model, cfg.encoder, init), "arch": cfg.arch, "encoder": cfg.encoder}
    path = Path(init)  # resolve_init checked that it exists
    arch, encoder, meta = cfg.arch, cfg.encoder, None
    if path.suffix == ".safetensors":
        try:
            meta = read_metadata(path)
        except MoslError:
            meta = None  # a plain safetensors state dict: loaded by name below
    if meta is not None:  # a mosl file rebuilds its own architecture
        arch, encoder = meta["arch"], meta["encoder"]
        if int(meta["in_channels"]) != channels:
            raise MoslError(f"{path}: made for {meta['in_channels']}-channel images but the dataset has {channels}; prepare with --channels {meta['in_channels']}")
    model = build_model(arch, encoder, channels)
    report = load_into(model, path)
    return model, {"init": str(path), "arch": arch, "encoder": encoder, "method": (meta or {}).get("method"),
                   "scope": (meta or {}).get("scope"), "load": report.summary()}


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice (over the batch) + BCE. ``logits``, ``target``: float ``[B, 1, H, W]``, target 0/1."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    soft_dice = (2 * inter + 1.0) / (prob.sum() + target.sum() + 1.0)
    return (1 - soft_dice) + F.binary_cross_entropy_with_logits(logits, target)


@torch.no_grad()
def validation_dice(model: nn.Module, ds: Dataset, idx: list[int], size: int, device: torch.device,
                    amp: bool, channels_last: bool = True, batch: int = 64) -> float:
    """Mean per-case Dice on ``idx`` at the training size (empty-mask rule of ``metrics``)."""
    assert ds.masks is not None
    model.eval()
    scores = []
    for start in range(0, len(idx), batch):
        sel = torch.tensor(idx[start : start + batch])
        x = model_inputs(ds.images[sel].to(device), size)
        prob = forward_probabilities(model, x, amp=amp, channels_last=channels_last)
        target = F.interpolate(ds.masks[sel].to(device).float(), size=(size, size), mode="nearest") > 0.5
        scores.append(dice(*confusion(prob > 0.5, target)[:3]))
    return float(torch.cat(scores).mean())


def _param_groups(model: nn.Module, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    encoder = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    return [{"params": encoder, "lr_scale": cfg.encoder_lr_scale}, {"params": rest, "lr_scale": 1.0}]


def _set_encoder_frozen(model: nn.Module, frozen: bool, keep_bn_statistics: bool = False) -> None:
    """Freeze (no grad, BN statistics fixed) or release the encoder; with ``keep_bn_statistics`` its BN
    layers stay in eval mode either way (the initial weights' running statistics normalise)."""
    for p in model.encoder.parameters():
        p.requires_grad_(not frozen)
    model.encoder.train(not frozen)
    if keep_bn_statistics:
        for module in model.encoder.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):  # noqa: SLF001 - torch's common BN base
                module.eval()


def run_finetune(cfg: FinetuneConfig, callback: Callback = no_callback) -> FinetuneResult:
    """Fine-tune on ``cfg.label_fraction`` of the train labels; write the run directory ``cfg.out``."""
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise MoslError("--epochs and --batch-size must be ≥ 1")
    clock = CheckpointClock(cfg.checkpoint_every)
    ds = load_dataset(cfg.data)
    if ds.masks is None:
        raise MoslError(f"{cfg.data}: the dataset has no masks; fine-tuning needs a labelled dataset (e.g. BUSI)")
    train_idx = label_subset(ds, cfg.label_fraction, cfg.seed)
    val_idx = ds.indices("val", labelled=True)
    init = resolve_init(cfg)
    if cfg.freeze_encoder_bn and init == "none":
        raise MoslError("--freeze-encoder-bn keeps pre-trained BN statistics, but --init is none; pass pre-trained weights or drop the flag")
    dist_info, device = init_distributed(cfg.device)
    run = RunDir(Path(cfg.out))
    resume = run.prepare(cfg.resume, cfg.overwrite, dist_info.is_main)

    torch.manual_seed(cfg.seed)
    model, init_info = build_finetune_model(cfg, init, ds.channels)
    if cfg.init == "auto":
        init_info["auto"] = True
    model = model.to(device)
    model = model.to(memory_format=memory_format(device, cfg.channels_last))
    optimizer = torch.optim.AdamW(
        _param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused_optimizer(device)
    )
    augment = SegAugment(cfg.size, cfg.augment).to(device)
    images, masks = ds.images.to(device), ds.masks.to(device)
    train_order_src = torch.tensor(train_idx)
    steps_per_epoch = cfg.steps_per_epoch or max(MIN_STEPS_PER_EPOCH, math.ceil(len(train_idx) / cfg.batch_size))
    total_steps = cfg.epochs * steps_per_epoch
    per_rank = max(1, cfg.batch_size // dist_info.world_size)

    progress = {"epoch": 0, "best_dice": -1.0, "best_epoch": 0, "since_best": 0}
    if resume:
        progress = load_checkpoint(run, model, optimizer, device)
        if dist_info.is_main:
            run.trim_log(int(progress["epoch"]))
    arch_meta = {"arch": init_info.get("arch", cfg.arch), "encoder": init_info.get("encoder", cfg.encoder)}
    resolved = {"init": init_info, "labelled_train": len(train_idx), "val": len(val_idx), "steps_per_epoch": steps_per_epoch,
                "global_batch": cfg.batch_size, "world_size": dist_info.world_size, "device": str(device),
                "data_fingerprint": ds.fingerprint(), "classes": _class_counts(ds, train_idx), **arch_meta}
    if dist_info.is_main:
        write_config(run, "finetune", cfg, resolved)
    callback("start", {"epochs": cfg.epochs, "steps_per_epoch": steps_per_epoch, "start_epoch": progress["epoch"],
                       "images": len(train_idx), "device": str(device), "init": init_info})
    trained = wrap_ddp(model, dist_info, device, find_unused=cfg.freeze_encoder_epochs > 0)

    def patience_spent() -> bool:  # early stopping: cfg.patience epochs without a better val Dice
        return bool(val_idx) and progress["since_best"] >= cfg.patience

    t_start = time.perf_counter()
    for epoch in range(int(progress["epoch"]), cfg.epochs):
        if patience_spent():
            break
        model.train()
        _set_encoder_frozen(model, epoch < cfg.freeze_encoder_epochs, cfg.freeze_encoder_bn)
        # dataset indices of the whole epoch, copied to the device once (as in pretrain): no blocking copy per step
        order = train_order_src[shard(epoch_order(len(train_idx), steps_per_epoch * cfg.batch_size, cfg.seed, epoch, None), dist_info)].to(device)
        loss_sum, t0 = torch.zeros((), device=device), time.perf_counter()
        with seeded(cfg.seed * 7919 + epoch * 104729 + dist_info.rank, device):
            for step in range(steps_per_epoch):
                lr = cosine_lr(epoch * steps_per_epoch + step, total_steps, steps_per_epoch, cfg.lr)
                set_lr(optimizer, lr)
                sel = order[step * per_rank : (step + 1) * per_rank]
                with torch.no_grad():
                    x, y = augment(images[sel], masks[sel])
                x = x.contiguous(memory_format=memory_format(device, cfg.channels_last))
                with autocast(device, cfg.amp):
                    logits = trained(x)
                loss = dice_bce_loss(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
        if not all_ranks_agree(bool(torch.isfinite(loss_sum)), dist_info, device):
            raise MoslError(f"loss became NaN/inf in epoch {epoch + 1}; lower --lr ({run.path} keeps the last good epoch)")
        sync_buffers(model, dist_info)
        loss_sum = mean_over_ranks(loss_sum, dist_info)
        val = validation_dice(model, ds, val_idx, cfg.size, device, cfg.amp, cfg.channels_last) if val_idx else float("nan")
        improved = not val_idx or val > progress["best_dice"]
        if improved:
            progress.update(best_dice=val if val_idx else float("nan"), best_epoch=epoch + 1, since_best=0)
        else:
            progress["since_best"] += 1
        progress["epoch"] = epoch + 1
        record = {"epoch": epoch + 1, "loss": float(loss_sum) / steps_per_epoch, "val_dice": val, "lr": lr,
                  "seconds": time.perf_counter() - t0, "best_epoch": progress["best_epoch"]}
        if dist_info.is_main:
            if improved:
                _save_segmentation(run.file(WEIGHTS_FILE), model, cfg, arch_meta, init_info, ds)
            append_jsonl(run.log, record)
            if clock.due(final=epoch + 1 == cfg.epochs or patience_spent()):
                save_checkpoint(run, model, optimizer, progress)
        callback("epoch", record)

    epochs_run = int(progress["epoch"])
    metrics = {"best_epoch": progress["best_epoch"], "best_val_dice": progress["best_dice"], "epochs_run": epochs_run,
               "stopped_early": epochs_run < cfg.epochs, "label_fraction": cfg.label_fraction,
               "labelled_train": len(train_idx), "val": len(val_idx), "init": init_info.get("init"),
               "seconds": time.perf_counter() - t_start, "last_epoch": (read_jsonl(run.log) or [None])[-1]}
    if dist_info.is_main:
        write_json(run.file(METRICS_FILE), metrics)
    return FinetuneResult(run.path, int(progress["best_epoch"]), float(progress["best_dice"]), epochs_run, len(train_idx), init_info, model)


def _class_counts(ds: Dataset, idx: list[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in idx:
        counts[str(ds.records[i]["class"])] = counts.get(str(ds.records[i]["class"]), 0) + 1
    return counts


def _save_segmentation(path: Path, model: nn.Module, cfg: FinetuneConfig, arch: dict[str, str],
                       init_info: dict[str, Any], ds: Dataset) -> None:
    meta = weights_metadata(kind="segmentation", arch=arch["arch"], encoder=arch["encoder"], in_channels=ds.channels,
                            size=cfg.size, scope="encoder-decoder", method=init_info.get("method"),
                            data={"path": str(ds.path), "fingerprint": ds.fingerprint()}, seed=cfg.seed,
                            extra={"init": init_info.get("init"), "label_fraction": cfg.label_fraction})
    save_weights(path, model.state_dict(), meta)
