"""Missed lesions: which test lesion scans do the runs miss (Dice < 0.2), and do they miss the same ones?

For each run it predicts the test split as ``mosl evaluate`` does (``empty_fallback.split_masks``:
mirroring TTA, threshold 0.5, the run's stored post-processing rule) and lists every lesion scan
whose Dice is below 0.2. The CSV has one row per (run, missed scan); the summary printed says how
many scans each run misses and how many of them every run misses. ``--figure`` draws the scans every
run misses (all of the first run's misses when there is one run) with the first run's masks: each
scan beside its overlay, reference in green, prediction in red.

    python studies/finetune-recipe/missed_lesions.py busi work/128/default/s0 work/128/default/s1 \
        --csv missed.csv --figure missed.png
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from empty_fallback import split_masks  # predicts a split as mosl evaluate does
from PIL import Image

from mosl_cli.data.store import Dataset, load_dataset
from mosl_cli.inference import load_ensemble
from mosl_cli.metrics import confusion, dice

MISSED = 0.2  # a lesion scan with a Dice below this counts as missed
COLUMNS = 3  # figure tiles a row
FIELDS = ["run", "scan", "class", "dice", "reference_px", "predicted_px", "max_probability", "missed_by_runs"]


def missed_rows(
    run: str, ds: Dataset
) -> tuple[list[dict[str, object]], dict[str, float], dict[str, tuple[np.ndarray, ...]]]:
    """One CSV row per missed lesion scan of ``run``, the Dice of every test lesion scan by scan id,
    and per missed scan id the (scan uint8 ``[S, S]``, reference, prediction bool ``[S, S]``)."""
    probs, pred, ref = split_masks(load_ensemble(run, torch.device("cpu")), ds, "test")
    rows = ds.indices("test", labelled=True)  # the dataset rows of split_masks' scans, in its order
    per_case = dice(*confusion(pred, ref)[:3])
    lesion = ref.flatten(1).any(1)
    lesion_dice = {ds.records[rows[j]]["id"]: float(per_case[j]) for j in torch.nonzero(lesion).flatten().tolist()}
    out, tiles = [], {}
    for j in torch.nonzero(lesion & (per_case < MISSED)).flatten().tolist():
        record = ds.records[rows[j]]
        out.append(
            {
                "run": run,
                "scan": record["id"],
                "class": record["class"],
                "dice": round(float(per_case[j]), 4),
                "reference_px": int(ref[j].sum()),
                "predicted_px": int(pred[j].sum()),
                "max_probability": round(float(probs[j].max()), 3),
            }
        )
        scan = ds.images[rows[j]].float().mean(0).to(torch.uint8).numpy()
        tiles[record["id"]] = (scan, ref[j, 0].numpy(), pred[j, 0].numpy())
    return out, lesion_dice, tiles


def shared_misses(per_run: dict[str, set[str]]) -> tuple[Counter[str], list[str]]:
    """How many runs miss each scan (scans no run misses are absent), and the scans every run misses,
    sorted; ``per_run``: the scan ids each run misses."""
    counts = Counter(scan for scans in per_run.values() for scan in scans)
    return counts, sorted(scan for scan, n in counts.items() if n == len(per_run))


def mean_without(lesion_dice: dict[str, float], left_out: list[str]) -> float:
    """Mean Dice of the scans in ``lesion_dice`` (scan id -> Dice) that are not in ``left_out``."""
    kept = [d for scan, d in lesion_dice.items() if scan not in set(left_out)]
    return sum(kept) / len(kept) if kept else float("nan")


def overlay(scan: np.ndarray, ref: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The scan and its overlay side by side, uint8 ``[S, 2S, 3]``: reference green, prediction red."""
    rgb = np.repeat(scan[..., None], 3, axis=2).astype(np.float32)
    shown = rgb.copy()
    shown[ref] = 0.5 * shown[ref] + 0.5 * np.array([0, 255, 0])
    shown[pred] = 0.5 * shown[pred] + 0.5 * np.array([255, 0, 0])
    return np.concatenate([rgb, shown], axis=1).astype(np.uint8)


def save_figure(tiles: list[np.ndarray], path: str, scale: float) -> None:
    """Tiles in rows of :data:`COLUMNS`, resized by ``scale``, as one PNG."""
    blank = np.zeros_like(tiles[0])
    tiles = tiles + [blank] * (-len(tiles) % COLUMNS)
    grid = np.concatenate(
        [np.concatenate(tiles[i : i + COLUMNS], axis=1) for i in range(0, len(tiles), COLUMNS)], axis=0
    )
    image = Image.fromarray(grid)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="the prepared BUSI dataset (mosl prepare)")
    parser.add_argument("runs", nargs="+", help="fine-tuned run directories")
    parser.add_argument("--csv", help="write the missed scans, one row per run and scan")
    parser.add_argument("--figure", help="draw the scans every run misses, with the first run's masks, to this PNG")
    parser.add_argument("--scale", type=float, default=0.5, help="figure scale (1: the stored size)")
    args = parser.parse_args()
    ds = load_dataset(args.data)
    all_rows, per_run, lesion_dice, first_tiles = [], {}, {}, None
    for run in args.runs:
        rows, lesion_dice[run], tiles = missed_rows(run, ds)
        all_rows += rows
        per_run[run] = {str(r["scan"]) for r in rows}
        first_tiles = tiles if first_tiles is None else first_tiles
    counts, everywhere = shared_misses(per_run)
    print(f"missed by every run: {len(everywhere)}; by at least one: {len(counts)}")
    for scan in everywhere:
        print(f"  {scan}")
    for run in args.runs:
        values = lesion_dice[run]
        mean, mean_rest = mean_without(values, []), mean_without(values, everywhere)
        print(
            f"{run}: {len(per_run[run])} of {len(values)} test lesion scans missed; test lesion Dice "
            f"{mean:.4f}, {mean_rest:.4f} without the scans every run misses"
        )
    if args.csv:
        with Path(args.csv).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            for row in all_rows:
                writer.writerow({**row, "missed_by_runs": counts[str(row["scan"])]})
    if args.figure and first_tiles and everywhere:
        save_figure([overlay(*first_tiles[scan]) for scan in everywhere], args.figure, args.scale)


if __name__ == "__main__":
    main()
