"""Reading scans and writing masks with Pillow.

Scans: PNG, JPEG, BMP, TIFF and GIF (the first frame of a multi-frame file, as ``prepare`` reads a
GIF image), any Pillow mode, EXIF orientation applied, returned as
uint8 ``[H, W, C]`` with C = 1 (luminance) or 3 (RGB) to match a model's ``in_channels``; 16-bit
scans are scaled to 8 bits. Masks and overlays are written as PNG, atomically.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mosl_cli.errors import MoslError
from mosl_cli.fsutil import atomic_path

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
# Lossless formats a 0/255 mask may be written in (JPEG would blur the edge into grey values).
MASK_SUFFIXES: tuple[str, ...] = (".png", ".bmp", ".tif", ".tiff")
_FORMATS = {"PNG", "JPEG", "MPO", "BMP", "TIFF", "GIF"}
# Large scans (above Pillow's warning limit, ~89 Mpx) are read without a warning; above twice that
# limit Pillow refuses the file as a possible decompression bomb, and mosl says so in one line.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
_SAVE_FORMAT = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def has_image_suffix(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` ends in one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def check_image(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(height, width)`` of a readable scan (header and, for PNG, chunk checksums are checked).

    Raises :class:`MoslError` naming the file when it is missing, not an image or damaged.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            fmt = img.format
            width, height = img.size
            img.verify()
    except FileNotFoundError as exc:
        raise MoslError(f"{path}: no such file; check the path") from exc
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MoslError(f"{path}: not a readable image ({exc}); pass PNG, JPEG, BMP, TIFF or GIF scans") from exc
    if fmt not in _FORMATS:
        raise MoslError(f"{path}: a {fmt} file; pass PNG, JPEG, BMP, TIFF or GIF scans")
    return height, width


def _too_large(path: Path, exc: Exception) -> MoslError:
    return MoslError(f"{path}: too many pixels to decode safely ({exc}); downscale the scan")


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and float greys → 8-bit ``L`` (16-bit: top byte; others: min–max scaled)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img).astype(np.uint16)
        return Image.fromarray((arr >> 8).astype(np.uint8))
    if img.mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.round().astype(np.uint8))
    return img


def _as_array(img: Image.Image, channels: int) -> np.ndarray:
    arr = np.array(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)  # writable: torch reads it
    return arr[:, :, None] if arr.ndim == 2 else arr


def read_image(
    path: str | os.PathLike[str], channels: int, with_rgb: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a scan once: ``(uint8 [H, W, channels], uint8 [H, W, 3] RGB or None)``.

    ``channels`` 1 is Pillow's ITU-R 601-2 luminance, 3 is RGB; the RGB copy (for an overlay) is
    returned only when ``with_rgb``. Raises :class:`MoslError` naming the file when it cannot be decoded.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(_to_8bit(img))
            model_input = _as_array(img, channels)
            rgb = (model_input if channels == 3 else _as_array(img, 3)) if with_rgb else None
    except FileNotFoundError as exc:
        raise MoslError(f"{path}: no such file; check the path") from exc
    except Image.DecompressionBombError as exc:
        raise _too_large(path, exc) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MoslError(f"{path}: cannot decode the image ({exc}); re-export it as PNG") from exc
    return model_input, rgb


def write_image(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write uint8 ``[H, W]`` (grey) or ``[H, W, 3]`` (RGB) losslessly and atomically.

    The format follows the suffix (:data:`MASK_SUFFIXES`; anything else is written as PNG).
    """
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    fmt = _SAVE_FORMAT.get(Path(path).suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        # compress_level 1: masks are mostly flat, so fast zlib loses little size and saves much time.
        options = {"compress_level": 1} if fmt == "PNG" else {}
        Image.fromarray(arr).save(tmp, format=fmt, **options)


__all__ = ["IMAGE_SUFFIXES", "MASK_SUFFIXES", "has_image_suffix", "check_image", "read_image", "write_image"]
