"""``mosl finetune``: train a segmentation U-Net on a fraction of the labels, from pre-trained weights
(mosl's own or another project's) or from scratch (``--init none``, the supervised baseline).

The recipe (``benchmarks/finetune_recipe.py`` compares it with a plain tutorial loop; measurements in
studies/finetune-recipe/README.md): the scans of the train split that show a lesion (``--empty-masks``
adds the normal scans with their empty masks); AdamW with linear warm-up and cosine decay to 0; soft
Dice per image (``--dice batch``: over the batch's pixels) + BCE; nnU-Net-like joint augmentation by
kornia on the device; the last epoch's weights are what ``model.safetensors`` holds (``--select ema``
/ ``best``: the weights' moving average, or the epoch with the best val Dice). The val split is
watched every epoch and, at the end, picks the post-processing rule the weight file carries
(``postprocess.py``). ``--folds K`` trains K models on train+val folds (``run_folds``). ``--teacher``
adds the train scans outside the label fraction with a trained model's masks (``pseudo_labels.py``);
``--semi fixmatch`` learns from them online by weak-to-strong consistency (``consistency.py``).
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mosl_cli import hub
from mosl_cli.augment import SEG_AUGMENTS, SegAugment, WeakStrongViews, cutmix, seeded
from mosl_cli.class_aux import ClassAux, class_aux_loss, class_targets
from mosl_cli.config import DEFAULT_PRETRAIN_RUN, WEIGHTS_FILE, FinetuneConfig
from mosl_cli.consistency import SEMI_METHODS, Unlabelled, consistency_loss, ramped_weight, strong_batch
from mosl_cli.data.store import Dataset, load_dataset
from mosl_cli.deep_supervision import AUX_WEIGHTS, DeepSupervised, pooled_targets
from mosl_cli.device import fused_optimizer, memory_format
from mosl_cli.errors import MoslError, UsageError
from mosl_cli.fsutil import append_jsonl, read_jsonl, write_json
from mosl_cli.inference import apply_gate, forward_probabilities, model_outputs
from mosl_cli.lovasz import lovasz_hinge
from mosl_cli.metrics import confusion, dice
from mosl_cli.models import (
    DECODER_ATTENTIONS,
    ENCODER_PREFIX,
    NORMALISATIONS,
    build_model,
    decoder_attention_conflict,
    load_into,
    model_inputs,
    read_metadata,
    save_weights,
    split_outputs,
    weights_metadata,
)
from mosl_cli.names import FOLD_PREFIX
from mosl_cli.postprocess import choose_gate, choose_postprocess
from mosl_cli.pseudo_labels import PseudoLabels, teacher_masks, unlabelled_pool
from mosl_cli.train import (
    METRICS_FILE,
    Callback,
    CheckpointClock,
    RunDir,
    WeightAverage,
    all_ranks_agree,
    autocast,
    check_resume,
    cosine_lr,
    epoch_indices,
    init_distributed,
    load_checkpoint,
    mean_over_ranks,
    no_callback,
    poly_lr,
    save_checkpoint,
    set_lr,
    sync_buffers,
    wrap_ddp,
    write_config,
)

MIN_STEPS_PER_EPOCH = 10
SEMI_SALT = 500_009  # added to the seed of the unlabelled scans' order, so it differs from the labelled one's
SELECTIONS: tuple[str, ...] = ("last", "ema", "best")
OPTIMIZERS: tuple[str, ...] = ("adamw", "sgd")
INIT_PARTS: tuple[str, ...] = ("all", "encoder")  # what --init loads: every tensor that fits, or the encoder's alone
SCHEDULES = {"cosine": cosine_lr, "poly": poly_lr}  # the lr after warm-up: half-cosine or nnU-Net's poly, to 0
# the soft Dice term over the batch's pixels, per image, per image over the images with a lesion only,
# per image as -ln(Dice) (a missed lesion weighs more: its gradient grows as 1 / Dice), or per image the
# Lovász hinge, a convex surrogate of 1 - IoU, in its place
DICE_KINDS: tuple[str, ...] = ("batch", "image", "lesion", "log", "lovasz")
SGD_MOMENTUM = 0.99  # nnU-Net's SGD: Nesterov momentum 0.99 (Isensee et al. 2021)
FOLD_SPLITS: tuple[str, ...] = ("train", "val")  # the pool that --folds divides


@dataclass
class FinetuneResult:
    out: Path
    best_epoch: int
    best_val_dice: float
    epochs_run: int
    labelled: int
    init: dict[str, Any]
    model: nn.Module  # the last epoch's weights (the best ones are in out/model.safetensors)


def label_subset(
    ds: Dataset, fraction: float, seed: int, pool: list[int] | None = None, empty_masks: bool = True
) -> list[int]:
    """Labelled train indices kept at ``fraction``: stratified by class, nested across fractions.

    Each class's images are put in one seeded order and the first ``ceil(fraction·n)`` are kept,
    so with one seed the 10 % subset lies inside the 25 % subset, which lies inside the 50 % one.
    ``pool``: the candidate indices (default: the labelled train split); ``empty_masks=False`` drops
    scans whose mask is empty (BUSI's normal scans) before sampling.
    """
    if not 0 < fraction <= 1:
        raise MoslError(f"--label-fraction {fraction} is outside (0, 1]; use e.g. 0.1 for 10 % of the labels")
    by_class: dict[str, list[int]] = {}
    for i in ds.indices("train", labelled=True) if pool is None else pool:
        if empty_masks or not _empty_mask(ds, i):
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


def _empty_mask(ds: Dataset, i: int) -> bool:
    record = ds.records[i]
    if "mask_pixels" in record:
        return int(record["mask_pixels"]) == 0
    assert ds.masks is not None
    return not bool(ds.masks[i].any())


def fold_indices(ds: Dataset, folds: int, seed: int) -> list[list[int]]:
    """``folds`` disjoint lists of labelled train+val indices; a group (near-duplicates, one patient)
    never straddles two folds. Groups are dealt class by class, in a seeded order, to the fold that
    holds fewest images of that class (stratified, balanced)."""
    if folds < 2:
        raise UsageError(f"--folds {folds}: cross-validation needs at least 2 folds")
    groups: dict[str, list[int]] = {}
    for split in FOLD_SPLITS:
        for i in ds.indices(split, labelled=True):
            groups.setdefault(str(ds.records[i].get("group", ds.records[i]["id"])), []).append(i)
    if len(groups) < folds:
        raise MoslError(
            f"{ds.path}: {len(groups)} groups of labelled train+val images cannot fill {folds} folds; use fewer --folds"
        )
    by_class: dict[str, list[list[int]]] = {}
    for members in groups.values():
        by_class.setdefault(str(ds.records[members[0]]["class"]), []).append(members)
    out: list[list[int]] = [[] for _ in range(folds)]
    for name in sorted(by_class):
        g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        class_groups = by_class[name]
        counts = [0] * folds
        for j in torch.randperm(len(class_groups), generator=g).tolist():
            k = min(range(folds), key=lambda f: (counts[f], f))
            out[k] += class_groups[j]
            counts[k] += len(class_groups[j])
    return [sorted(f) for f in out]


def split_indices(ds: Dataset, cfg: FinetuneConfig) -> tuple[list[int], list[int]]:
    """``(train, val)`` indices of this run: the train split (at ``label_fraction``) and the val split,
    or with ``cfg.fold`` set, every other fold of train+val and that fold."""
    if cfg.fold is None:
        pool, val = None, ds.indices("val", labelled=True)
    else:
        if not 0 <= cfg.fold < cfg.folds:
            raise MoslError(f"fold {cfg.fold} is outside 0..{cfg.folds - 1}")
        parts = fold_indices(ds, cfg.folds, cfg.seed)
        val = parts[cfg.fold]
        pool = sorted(i for k, part in enumerate(parts) if k != cfg.fold for i in part)
    empty = cfg.empty_masks or cfg.lesion_head  # the lesion-present head learns from the normal scans too
    return label_subset(ds, cfg.label_fraction, cfg.seed, pool, empty), val


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
    opts = {"lesion_head": cfg.lesion_head, "decoder_attention": cfg.decoder_attention}
    if init == "none":
        return build_model(cfg.arch, cfg.encoder, channels, **opts), {"init": "none"}
    if hub.is_weight_name(init):
        model = build_model(cfg.arch, cfg.encoder, channels, **opts)
        return model, {**hub.load_published(model, cfg.encoder, init), "arch": cfg.arch, "encoder": cfg.encoder}
    path = Path(init)  # resolve_init checked that it exists
    arch, encoder, meta = cfg.arch, cfg.encoder, None
    if path.suffix == ".safetensors":
        try:
            meta = read_metadata(path)
        except MoslError:
            meta = None  # a plain safetensors state dict: loaded by name below
    encoder_only = cfg.init_part == "encoder"
    if meta is not None:  # a mosl file rebuilds its own network; only its encoder, if that is all it trained
        encoder = meta["encoder"]
        if meta.get("scope") != "encoder" and not encoder_only:
            arch = meta["arch"]
        if int(meta["in_channels"]) != channels:
            raise MoslError(
                f"{path}: made for {meta['in_channels']}-channel images but the dataset has {channels}; "
                f"prepare with --channels {meta['in_channels']}"
            )
    model = build_model(arch, encoder, channels, **opts)
    report = load_into(model, path, prefix=ENCODER_PREFIX if encoder_only else "")
    return model, {
        "init": str(path),
        "init_part": cfg.init_part,
        "arch": arch,
        "encoder": encoder,
        "method": (meta or {}).get("method"),
        "scope": (meta or {}).get("scope"),
        "load": report.summary(),
    }


def dice_bce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    per_image: bool = False,
    dice_weight: torch.Tensor | None = None,
    overlap: str = "dice",
) -> torch.Tensor:
    """Soft Dice + BCE. ``logits``, ``target``: float ``[B, 1, H, W]``, target 0/1, or -1 at a pixel
    without a label (a teacher's unsure pixel: it adds nothing to either term); ``weight`` float
    ``[B]`` (0/1): the images that count (default: all); ``dice_weight`` ``[B]`` (0/1): the images
    that count in the Dice term (default: ``weight``), the others in the BCE only. The Dice term pools
    the pixels of the whole batch (nnU-Net's batch Dice), or with ``per_image`` is the mean of each
    image's soft Dice (as the per-case metric weighs a small lesion like a large one); ``overlap``
    ``log`` takes ``-ln(soft Dice)`` instead of ``1 - soft Dice``, ``lovasz`` each image's Lovász hinge
    (:func:`~mosl_cli.lovasz.lovasz_hinge`; with ``per_image``), averaged as the per-image Dice term."""
    w = torch.ones(logits.shape[0], device=logits.device) if weight is None else weight
    w = w.to(logits.dtype)
    dw = w if dice_weight is None else (dice_weight.to(logits.dtype) * w)
    labelled = target >= 0
    w_pixels = w[:, None, None, None] * labelled
    dw_pixels = dw[:, None, None, None] * labelled
    target = target.clamp_min(0.0)
    if overlap == "lovasz":
        dice_term = lovasz_hinge(logits, target, labelled)  # [B]
    else:
        prob = torch.sigmoid(logits) * dw_pixels
        dims = (1, 2, 3) if per_image else (0, 1, 2, 3)
        inter = (prob * target).sum(dims)
        soft_dice = (2 * inter + 1.0) / (prob.sum(dims) + (target * dw_pixels).sum(dims) + 1.0)
        dice_term = -torch.log(soft_dice) if overlap == "log" else 1 - soft_dice  # [B] per image, [] batch
    dice_loss = (dice_term * dw).sum() / dw.sum().clamp_min(1.0) if per_image else dice_term
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * w_pixels
    return dice_loss + bce.sum() / (w.sum() * logits[0].numel()).clamp_min(1.0)


def finetune_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    present: torch.Tensor | None,
    empty_masks: bool,
    dice: str = "batch",
    aux: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The training loss of one batch: ``logits``, ``target`` float ``[B, 1, H, W]``; ``present``: the
    lesion-present logit ``[B, 1]`` of a model with that head (else None); ``aux``: deep supervision's
    coarser mask logits (``deep_supervision.DeepSupervised``), or None; ``dice``: one of
    ``DICE_KINDS`` (``lesion``: per image, the images whose mask is empty in the BCE only; ``log``: per
    image, ``-ln`` of each image's soft Dice; ``lovasz``: per image, the Lovász hinge).

    The mask loss is :func:`dice_bce_loss`; with ``aux`` it is the weighted mean of the full-size term
    (weight 1) and each auxiliary term against the mask pooled to its size (``AUX_WEIGHTS``). With the
    head, the mask loss counts the images with a lesion only (all of them with ``empty_masks``), and
    the BCE of the head against "the mask is not empty" is added.
    """
    lesion = target.flatten(1).amax(dim=1)  # [B] 1.0 where the (augmented) mask has a lesion pixel
    weight = lesion if present is not None and not empty_masks else None
    per_image, dice_weight = dice != "batch", (lesion if dice == "lesion" else None)
    overlap = dice if dice in ("log", "lovasz") else "dice"  # the Dice term's form; the kind says which images
    loss = dice_bce_loss(logits, target, weight, per_image, dice_weight, overlap)
    if aux:
        pooled = pooled_targets(target, aux)
        for w, aux_logits, aux_target in zip(AUX_WEIGHTS, aux, pooled, strict=True):
            loss = loss + w * dice_bce_loss(aux_logits, aux_target, weight, per_image, dice_weight, overlap)
        loss = loss / (1 + sum(AUX_WEIGHTS[: len(aux)]))
    if present is None:
        return loss
    return loss + F.binary_cross_entropy_with_logits(present[:, 0], lesion)


def share_weights(indices: list[int], labelled: list[int], share: float | None) -> torch.Tensor | None:
    """Draw weights ``[len(indices)]`` that give the ``labelled`` scans ``share`` of the draws and the
    others (teacher-labelled) the rest; None where ``share`` is None or one of the two groups is empty."""
    if share is None:
        return None
    known = set(labelled)
    is_labelled = torch.tensor([i in known for i in indices], dtype=torch.bool)
    n_labelled = int(is_labelled.sum())
    if n_labelled in (0, len(indices)):
        return None
    return torch.where(is_labelled, share / n_labelled, (1.0 - share) / (len(indices) - n_labelled))


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    augment: SegAugment,
    images: torch.Tensor,
    masks: torch.Tensor,
    cfg: FinetuneConfig,
    unlabelled: Unlabelled | None = None,
    classes: torch.Tensor | None = None,
) -> torch.Tensor:
    """One optimisation step of the recipe on a uint8 batch ``images`` ``[B, C, H, W]`` and ``masks``
    ``[B, 1, H, W]`` already on the model's device: joint augmentation (then CutMix with
    ``cfg.cutmix``), forward under autocast
    (``cfg.amp``) in ``cfg.channels_last`` layout, :func:`finetune_loss` in float32, backward, step.
    With ``unlabelled``, its strong views go through the same forward pass and add their
    :func:`~mosl_cli.consistency.consistency_loss`. With ``classes`` ``[B]`` (``--class-aux``: the model
    is a :class:`~mosl_cli.class_aux.ClassAux`), ``cfg.class_aux`` × its benign/malignant BCE is added.
    Returns the batch loss (0-dim tensor, on the device)."""
    device = images.device
    with torch.no_grad():
        x, y = augment(images, masks)
        if cfg.cutmix > 0:
            x, y = cutmix(x, y, p=cfg.cutmix)
        if unlabelled is not None:
            strong, target, sure = strong_batch(
                unlabelled.model,
                unlabelled.views,
                unlabelled.images,
                cfg.semi_threshold,
                cfg.amp,
                cfg.channels_last,
                keep_empty=cfg.empty_masks,
            )
            x = torch.cat([x, strong])
    x = x.contiguous(memory_format=memory_format(device, cfg.channels_last))
    with autocast(device, cfg.amp):
        out = model(x)
        out, aux = out if cfg.deep_supervision else (out, None)
        out, class_logit = out if classes is not None else (out, None)
        logits, present = split_outputs(out)
    n = y.shape[0]  # the labelled scans lead the batch
    head = None if present is None else present[:n].float()
    aux = None if aux is None else [a[:n].float() for a in aux]
    loss = finetune_loss(logits[:n].float(), y, head, cfg.empty_masks, dice=cfg.dice, aux=aux)
    if unlabelled is not None:
        loss = loss + unlabelled.weight * consistency_loss(logits[n:].float(), target, sure)
    if class_logit is not None and classes is not None:
        loss = loss + cfg.class_aux * class_aux_loss(class_logit[:n], classes)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


@torch.no_grad()
def validation_dice(
    model: nn.Module,
    ds: Dataset,
    idx: list[int],
    size: int,
    device: torch.device,
    amp: bool,
    channels_last: bool = True,
    batch: int = 64,
    norm: dict[str, Any] | None = None,
) -> float:
    """Mean per-case Dice on ``idx`` at the training size (empty-mask rule of ``metrics``); ``norm``:
    the model's input normalisation (default: the fixed one)."""
    assert ds.masks is not None
    was_training = model.training
    model.eval()
    scores = []
    for start in range(0, len(idx), batch):
        sel = torch.tensor(idx[start : start + batch])
        x = model_inputs(ds.images[sel].to(device), size, norm)
        prob = forward_probabilities(model, x, amp=amp, channels_last=channels_last)
        target = F.interpolate(ds.masks[sel].to(device).float(), size=(size, size), mode="nearest") > 0.5
        scores.append(dice(*confusion(prob > 0.5, target)[:3]))
    model.train(was_training)
    return float(torch.cat(scores).mean())


@torch.no_grad()
def final_validation(
    model: nn.Module, meta: dict[str, Any], ds: Dataset, idx: list[int], device: torch.device, batch: int = 64
) -> dict[str, Any]:
    """Score the final weights on ``idx`` as ``mosl evaluate`` does (stored size, mirroring TTA) and
    choose there the lesion-present gate (a model with that head) and then the post-processing rule.
    Returns mean val Dice without and with TTA, gated, with the rule, the choices and every candidate's
    score."""
    assert ds.masks is not None
    model.eval()
    plain, mirrored, present, targets = [], [], [], []
    for start in range(0, len(idx), batch):
        sel = torch.tensor(idx[start : start + batch])
        images = ds.images[sel].to(device)
        plain.append(model_outputs(model, images, meta, tta=False)[0] > 0.5)
        prob, p = model_outputs(model, images, meta, tta=True)
        mirrored.append(prob)
        present.append(p)
        targets.append(ds.masks[sel].to(device) > 0)
    target = torch.cat(targets)

    def mean_dice(pred: torch.Tensor) -> float:
        return float(dice(*confusion(pred, target)[:3]).mean())

    prob = torch.cat(mirrored)
    out: dict[str, Any] = {"val_dice": mean_dice(torch.cat(plain)), "val_dice_tta": mean_dice(prob > 0.5)}
    if present[0] is not None:
        head = torch.cat(present)
        gate, gate_scores = choose_gate(prob, head, target)
        prob = apply_gate(prob, head, gate)
        out.update(lesion_gate=gate, lesion_gate_candidates=gate_scores, val_dice_tta_gated=mean_dice(prob > 0.5))
    pred = prob > 0.5
    rule, candidates = choose_postprocess(pred, target)
    out.update(
        val_dice_tta_postprocessed=mean_dice(rule(pred)),
        postprocess=rule.to_dict(),
        postprocess_candidates=candidates,
    )
    return out


def _param_groups(model: nn.Module, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    encoder = [p for n, p in model.named_parameters() if n.startswith(ENCODER_PREFIX)]
    rest = [p for n, p in model.named_parameters() if not n.startswith(ENCODER_PREFIX)]
    return [{"params": encoder, "lr_scale": cfg.encoder_lr_scale}, {"params": rest, "lr_scale": 1.0}]


def build_optimizer(model: nn.Module, cfg: FinetuneConfig, device: torch.device) -> torch.optim.Optimizer:
    """``cfg.optimizer``: AdamW, or SGD with Nesterov momentum 0.99 as nnU-Net trains (pass a larger
    ``--lr`` with it, e.g. 0.01); the encoder's group runs at ``lr × encoder_lr_scale``."""
    groups, fused = _param_groups(model, cfg), fused_optimizer(device)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=SGD_MOMENTUM, nesterov=True, weight_decay=cfg.weight_decay, fused=fused
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


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


def check_finetune_options(cfg: FinetuneConfig) -> None:
    """One-line errors for option values, before anything is read or written."""
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise UsageError("--epochs and --batch-size must be ≥ 1")
    for option, value, choices in (
        ("--optimizer", cfg.optimizer, OPTIMIZERS),
        ("--schedule", cfg.schedule, tuple(SCHEDULES)),
        ("--dice", cfg.dice, DICE_KINDS),
        ("--select", cfg.select, SELECTIONS),
        ("--augment-strength", cfg.augment_strength, SEG_AUGMENTS),
        ("--decoder-attention", cfg.decoder_attention, DECODER_ATTENTIONS),
        ("--init-part", cfg.init_part, INIT_PARTS),
        ("--semi", cfg.semi, SEMI_METHODS),
        ("--normalisation", cfg.normalisation, tuple(NORMALISATIONS)),
    ):
        if value not in choices:
            raise UsageError(f"{option} {value!r} is not one of {', '.join(choices)}")
    if conflict := decoder_attention_conflict(cfg.arch, cfg.decoder_attention):
        raise UsageError(conflict)
    if cfg.deep_supervision and cfg.arch != "unet":
        raise UsageError(f"--deep-supervision works with --arch unet, not {cfg.arch!r}; drop one of them")
    if cfg.class_aux < 0 or (cfg.class_aux > 0 and cfg.deep_supervision):
        raise UsageError(f"--class-aux {cfg.class_aux} must be ≥ 0, and 0 with --deep-supervision (drop one)")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise UsageError(f"--ema-decay {cfg.ema_decay} must be in [0, 1), e.g. 0.998")
    if cfg.warmup_epochs < 0 or cfg.patience < 0:
        raise UsageError("--warmup-epochs and --patience must be 0 or more")
    if not 0.0 <= cfg.cutmix <= 1.0:
        raise UsageError(f"--cutmix {cfg.cutmix} must be in [0, 1]: the probability that a scan gets a box")
    if not 0.0 <= cfg.elastic <= 1.0:
        raise UsageError(f"--elastic {cfg.elastic} must be in [0, 1]: the probability that a scan is deformed")
    if not 0.0 < cfg.teacher_keep <= 1.0:
        raise UsageError(f"--teacher-keep {cfg.teacher_keep} must be in (0, 1]: the fraction of masks kept")
    if not 0.5 <= cfg.teacher_sure < 1.0:
        raise UsageError(f"--teacher-sure {cfg.teacher_sure} must be in [0.5, 1), e.g. 0.9 (0.5: every pixel counts)")
    if cfg.teacher_sure > 0.5 and cfg.deep_supervision:
        raise UsageError("--teacher-sure leaves pixels out of the loss, which --deep-supervision cannot; drop one")
    if cfg.labelled_share is not None:
        if cfg.teacher is None:
            raise UsageError("--labelled-share mixes labelled and teacher-labelled scans; it needs --teacher")
        if not 0.0 < cfg.labelled_share < 1.0:
            raise UsageError(f"--labelled-share {cfg.labelled_share} must be in (0, 1), e.g. 0.5")
    for option, used in (("--teacher", cfg.teacher is not None), ("--semi", cfg.semi != "none")):
        if used and (cfg.folds > 1 or cfg.fold is not None):
            raise UsageError(f"{option} learns from the train split's unlabelled scans; it does not work with --folds")
    if not 0.5 < cfg.semi_threshold < 1.0 or cfg.semi_weight < 0:
        raise UsageError(
            f"--semi-threshold {cfg.semi_threshold} must be in (0.5, 1) and --semi-weight {cfg.semi_weight} ≥ 0"
        )


def run_finetune(cfg: FinetuneConfig, callback: Callback = no_callback) -> FinetuneResult:
    """Fine-tune on ``cfg.label_fraction`` of the train labels; write the run directory ``cfg.out``."""
    check_finetune_options(cfg)
    clock = CheckpointClock(cfg.checkpoint_every)
    ds = load_dataset(cfg.data)
    if ds.masks is None:
        raise MoslError(f"{cfg.data}: the dataset has no masks; fine-tuning needs a labelled dataset (e.g. BUSI)")
    train_idx, val_idx = split_indices(ds, cfg)
    init = resolve_init(cfg)
    if cfg.freeze_encoder_bn and init == "none":
        raise MoslError(
            "--freeze-encoder-bn keeps pre-trained BN statistics, but --init is none; "
            "pass pre-trained weights or drop the flag"
        )
    dist_info, device = init_distributed(cfg.device)
    pseudo = pseudo_labels(cfg, ds, train_idx, device)  # before any output: a bad teacher stops the run here
    run = RunDir(Path(cfg.out))
    resume = run.prepare(cfg.resume, cfg.overwrite, dist_info.is_main)
    check_resume(run, cfg, resume)

    torch.manual_seed(cfg.seed)
    model, init_info = build_finetune_model(cfg, init, ds.channels)
    if cfg.init == "auto":
        init_info["auto"] = True
    model = model.to(device)
    model = model.to(memory_format=memory_format(device, cfg.channels_last))
    optimizer = build_optimizer(model, cfg, device)
    average = WeightAverage(model, cfg.ema_decay) if cfg.select == "ema" else None
    extra: dict[str, nn.Module] = {"ema": average} if average is not None else {}  # saved with the checkpoint
    net = model  # what the steps train: the model, or the model with deep supervision's auxiliary heads
    if cfg.deep_supervision:
        net = DeepSupervised(model).to(device).to(memory_format=memory_format(device, cfg.channels_last))
        optimizer.add_param_group({"params": list(net.heads.parameters()), "lr_scale": 1.0})
        extra["aux_heads"] = net.heads
    classes = None  # --class-aux: benign 0 / malignant 1 per dataset row, NaN where this run has no label
    if cfg.class_aux > 0:
        net = ClassAux(model).to(device)
        optimizer.add_param_group({"params": list(net.head.parameters()), "lr_scale": 1.0})
        extra["class_head"] = net.head
        classes = class_targets(ds, train_idx).to(device)
    unsure = cfg.teacher is not None and cfg.teacher_sure > 0.5  # pseudo-masks with pixels left out of the loss
    norm = NORMALISATIONS[cfg.normalisation]
    augment = SegAugment(
        cfg.size, cfg.augment, strength=cfg.augment_strength, unsure=unsure, elastic_p=cfg.elastic, norm=norm
    ).to(device)
    images = ds.images.to(device)
    rows = training_rows(cfg, ds, train_idx, pseudo, device)  # train_idx: the scans whose own masks it reads
    views = WeakStrongViews(cfg.size, norm).to(device) if rows.semi_pool else None
    steps_per_epoch = cfg.steps_per_epoch or max(MIN_STEPS_PER_EPOCH, math.ceil(len(rows.indices) / cfg.batch_size))
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = min(cfg.warmup_epochs * steps_per_epoch, total_steps // 2)
    per_rank = max(1, cfg.batch_size // dist_info.world_size)
    schedule = SCHEDULES[cfg.schedule]

    progress = {"epoch": 0, "best_dice": -1.0, "best_epoch": 0, "since_best": 0}
    if resume:
        progress = load_checkpoint(run, model, optimizer, device, extra)
        if dist_info.is_main:
            run.trim_log(int(progress["epoch"]))
    arch_meta = {"arch": init_info.get("arch", cfg.arch), "encoder": init_info.get("encoder", cfg.encoder)}
    resolved = {
        "init": init_info,
        "labelled_train": len(train_idx),
        **rows.counts,
        "val": len(val_idx),
        "steps_per_epoch": steps_per_epoch,
        "global_batch": cfg.batch_size,
        "world_size": dist_info.world_size,
        "device": str(device),
        "data_fingerprint": ds.fingerprint(),
        "classes": _class_counts(ds, train_idx),
        **arch_meta,
    }
    if dist_info.is_main:
        write_config(run, "finetune", cfg, resolved)
    callback(
        "start",
        {
            "epochs": cfg.epochs,
            "steps_per_epoch": steps_per_epoch,
            "start_epoch": progress["epoch"],
            "images": len(rows.indices),
            "device": str(device),
            "init": init_info,
        },
    )
    trained = wrap_ddp(net, dist_info, device, find_unused=cfg.freeze_encoder_epochs > 0)
    best_path = run.file("model_best.safetensors")

    def patience_spent() -> bool:  # early stopping (select=best only): patience epochs without a better val Dice
        return cfg.select == "best" and cfg.patience > 0 and bool(val_idx) and progress["since_best"] >= cfg.patience

    t_start = time.perf_counter()
    for epoch in range(int(progress["epoch"]), cfg.epochs):
        if patience_spent():
            break
        model.train()
        _set_encoder_frozen(model, epoch < cfg.freeze_encoder_epochs, cfg.freeze_encoder_bn)
        count = steps_per_epoch * cfg.batch_size
        order = epoch_indices(rows.indices, count, cfg.seed, epoch, dist_info, device, rows.draw_weights)
        semi_order = None  # --semi: the unlabelled scans' order, drawn as the labelled one's from another seed
        if views is not None:
            semi_order = epoch_indices(rows.semi_pool, count, cfg.seed + SEMI_SALT, epoch, dist_info, device)
        loss_sum, t0 = torch.zeros((), device=device), time.perf_counter()
        with seeded(cfg.seed * 7919 + epoch * 104729 + dist_info.rank, device):
            for step in range(steps_per_epoch):
                lr = schedule(epoch * steps_per_epoch + step, total_steps, warmup_steps, cfg.lr)
                set_lr(optimizer, lr)
                sel = order[step * per_rank : (step + 1) * per_rank]
                unlabelled = None
                if semi_order is not None and views is not None:
                    weight = ramped_weight(cfg.semi_weight, epoch * steps_per_epoch + step, total_steps)
                    pick = semi_order[step * per_rank : (step + 1) * per_rank]
                    unlabelled = Unlabelled(images[pick], model, views, weight)
                target = None if classes is None else classes[sel]
                loss = train_step(trained, optimizer, augment, images[sel], rows.masks[sel], cfg, unlabelled, target)
                if average is not None:
                    average.update(model, epoch * steps_per_epoch + step)
                loss_sum += loss.detach()
        if not all_ranks_agree(bool(torch.isfinite(loss_sum)), dist_info, device):
            raise MoslError(
                f"loss became NaN/inf in epoch {epoch + 1}; lower --lr ({run.path} keeps the last good epoch)"
            )
        sync_buffers(model, dist_info)
        loss_sum = mean_over_ranks(loss_sum, dist_info)
        val = (
            validation_dice(model, ds, val_idx, cfg.size, device, cfg.amp, cfg.channels_last, norm=norm)
            if val_idx
            else float("nan")
        )
        improved = bool(val_idx) and val > progress["best_dice"]
        if improved:
            progress.update(best_dice=val, best_epoch=epoch + 1, since_best=0)
        else:
            progress["since_best"] += 1
        progress["epoch"] = epoch + 1
        record = {
            "epoch": epoch + 1,
            "loss": float(loss_sum) / steps_per_epoch,
            "val_dice": val,
            "lr": lr,
            "seconds": time.perf_counter() - t0,
            "best_epoch": progress["best_epoch"],
        }
        if average is not None and val_idx:
            record["val_dice_ema"] = validation_dice(
                average.module, ds, val_idx, cfg.size, device, cfg.amp, cfg.channels_last, norm=norm
            )
        if dist_info.is_main:
            if improved and cfg.select == "best":
                _save_segmentation(best_path, model, cfg, arch_meta, init_info, ds)
            append_jsonl(run.log, record)
            if clock.due(final=epoch + 1 == cfg.epochs or patience_spent()):
                save_checkpoint(run, model, optimizer, progress, extra)
        callback("epoch", record)

    epochs_run = int(progress["epoch"])
    metrics = {
        "select": cfg.select,
        "best_epoch": progress["best_epoch"] if val_idx else None,  # None: no labelled val image to score
        "best_val_dice": progress["best_dice"] if val_idx else None,
        "epochs_run": epochs_run,
        "stopped_early": epochs_run < cfg.epochs,
        "label_fraction": cfg.label_fraction,
        "labelled_train": len(train_idx),
        **rows.counts,
        "val": len(val_idx),
        "fold": cfg.fold,
        "init": init_info.get("init"),
        "seconds": time.perf_counter() - t_start,
        "last_epoch": (read_jsonl(run.log) or [None])[-1],
    }
    if dist_info.is_main:
        final = _final_weights(cfg, model, average, best_path, device)
        meta = _segmentation_meta(cfg, arch_meta, init_info, ds)
        if val_idx:
            chosen = final_validation(final, meta, ds, val_idx, device)
            metrics.update(chosen)
            if cfg.postprocess:
                meta["postprocess"] = chosen["postprocess"]
            if chosen.get("lesion_gate") is not None:
                meta["lesion_gate"] = chosen["lesion_gate"]
        save_weights(run.file(WEIGHTS_FILE), final.state_dict(), meta)
        best_path.unlink(missing_ok=True)
        write_json(run.file(METRICS_FILE), metrics)
    return FinetuneResult(
        run.path,
        int(progress["best_epoch"]),
        float(progress["best_dice"]) if val_idx else float("nan"),
        epochs_run,
        len(train_idx),
        init_info,
        model,
    )


@dataclass
class TrainingRows:
    """The dataset rows a run's steps draw from. ``masks``: uint8 ``[N, 1, H, W]`` on the device, the
    teacher's masks in the rows it labelled; ``indices``: the rows drawn (the labelled scans and the
    teacher-labelled ones); ``draw_weights``: ``[len(indices)]`` (None: uniform draws); ``semi_pool``: the
    scans ``--semi`` learns from without their labels; ``counts``: what the run takes from the unlabelled
    scans (for config.json and metrics.json)."""

    masks: torch.Tensor
    indices: list[int]
    draw_weights: torch.Tensor | None
    semi_pool: list[int]
    counts: dict[str, int]


def training_rows(
    cfg: FinetuneConfig, ds: Dataset, labelled: list[int], pseudo: PseudoLabels | None, device: torch.device
) -> TrainingRows:
    """The :class:`TrainingRows` of a run that reads the masks of ``labelled`` and, with a teacher, the
    ``pseudo`` masks (which replace those scans' rows in a copy of the dataset's masks)."""
    masks, indices = ds.masks.to(device), labelled
    counts = pseudo.describe() if pseudo is not None else {}
    if pseudo is not None and pseudo.indices:
        masks = masks.clone()
        masks[torch.tensor(pseudo.indices, device=device)] = pseudo.masks.to(device)
        indices = sorted(labelled + pseudo.indices)
    semi_pool: list[int] = []
    if cfg.semi != "none":
        semi_pool = teacher_pool(ds, cfg.label_fraction, cfg.seed, labelled)
        counts["semi_unlabelled"] = len(semi_pool)
    return TrainingRows(masks, indices, share_weights(indices, labelled, cfg.labelled_share), semi_pool, counts)


def teacher_pool(ds: Dataset, fraction: float, seed: int, labelled: list[int]) -> list[int]:
    """The train scans whose labels a run at ``fraction`` and ``seed`` does not have: outside the
    fraction's subset with the empty masks counted (the recipe trains on ``labelled``, its lesion scans,
    unless ``--empty-masks``), so at fraction 1 only the train scans without a mask."""
    known = set(labelled) | set(label_subset(ds, fraction, seed, empty_masks=True))
    return unlabelled_pool(ds, sorted(known))


def pseudo_labels(cfg: FinetuneConfig, ds: Dataset, labelled: list[int], device: torch.device) -> PseudoLabels | None:
    """With ``cfg.teacher``: its masks of :func:`teacher_pool` (:mod:`pseudo_labels`)."""
    if cfg.teacher is None:
        return None
    pool = teacher_pool(ds, cfg.label_fraction, cfg.seed, labelled)
    return teacher_masks(
        cfg.teacher, ds, pool, device, cfg.empty_masks, keep_fraction=cfg.teacher_keep, sure=cfg.teacher_sure
    )


def _final_weights(
    cfg: FinetuneConfig, model: nn.Module, average: WeightAverage | None, best_path: Path, device: torch.device
) -> nn.Module:
    """The weights ``model.safetensors`` keeps: the moving average, the last epoch's, or the best val epoch's."""
    if average is not None:
        return average.module
    if cfg.select == "best" and best_path.is_file():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(best_path), device=str(device)))
    return model


def run_folds(cfg: FinetuneConfig, callback: Callback = no_callback) -> list[FinetuneResult]:
    """``--folds K``: K fine-tunes, fold k validating on the k-th group-aware part of train+val and
    training on the others, written to ``out/fold_<k>``; ``evaluate``/``predict --model out`` average them.
    With ``cfg.fold`` set (``--fold k``), only that fold, so that folds can run in separate processes."""
    if cfg.fold is not None and cfg.folds < 2:
        raise UsageError("--fold needs --folds K (K > 1)")
    if cfg.fold is not None and not 0 <= cfg.fold < cfg.folds:
        raise UsageError(f"--fold {cfg.fold} is outside 0..{cfg.folds - 1}")
    if cfg.folds < 2:
        return [run_finetune(cfg, callback)]
    results = []
    for k in range(cfg.folds) if cfg.fold is None else [cfg.fold]:
        callback("message", {"text": f"fold {k + 1} of {cfg.folds}"})
        results.append(run_finetune(replace(cfg, fold=k, out=str(Path(cfg.out) / f"{FOLD_PREFIX}{k}")), callback))
    return results


def _class_counts(ds: Dataset, idx: list[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in idx:
        counts[str(ds.records[i]["class"])] = counts.get(str(ds.records[i]["class"]), 0) + 1
    return counts


def _segmentation_meta(
    cfg: FinetuneConfig, arch: dict[str, str], init_info: dict[str, Any], ds: Dataset
) -> dict[str, Any]:
    return weights_metadata(
        kind="segmentation",
        arch=arch["arch"],
        encoder=arch["encoder"],
        in_channels=ds.channels,
        size=cfg.size,
        scope="encoder-decoder",
        method=init_info.get("method"),
        data={"path": str(ds.path), "fingerprint": ds.fingerprint()},
        seed=cfg.seed,
        normalisation=NORMALISATIONS[cfg.normalisation],
        extra={
            "init": init_info.get("init"),
            "label_fraction": cfg.label_fraction,
            "select": cfg.select,
            "fold": cfg.fold,
            "lesion_head": cfg.lesion_head,
            "decoder_attention": cfg.decoder_attention,
            "teacher": cfg.teacher,
            "teacher_keep": cfg.teacher_keep if cfg.teacher is not None else None,
            "teacher_sure": cfg.teacher_sure if cfg.teacher is not None else None,
            "semi": cfg.semi,
        },
    )


def _save_segmentation(
    path: Path, model: nn.Module, cfg: FinetuneConfig, arch: dict[str, str], init_info: dict[str, Any], ds: Dataset
) -> None:
    save_weights(path, model.state_dict(), _segmentation_meta(cfg, arch, init_info, ds))
