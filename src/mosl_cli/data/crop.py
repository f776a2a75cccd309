"""Crop a screen export to its ultrasound image: the largest non-uniform region (sector or rectangle).

Scanner screen grabs put the image inside flat margins (white, grey, black) with text, scales and
icons around it. :func:`crop_box` finds the image without knowing the scanner:

1. *texture*: a pixel is textured when the grey-level standard deviation of its 5×5 window exceeds
   :data:`TEXTURE` (flat margins are exactly or nearly constant; speckle is not);
2. the texture map is pooled onto a grid of at most :data:`GRID` cells a side (a cell is content when
   half its pixels are textured), opened with a 5×5-cell square (text, ticks and outlines thinner than
   about 5 % of the image vanish), and the largest 4-connected blob of cells is kept, with any
   blob at least a fifth its size within its columns (a dark band across a scan splits it);
3. its bounding box is widened by one cell and shrunk back while its outermost row or column is
   almost untextured, giving a box to the pixel;
4. it is then extended down over rows that are dark but not a flat fill (a scan's dim depths, too
   faint to count as texture above; only downwards, as text columns beside a scan on a black
   screen look alike).

The box is used only when it keeps at least :data:`MIN_AREA` of the image (else nothing looks like a
scan) and cuts at least :data:`MIN_CUT` of the width or height (else the image already is the scan).
Sector scans keep their black corners: the crop is the sector's bounding box. Works on any
``L``/``RGB`` PIL image; numpy only. A DICOM reader that knows the region from its header should use
that box with :func:`apply` instead.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]  # left, top, right, bottom (PIL order, right/bottom exclusive)

TEXTURE = 2.0  # grey levels of local standard deviation above which a pixel is textured
GRID = 96  # cells along the longest side
MIN_AREA = 0.10  # smallest kept fraction of the image area
MIN_CUT = 0.03  # smallest cut (fraction of width or height) worth making
MERGE = 0.2  # blobs this large next to the largest one are parts of the same scan split by a dark band
EDGE = 0.05  # a border line with fewer textured pixels than this fraction is trimmed
DARK = 40.0  # a row below the box this dark (mean grey) may be the scan's dim depths ...
FLAT = 0.9  # ... unless this fraction of it has one value (a screen's flat fill)


def _box_mean(a: np.ndarray, r: int) -> np.ndarray:
    """Mean of ``a`` over a ``(2r+1)²`` window (edges replicated), via an integral image."""
    p = np.pad(a, r + 1, mode="edge").astype(np.float64)
    s = p.cumsum(0).cumsum(1)
    k = 2 * r + 1
    tot = s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]
    return tot[: a.shape[0], : a.shape[1]] / (k * k)


def texture(grey: np.ndarray, r: int = 2) -> np.ndarray:
    """Bool map: local standard deviation above :data:`TEXTURE`."""
    g = grey.astype(np.float64)
    var = _box_mean(g * g, r) - _box_mean(g, r) ** 2
    return var > TEXTURE * TEXTURE


def _main_blobs(cells: np.ndarray) -> np.ndarray | None:
    """Bool map of the largest 4-connected blob of ``cells`` and of every blob above or below it
    at least :data:`MERGE` its size."""
    seen = np.zeros_like(cells)
    blobs: list[list[tuple[int, int]]] = []
    h, w = cells.shape
    for y0, x0 in zip(*np.nonzero(cells)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        blob, queue = [], deque([(int(y0), int(x0))])
        while queue:
            y, x = queue.popleft()
            blob.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and cells[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        blobs.append(blob)
    if not blobs:
        return None
    blobs.sort(key=len, reverse=True)
    lo, hi = min(x for _, x in blobs[0]), max(x for _, x in blobs[0])
    out = np.zeros_like(cells)
    for blob in blobs:
        ys, xs = zip(*blob)
        inside = np.mean([lo <= x <= hi for x in xs])  # pieces of one scan share its columns
        if blob is blobs[0] or (len(blob) >= MERGE * len(blobs[0]) and inside >= 0.5):
            out[list(ys), list(xs)] = True
    return out


def _open(cells: np.ndarray, r: int = 2) -> np.ndarray:
    """Binary opening with a ``(2r+1)²`` square (erosion, then dilation); the image border counts as content."""
    eroded = _box_mean(cells.astype(np.float64), r) > 1 - 1e-9
    return _box_mean(eroded.astype(np.float64), r) > 1e-9


def _trim(tex: np.ndarray, box: Box) -> Box:
    """Shrink ``box`` while its outermost row or column has fewer than :data:`EDGE` textured pixels."""
    x0, y0, x1, y1 = box
    while x1 - x0 > 1 and y1 - y0 > 1:
        sides = {
            "top": tex[y0, x0:x1].mean(),
            "bottom": tex[y1 - 1, x0:x1].mean(),
            "left": tex[y0:y1, x0].mean(),
            "right": tex[y0:y1, x1 - 1].mean(),
        }
        side = min(sides, key=sides.__getitem__)
        if sides[side] >= EDGE:
            break
        if side == "top":
            y0 += 1
        elif side == "bottom":
            y1 -= 1
        elif side == "left":
            x0 += 1
        else:
            x1 -= 1
    return x0, y0, x1, y1


def _grow(grey: np.ndarray, tex: np.ndarray, box: Box) -> Box:
    """Extend ``box`` down over the scan's dim depths: dark rows that are not a flat fill nor an edge line."""
    x0, y0, x1, y1 = box
    while y1 < grey.shape[0]:
        row = grey[y1, x0:x1]
        if row.mean() > DARK or tex[y1, x0:x1].mean() >= 0.6 or np.mean(row == np.median(row)) >= FLAT:
            break
        y1 += 1
    return x0, y0, x1, y1


