"""The fastest decoder per format for ``mosl predict``: torchvision's libpng / libjpeg-turbo ops for
8-bit PNG and JPEG (they run without the GIL, so decode threads scale with cores), Pillow
(:func:`imageio.read_image`) for everything else and whenever torchvision declines a file.

The result is the same array Pillow gives: grey is Pillow's integer ITU-R 601-2 luminance
``(19595 R + 38470 G + 7471 B + 0x8000) >> 16`` computed from RGB, alpha is dropped, EXIF orientation
is applied. JPEG decoders may differ by a grey level from Pillow's; PNG is bit-exact.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mosl_cli.imageio import read_image

_TV_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 ``[3, H, W]`` → uint8 ``[1, H, W]``, exactly Pillow's ``convert("L")``."""
    r, g, b = rgb.to(torch.int32).unbind(0)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)[None]


def _torchvision_decode(path: Path, kind: str) -> torch.Tensor | None:
    """uint8 ``[C, H, W]`` (C = 1 grey or 3 RGB) or None when torchvision cannot give that."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg, decode_png, read_file

        data = read_file(str(path))
        if kind == "png":
            palette = data.numel() > 25 and int(data[25]) == 3  # IHDR colour type 3: indices, expand to RGB
            mode = ImageReadMode.RGB if palette else ImageReadMode.UNCHANGED
            img = decode_png(data, mode, apply_exif_orientation=True)
        else:
            img = decode_jpeg(data, ImageReadMode.UNCHANGED, apply_exif_orientation=True)
    except Exception:  # noqa: BLE001 - anything torchvision declines goes to Pillow, which reports real errors
        return None
    if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] not in (1, 2, 3, 4):
        return None
    return img[:1] if img.shape[0] <= 2 else img[:3]  # drop alpha


def read_scan(
    path: str | os.PathLike[str], channels: int, with_rgb: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Like :func:`imageio.read_image`: ``(uint8 [H, W, channels], uint8 [H, W, 3] or None)``."""
    path = Path(path)
    kind = _TV_SUFFIXES.get(path.suffix.lower())
    img = _torchvision_decode(path, kind) if kind else None
    if img is None:
        return read_image(path, channels, with_rgb)
    rgb = img.expand(3, -1, -1) if img.shape[0] == 1 else img
    scan = rgb if channels == 3 else (img if img.shape[0] == 1 else luminance(img))
    as_hwc = lambda t: np.ascontiguousarray(t.permute(1, 2, 0).numpy())  # noqa: E731
    return as_hwc(scan), (as_hwc(rgb) if with_rgb else None)


__all__ = ["read_scan", "luminance"]
