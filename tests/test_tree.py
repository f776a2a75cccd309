"""Any tree of scans and videos (readers/tree.py) and the screen-export crop (data/crop.py)."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from conftest import noise, save, write_video
from mosl_cli.cli import app
from mosl_cli.config import PrepareConfig
from mosl_cli.data import crop
from mosl_cli.data.readers import choose
from mosl_cli.data.readers.base import open_mask
from mosl_cli.data.readers.tree import group_key, group_regex
from mosl_cli.data.store import read_manifest
from mosl_cli.errors import MoslError
from mosl_cli.prepare import run_prepare


def prepare(tmp_path: Path, *sources: str | Path, **kw):
    cfg = PrepareConfig(
        sources=tuple(str(s) for s in sources), out=str(tmp_path / "ds"), **{"size": 32, "workers": 2, **kw}
    )
    summary = run_prepare(cfg)
    return summary, read_manifest(summary.out)


def speckle(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Ultrasound-like texture: bright speckle fading with depth, never flat."""
    depth = np.linspace(1.0, 0.3, h)[:, None]
    return np.clip(rng.gamma(2.0, 40.0, (h, w)) * depth, 0, 255).astype(np.uint8)


def screen_export(rng: np.random.Generator, sector: bool = False) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A scan pasted into a white page and a grey panel with text-like marks; returns it and the scan's box."""
    page = Image.new("RGB", (240, 180), (255, 255, 255))
    draw = ImageDraw.Draw(page)
    draw.rectangle((10, 8, 229, 171), fill=(60, 60, 64))  # the scanner's panel
    for y in range(16, 160, 12):  # text-like marks left and right of the image
        draw.text((14, y), "GN 36", fill=(230, 230, 230))
        draw.rectangle((206, y, 222, y + 4), fill=(200, 200, 0))
    scan = speckle(rng, 120, 140)
    if sector:  # a fan: speckle inside a wedge, black outside
        yy, xx = np.mgrid[:120, :140]
        angle = np.degrees(np.arctan2(xx - 70, yy + 20))
        scan[(np.abs(angle) > 35) | (np.hypot(xx - 70, yy + 20) > 138)] = 0
    page.paste(Image.fromarray(scan).convert("RGB"), (55, 30))
    return page, (55, 30, 195, 150)


@pytest.mark.parametrize("sector", [False, True])
def test_screen_export_is_cropped_to_its_image(sector: bool) -> None:
    page, truth = screen_export(np.random.default_rng(1), sector)
    box = crop.crop_box(page)
    assert box is not None
    assert all(abs(a - b) <= 3 for a, b in zip(box, truth)), (box, truth)


def test_clean_scan_is_not_cropped() -> None:
    rng = np.random.default_rng(2)
    assert crop.crop_box(Image.fromarray(speckle(rng, 96, 128))) is None
    assert crop.crop_box(Image.fromarray(np.full((64, 64), 128, dtype=np.uint8))) is None  # nothing to find


def test_screen_export_through_prepare(tmp_path: Path) -> None:
    page, (x0, y0, x1, y1) = screen_export(np.random.default_rng(3))
    page.save(tmp_path / "export one.png")
    _, manifest = prepare(tmp_path / "a", tmp_path, organ="breast")
    (s,) = manifest["samples"]
    assert abs(s["width"] - (x1 - x0)) <= 4 and abs(s["height"] - (y1 - y0)) <= 4 and s["organ"] == "breast"
    _, manifest = prepare(tmp_path / "b", tmp_path, crop=False)
    assert (manifest["samples"][0]["width"], manifest["samples"][0]["height"]) == (240, 180)


@pytest.fixture
def tree_root(tmp_path: Path) -> Path:
    """Nested folders with spaces, a video per patient, labelled parts at two depths, a stray mask folder."""
    rng = np.random.default_rng(5)
    root = tmp_path / "my archive"
    for p in (1, 2):
        for k in range(2):
            save(root / "site A" / f"Patient {p}" / f"scan {k}.png", noise(rng, 40, 48))
        write_video(root / "clips" / f"patient_{p}_L{p}.mp4", frames=6, seed=p)
    for part in ("seg", "seg/test"):
        for i in range(2):
            save(root / part / "images" / f"{i:04d}.png", noise(rng, 40, 48))
            m = np.zeros((40, 48), dtype=np.uint8)
            m[5:15, 5:15] = 1 + i  # palette-style labels 1 and 2: both foreground
            save(root / part / "masks" / f"{i:04d}.png", m)
    return root