def find_box(grey: np.ndarray) -> Box | None:
    """The box of the largest textured region of a grey ``[H, W]`` array, or ``None`` (see the module docstring)."""
    h, w = grey.shape
    tex = texture(grey)
    c = max(1, -(-max(h, w) // GRID))
    gh, gw = -(-h // c), -(-w // c)
    padded = np.zeros((gh * c, gw * c), dtype=np.float64)
    padded[:h, :w] = tex
    cells = padded.reshape(gh, c, gw, c).mean(axis=(1, 3)) >= 0.5
    blob = _main_blobs(_open(cells))
    if blob is None:
        return None
    ys, xs = np.nonzero(blob)
    box = (
        max(0, (xs.min() - 1) * c),
        max(0, (ys.min() - 1) * c),
        min(w, (xs.max() + 2) * c),
        min(h, (ys.max() + 2) * c),
    )
    return _grow(grey, tex, _trim(tex, box))


def crop_box(image: Image.Image) -> Box | None:
    """The box to crop ``image`` to, or ``None`` when it should be kept whole (see the module docstring)."""
    grey = np.asarray(image if image.mode == "L" else image.convert("L"))
    box = find_box(grey)
    if box is None:
        return None
    return box if worth_it(box, image.width, image.height) else None


def worth_it(box: Box, width: int, height: int) -> bool:
    """Whether cropping ``width×height`` to ``box`` keeps enough of it and cuts enough to matter."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    if bw * bh < MIN_AREA * width * height:
        return False
    return bw <= (1 - MIN_CUT) * width or bh <= (1 - MIN_CUT) * height


def union(boxes: list[Box]) -> Box | None:
    """The smallest box holding all ``boxes`` (``None`` for none): one crop for every frame of a video."""
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def apply(image: Image.Image, mask: np.ndarray | None, box: Box | None) -> tuple[Image.Image, np.ndarray | None]:
    """``image`` (and its ``[H, W]`` mask) cropped to ``box``; unchanged for ``None``."""
    if box is None:
        return image, mask
    x0, y0, x1, y1 = box
    return image.crop(box), None if mask is None else mask[y0:y1, x0:x1]
