"""Render the example images in ``assets/`` from the synthetic dataset (deterministic).

    python scripts/make_assets.py [--out assets] [--seed 0]

Writes ``example_scan.png`` (a 300 x 240 grey breast scan, for ``mosl predict`` examples),
``example_mask.png`` (its lesion mask, 0/255 like BUSI) and ``synthetic_gallery.png`` (a contact
sheet of labelled breast scans with their mask outlines and one scan of each other organ).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mosl_cli.data.synthetic import OTHER_ORGANS, SyntheticScan, composition, generate

COUNT = 200
EXAMPLE_SIZE, EXAMPLE_HEIGHT = 300, 240
TILE, COLUMNS, CAPTION = 192, 4, 14
OUTLINE = {"benign": (60, 220, 90), "malignant": (235, 60, 50)}


def example(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The first malignant scan whose lesion lies well inside the top 240 rows: image and mask,
    uint8 [240, 300] (mask 0/255)."""
    for index, (label, _) in enumerate(composition(COUNT, seed)):
        if label != "malignant":
            continue
        scan = generate(index, COUNT, seed, EXAMPLE_SIZE)
        rows = np.nonzero(scan.mask.any(axis=1))[0]
        if rows.max() < EXAMPLE_HEIGHT - 20 and scan.mask.sum() > 1500:
            return scan.image[:EXAMPLE_HEIGHT], scan.mask[:EXAMPLE_HEIGHT] * np.uint8(255)
    raise RuntimeError("no malignant scan fits the example crop")


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a 0/1 mask (inside pixels with a 4-neighbour outside), bool [H, W]."""
    m = np.pad(mask.astype(bool), 1)
    interior = m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask.astype(bool) & ~interior


def tile(scan: SyntheticScan) -> Image.Image:
    """One captioned RGB tile with the lesion outline drawn on the scan."""
    rgb = np.repeat(scan.image[:, :, None], 3, axis=2)
    if scan.mask is not None and scan.mask.any():
        rgb[outline(scan.mask)] = OUTLINE[scan.label]
    canvas = Image.new("RGB", (TILE, TILE + CAPTION), (0, 0, 0))
    canvas.paste(Image.fromarray(rgb), (0, 0))
    caption = f"{scan.organ} / {scan.label}" if scan.organ == "breast" else scan.organ
    ImageDraw.Draw(canvas).text((4, TILE + 1), caption, fill=(230, 230, 230))
    return canvas


def gallery(seed: int) -> Image.Image:
    """Three benign, three malignant and one normal breast scan, then one scan of each other organ."""
    kinds = composition(COUNT, seed)
    wanted = [("benign", "breast")] * 3 + [("malignant", "breast")] * 3 + [("normal", "breast")]
    wanted += [("unlabelled", organ) for organ in OTHER_ORGANS]
    used: set[int] = set()
    tiles = []
    for kind in wanted:
        index = next(i for i, k in enumerate(kinds) if k == kind and i not in used)
        used.add(index)
        tiles.append(tile(generate(index, COUNT, seed, TILE)))
    rows = -(-len(tiles) // COLUMNS)
    sheet = Image.new("RGB", (COLUMNS * (TILE + 4) - 4, rows * (TILE + CAPTION + 4) - 4), (255, 255, 255))
    for k, t in enumerate(tiles):
        sheet.paste(t, ((k % COLUMNS) * (TILE + 4), (k // COLUMNS) * (TILE + CAPTION + 4)))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "assets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    image, mask = example(args.seed)
    Image.fromarray(image).save(args.out / "example_scan.png", optimize=True)
    Image.fromarray(mask).save(args.out / "example_mask.png", optimize=True)
    gallery(args.seed).save(args.out / "synthetic_gallery.png", optimize=True)
    print(f"wrote example_scan.png, example_mask.png, synthetic_gallery.png to {args.out}")


if __name__ == "__main__":
    main()