def test_tree_reads_every_file_with_groups(tmp_path: Path, tree_root: Path) -> None:
    reader, root = choose(str(tree_root))
    assert reader.NAME == "folder"
    _, manifest = prepare(tmp_path, tree_root, frames_per_video=None, organ="nerve")
    samples = manifest["samples"]
    by_file = collections.Counter(s["paths"][0] for s in samples)
    assert len(by_file) == 4 + 2 + 4 and all(by_file[f] == 6 for f in by_file if f.endswith(".mp4"))
    assert {s["organ"] for s in samples} == {"nerve"}
    labelled = [s for s in samples if s["has_mask"]]
    assert len(labelled) == 4 and all(s["mask_pixels"] == 100 for s in labelled)
    assert not any("masks" in s["paths"][0] for s in samples)
    for p in ("1", "2"):  # one patient's scans (folder name) and video frames (file name) share one group
        mine = [s for s in samples if re.search(rf"[Pp]atient[ _]{p}(?!\d)", "/".join(s["paths"][0].split("/")[-2:]))]
        assert len(mine) == 2 + 6 and len({s["group"] for s in mine}) == 1


def test_group_pattern() -> None:
    default = group_regex(PrepareConfig(sources=()).group_pattern)
    assert group_key(Path("lus_videos/patient_21_L2.mp4"), default) == "21"
    assert group_key(Path("Patient 3/scan.png"), default) == "3"
    assert group_key(Path("pat7_b.png"), default) == "7"
    assert group_key(Path("path/image1.png"), default) is None
    assert group_key(Path("S4/S4_R20_step_425.png"), group_regex(r"^S\d+")) == "S4"
    with pytest.raises(MoslError, match="--group-pattern"):
        group_regex("(")


def test_bad_group_pattern_fails_before_any_source_is_read(tmp_path: Path) -> None:
    """``synthetic`` reads no file names, yet a pattern that is no regex is still the user's error."""
    result = CliRunner().invoke(app, ["prepare", "synthetic", "--out", str(tmp_path / "x"), "--group-pattern", "([a-z"])
    assert result.exit_code == 1 and "--group-pattern '([a-z': not a regular expression" in result.output
    assert not (tmp_path / "x").exists()


def test_cli_frames_per_video(tmp_path: Path, tree_root: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["prepare", str(tree_root), "--out", str(tmp_path / "x"), "--frames-per-video", "most"])
    assert bad.exit_code == 2 and "--frames-per-video" in bad.output
    ok = runner.invoke(
        app,
        [
            "prepare",
            str(tree_root / "clips"),
            "--out",
            str(tmp_path / "y"),
            "--size",
            "32",
            "--frames-per-video",
            "all",
            "--organ",
            "lung",
            "--no-crop",
            "--workers",
            "1",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert len(read_manifest(tmp_path / "y")["samples"]) == 12


# --------------------------------------------------------------------------- the real trees


def test_nerve_real_all_scans(real, tmp_path: Path) -> None:
    """USGRA-seg: 204 + 40 test scans, palette masks (labels 1, 2) read as foreground; crops keep every label."""
    _, manifest = prepare(tmp_path, real("nerve/usgra-seg/dataset"), organ="nerve")
    samples = manifest["samples"]
    assert len(samples) == 244 and sum("/test/" in s["paths"][0] for s in samples) == 40
    assert all(s["has_mask"] and s["organ"] == "nerve" for s in samples)
    assert all(s["mask_pixels"] == int(open_mask(s["paths"][1]).sum()) for s in samples)


def test_muscle_real_screen_exports_cropped(real, tmp_path: Path) -> None:
    """TimTrack: 339 scans four folders deep; the 130 screen exports (datasets 3, 4) lose their margins."""
    _, manifest = prepare(tmp_path, real("muscle/timtrack"), organ="muscle")
    samples = manifest["samples"]
    assert len(samples) == 339 and {s["organ"] for s in samples} == {"muscle"}
    assert collections.Counter(s["class"] for s in samples) == {
        "dataset 1": 153,
        "dataset 2": 56,
        "dataset 3": 100,
        "dataset 4": 30,
    }
    for s in samples:
        with Image.open(s["paths"][0]) as im:
            w, h = im.size
        if s["class"] in ("dataset 3", "dataset 4"):
            assert s["width"] * s["height"] < 0.7 * w * h, s["id"]
        if s["class"] == "dataset 1":  # clean scans stay (nearly) whole: at most a black side strip goes
            assert s["width"] * s["height"] >= 0.9 * w * h, s["id"]


@pytest.mark.slow
def test_lung_videos_real_grouped_by_patient(real, tmp_path: Path) -> None:
    """COVID-BLUES: frames of all 362 videos, the videos of each of the 63 patients in one group and split."""
    _, manifest = prepare(tmp_path, real("lung-videos/covid-blues"), organ="lung", frames_per_video=1)
    samples = manifest["samples"]
    assert len({s["paths"][0] for s in samples}) == 362 and len(samples) == 362
    patients = collections.defaultdict(set)
    for s in samples:
        patients[re.search(r"patient_(\d+)_", s["paths"][0])[1]].add((s["group"], s["split"]))
    assert len(patients) == 63 and all(len(v) == 1 for v in patients.values())
