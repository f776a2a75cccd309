"""``mosl finetune`` against a minimal reference loop on the same prepared split; prints one JSON object.

The reference is the plain recipe a segmentation tutorial would write, in about 40 lines of its own
(:func:`reference_loop`): an smp U-Net, AdamW at 1e-3 with a one-cycle schedule, soft Dice + BCE,
horizontal flip and a mild affine (kornia), batch 16, trained on the lesion scans (benign + malignant)
of the train split, the last epoch kept. The product is ``mosl finetune`` with its defaults (its
decoder by size: UNet++ from 256 px, ``product_arch`` in the output). Both are
scored the same way, by ``mosl evaluate`` on the test split (lesion group: benign + malignant), so the
two Dice values and the ratio of their wall times compare like with like.

    python benchmarks/finetune_recipe.py --data busi --size 128 --encoder resnet18 --seed 0 --work bench_ft

``--part reference`` or ``--part product`` runs one side only (two processes can share a machine);
each side's result is kept in ``WORK/<side>.json`` and reused, so a last call without ``--part``
prints the comparison of both.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import torch
import torch.nn.functional as F

from mosl_cli.config import EvaluateConfig, FinetuneConfig, recipe_arch
from mosl_cli.data.store import load_dataset
from mosl_cli.device import resolve_device
from mosl_cli.evaluate import run_evaluate
from mosl_cli.finetune import run_finetune
from mosl_cli.models import build_model, normalise, save_weights, weights_metadata


def reference_loop(
    data: str, size: int, encoder: str, epochs: int, seed: int, out: Path, device: torch.device | None = None
) -> Path:
    """Train the plain recipe on ``device`` (default: the CPU) in float32; write ``out/model.safetensors``."""
    device = device or torch.device("cpu")
    torch.manual_seed(seed)
    ds = load_dataset(data)
    assert ds.masks is not None
    idx = [i for i in ds.indices("train", labelled=True) if ds.records[i]["class"] in ("benign", "malignant")]
    x_all = F.interpolate(ds.images[idx].float() / 255, size=(size, size), mode="bilinear", antialias=True)
    y_all = (F.interpolate(ds.masks[idx].float(), size=(size, size), mode="bilinear", antialias=True) > 0.5).float()
    x_all, y_all = x_all.to(device), y_all.to(device)
    model = build_model("unet", encoder, ds.channels).to(device)
    batch = 16
    steps = epochs * math.ceil(len(idx) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps)
    aug = K.AugmentationSequential(
        K.RandomHorizontalFlip(),
        K.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1), p=0.5),
        data_keys=["input", "mask"],
    )
    model.train()
    for _ in range(epochs):
        for sel in torch.randperm(len(idx)).split(batch):
            x, y = aug(x_all[sel], y_all[sel])
            logits = model(normalise(x))
            prob = torch.sigmoid(logits)
            dice = (2 * (prob * y).sum() + 1) / (prob.sum() + y.sum() + 1)
            loss = 1 - dice + F.binary_cross_entropy_with_logits(logits, (y > 0.5).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    out.mkdir(parents=True, exist_ok=True)
    meta = weights_metadata(
        kind="segmentation",
        arch="unet",
        encoder=encoder,
        in_channels=ds.channels,
        size=size,
        scope="encoder-decoder",
        seed=seed,
        extra={"recipe": "reference"},
    )
    save_weights(out / "model.safetensors", {k: v.cpu() for k, v in model.state_dict().items()}, meta)
    return out / "model.safetensors"


def product(data: str, size: int, encoder: str, seed: int, out: Path, device: str = "auto") -> Path:
    """``mosl finetune`` with its defaults (only data, size, encoder, seed and out given)."""
    cfg = FinetuneConfig(
        data=data, size=size, encoder=encoder, seed=seed, init="none", out=str(out), overwrite=True, device=device
    )
    run_finetune(cfg)
    return out / "model.safetensors"


def test_lesion_dice(model: Path, data: str, out: Path) -> dict[str, float]:
    """Lesion-group and normal-class Dice of ``model`` on the test split, as ``mosl evaluate`` scores them.

    Either is None where the test split has no such scans.
    """
    metrics = run_evaluate(EvaluateConfig(model=str(model), data=data, split="test", out=str(out))).metrics
    lesion = (metrics["lesion"] or {}).get("dice", {}).get("mean")
    normal = metrics["per_class"].get("normal", {}).get("dice", {}).get("mean")
    return {"lesion_dice": lesion, "normal_dice": normal}


def run_side(side: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train and score one side, or reuse ``WORK/<side>.json`` from an earlier call with the same settings."""
    work = Path(args.work)
    record_path = work / f"{side}.json"
    settings = {"data": args.data, "size": args.size, "encoder": args.encoder, "seed": args.seed, "epochs": args.epochs}
    if record_path.exists():
        record = json.loads(record_path.read_text())
        if record["settings"] == settings:
            return record
    t0 = time.perf_counter()
    if side == "reference":
        device = resolve_device(args.device)
        model = reference_loop(args.data, args.size, args.encoder, args.epochs, args.seed, work / side, device)
    else:
        model = product(args.data, args.size, args.encoder, args.seed, work / side, args.device)
    seconds = time.perf_counter() - t0
    record = {"settings": settings, "seconds": seconds, **test_lesion_dice(model, args.data, work / f"{side}_eval")}
    work.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=1))
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a dataset directory written by `mosl prepare` (BUSI)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--epochs", type=int, default=100, help="epochs of the reference loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="bench_finetune_recipe")
    parser.add_argument("--part", choices=("reference", "product"), default=None)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N; both sides")
    args = parser.parse_args()
    sides = [args.part] if args.part else ["reference", "product"]
    results = {side: run_side(side, args) for side in sides}
    out: dict[str, Any] = {
        "size": args.size,
        "encoder": args.encoder,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        **{f"{s}_{k}": v for s, r in results.items() for k, v in r.items() if k != "settings"},
    }
    if "product" in results:
        out["product_arch"] = recipe_arch(args.size)  # the decoder the default builds at this size
    if len(results) == 2:
        lesion = [results[s]["lesion_dice"] for s in ("product", "reference")]
        out["dice_gain"] = None if None in lesion else lesion[0] - lesion[1]
        out["wall_time_ratio_product_to_reference"] = results["product"]["seconds"] / results["reference"]["seconds"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
