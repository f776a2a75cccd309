"""``predict`` on DICOM files, cines and videos: one mask per frame at the frame's size, the region
pasted back, 0-1 masks, measurements, and one-line refusals."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import write_video
from dicom_files import dataset, region, save, write
from mosl_cli.cli import app
from mosl_cli.config import PredictConfig
from mosl_cli.errors import MoslError
from mosl_cli.measure import max_diameter, measure
from mosl_cli.predict import run_predict

ALL = 1e-6  # a threshold that marks every pixel the model sees as lesion: shows where it looked


@pytest.fixture(scope="module")
def model_file(grey_model_file: Path) -> Path:
    return grey_model_file


def cfg(model_file: Path, *inputs: Path, **kw: object) -> PredictConfig:
    return PredictConfig(inputs=tuple(str(i) for i in inputs), model=str(model_file), device="cpu", **kw)  # type: ignore[arg-type]


def test_cine_gives_one_mask_per_frame_with_the_region_pasted_back(model_file: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cine = rng.integers(0, 256, (5, 40, 52), dtype=np.uint8)
    src = write(
        tmp_path / "loop.dcm", cine, frames=5, regions=[region(6, 4, 45, 35, delta_cm=(0.01, 0.02))], FrameTime=50.0
    )
    out = tmp_path / "out"
    results = run_predict(cfg(model_file, src, out=str(out), overlay=True, threshold=ALL))
    assert [r.frame for r in results] == [0, 1, 2, 3, 4]
    expected = np.zeros((40, 52), bool)
    expected[4:36, 6:46] = True  # the region, bounds inclusive in DICOM
    for i, r in enumerate(results):
        assert r.mask == out / "loop_mask" / f"{i:05d}.png" and (r.height, r.width) == (40, 52)
        mask = np.asarray(Image.open(r.mask))
        assert mask.shape == (40, 52) and np.array_equal(mask > 0, expected) and set(np.unique(mask)) == {0, 255}
        assert r.spacing_mm == pytest.approx((0.2, 0.1))
    import av

    with av.open(str(out / "loop_overlay.mp4")) as box:
        decoded = list(box.decode(video=0))
        assert len(decoded) == 5 and (decoded[0].height, decoded[0].width) == (40, 52)
        assert float(box.streams.video[0].average_rate) == pytest.approx(20.0)


def test_cine_probabilities_are_one_map_per_frame_zero_outside_the_region(model_file: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    src = write(tmp_path / "loop.dcm", rng.integers(0, 256, (3, 40, 52), dtype=np.uint8), frames=3,
                regions=[region(6, 4, 45, 35, delta_cm=(0.01, 0.02))], FrameTime=50.0)  # fmt: skip
    out = tmp_path / "out"
    results = run_predict(cfg(model_file, src, out=str(out), probabilities=True, postprocess=False))
    for i, r in enumerate(results):
        assert r.probabilities == out / "loop_prob" / f"{i:05d}.png"
        prob, mask = np.asarray(Image.open(r.probabilities)), np.asarray(Image.open(r.mask))
        assert prob.shape == (40, 52) and prob[:4].max() == 0 and prob[:, :6].max() == 0  # outside: 0
        assert np.array_equal(mask > 0, prob > 127.5) or np.mean((mask > 0) == (prob > 127.5)) > 0.99


def test_video_gives_one_mask_per_frame(model_file: Path, tmp_path: Path) -> None:
    src = write_video(tmp_path / "clip.mp4", frames=6, h=48, w=64)
    results = run_predict(cfg(model_file, src, out=str(tmp_path / "o"), mask_values="0-1"))
    assert len(results) == 6 and sorted(p.name for p in (tmp_path / "o" / "clip_mask").iterdir()) == [
        f"{i:05d}.png" for i in range(6)
    ]
    for r in results:
        mask = np.asarray(Image.open(r.mask))
        assert mask.shape == (48, 64) and set(np.unique(mask)) <= {0, 1}


def test_single_frame_dicom_and_png_together(model_file: Path, tmp_path: Path) -> None:
    grey = np.random.default_rng(1).integers(0, 256, (30, 44), dtype=np.uint8)
    write(tmp_path / "in" / "one.dcm", grey, pixel_spacing=(0.5, 0.25))
    Image.fromarray(grey).save(tmp_path / "in" / "two.png")
    measurements = tmp_path / "m.csv"
    results = run_predict(
        cfg(
            model_file,
            tmp_path / "in",
            out=str(tmp_path / "o"),
            threshold=ALL,
            mask_values="0-1",
            measurements=str(measurements),
        )
    )
    assert [r.mask.name for r in results] == ["two_mask.png", "one_mask.png"]
    assert np.asarray(Image.open(results[1].mask)).max() == 1
    rows = list(csv.DictReader(measurements.open()))
    assert [r["mask"] for r in rows] == [str(r.mask) for r in results]
    dicom_row, png_row = rows[1], rows[0]
    assert int(dicom_row["lesion_pixels"]) == 30 * 44
    assert float(dicom_row["area_mm2"]) == pytest.approx(30 * 44 * 0.5 * 0.25, abs=1e-3)
    assert float(dicom_row["max_diameter_mm"]) == pytest.approx(math.hypot(29 * 0.5, 43 * 0.25), abs=1e-3)
    assert png_row["area_mm2"] == "" and float(png_row["max_diameter_px"]) == pytest.approx(
        math.hypot(29, 43), abs=1e-3
    )


def test_measure_known_shapes() -> None:
    m = np.zeros((40, 40), bool)
    m[5:15, 10:30] = True  # 10 rows × 20 columns
    out = measure(m, (0.5, 0.2))
    assert out["lesion_pixels"] == 200 and out["area_mm2"] == pytest.approx(20.0)
    assert out["max_diameter_px"] == pytest.approx(math.hypot(9, 19))
    assert out["max_diameter_mm"] == pytest.approx(math.hypot(9 * 0.5, 19 * 0.2))
    disc = np.hypot(*np.mgrid[-20:21, -20:21]) <= 15
    assert max_diameter(disc) == pytest.approx(30.0)
    assert measure(np.zeros((4, 4), bool), None) == {
        "lesion_pixels": 0,
        "max_diameter_px": 0.0,
        "area_mm2": None,
        "max_diameter_mm": None,
    }


def test_refusals_before_writing(model_file: Path, tmp_path: Path) -> None:
    empty = save(dataset(None), tmp_path / "sr.dcm")
    with pytest.raises(MoslError, match="sr.dcm: no pixel data") as err:
        run_predict(cfg(model_file, empty, out=str(tmp_path / "o")))
    assert "\n" not in str(err.value) and not (tmp_path / "o").exists()
    cine = write(tmp_path / "c.dcm", np.zeros((3, 8, 8), np.uint8), frames=3)
    with pytest.raises(MoslError, match="one mask per frame"):
        run_predict(cfg(model_file, cine, out=str(tmp_path / "x.png")))
    with pytest.raises(MoslError, match="--mask-values"):
        run_predict(cfg(model_file, cine, mask_values="0-100"))
    result = CliRunner().invoke(
        app, ["predict", str(empty), "--model", str(model_file), "--device", "cpu"], env={"COLUMNS": "400"}
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and "no pixel data" in lines[0], result.output
