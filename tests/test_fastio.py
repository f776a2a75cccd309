"""The fast decoder gives what Pillow gives (PNG bit-exact, JPEG within a grey level)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mosl_cli.fastio import read_scan
from mosl_cli.imageio import read_image


def _image(mode: str, rng: np.random.Generator) -> Image.Image:
    rgb = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))
    if mode == "P":
        return rgb.quantize(64)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (37, 53), dtype=np.uint16))
    return rgb.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "1", "I;16"])
@pytest.mark.parametrize("channels", [1, 3])
def test_png_matches_pillow_exactly(mode: str, channels: int, tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    _image(mode, np.random.default_rng(0)).save(path)
    got, got_rgb = read_scan(path, channels, with_rgb=True)
    want, want_rgb = read_image(path, channels, with_rgb=True)
    assert got.shape == want.shape and np.array_equal(got, want)
    assert np.array_equal(got_rgb, want_rgb)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_within_one_grey_level(channels: int, tmp_path: Path) -> None:
    path = tmp_path / "scan.jpg"
    yy, xx = np.mgrid[0:64, 0:80]
    smooth = np.stack([(yy * 3) % 256, (xx * 3) % 256, (yy + xx) % 256], -1).astype(np.uint8)
    Image.fromarray(smooth).save(path, quality=95)
    got, _ = read_scan(path, channels)
    want, _ = read_image(path, channels)
    assert got.shape == want.shape and np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_other_formats_and_damaged_files_go_to_pillow(tmp_path: Path) -> None:
    from mosl_cli.errors import MoslError

    Image.fromarray(np.zeros((8, 9), np.uint8)).save(tmp_path / "a.bmp")
    assert read_scan(tmp_path / "a.bmp", 1)[0].shape == (8, 9, 1)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(MoslError, match="bad.png"):
        read_scan(tmp_path / "bad.png", 1)
