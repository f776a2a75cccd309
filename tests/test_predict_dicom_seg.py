"""``predict --dicom-seg``: a DICOM SEG beside the PNG mask of each single-frame DICOM scan, read back with
highdicom; cines and non-DICOM inputs refused before anything is written; SEG files never taken as scans."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dicom_files import region, write
from mosl_cli import dicom
from mosl_cli.cli import app
from mosl_cli.config import PredictConfig
from mosl_cli.errors import MoslError
from mosl_cli.predict import expand_inputs, run_predict

hd = pytest.importorskip("highdicom")
ALL = 1e-6  # a threshold that marks every pixel the model sees as lesion: the imaging region


@pytest.fixture(scope="module")
def model_file(grey_model_file: Path) -> Path:
    return grey_model_file


def cfg(model_file: Path, *inputs: Path, **kw: object) -> PredictConfig:
    return PredictConfig(inputs=tuple(str(i) for i in inputs), model=str(model_file), device="cpu", **kw)  # type: ignore[arg-type]


def scan(path: Path, frames: int = 1) -> Path:
    rng = np.random.default_rng(0)
    shape = (frames, 40, 52) if frames > 1 else (40, 52)
    return write(path, rng.integers(0, 256, shape, dtype=np.uint8), frames=frames, patient="P7",
                 regions=[region(6, 4, 45, 35, delta_cm=(0.01, 0.02))])  # fmt: skip


def test_seg_holds_the_mask_and_references_its_scan(model_file: Path, tmp_path: Path) -> None:
    src = scan(tmp_path / "in" / "one.dcm")
    out = tmp_path / "out"
    [r] = run_predict(cfg(model_file, src, out=str(out), threshold=ALL, dicom_seg=True))
    assert r.mask == out / "one_mask.png" and r.dicom_seg == out / "one_seg.dcm"
    seg = hd.seg.segread(r.dicom_seg)
    source = dicom.read(src, header_only=True)
    assert seg.Modality == "SEG" and seg.PatientID == "P7" and seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert seg.SegmentSequence[0].SegmentLabel == "lesion"
    stored = dicom.read(r.dicom_seg).pixel_array  # [H, W], 1 bit a pixel
    png = np.asarray(Image.open(r.mask)) > 0
    expected = np.zeros((40, 52), bool)
    expected[4:36, 6:46] = True  # the imaging region; zero outside it, as in the PNG
    assert np.array_equal(png, expected) and np.array_equal(stored > 0, png)


def test_out_file_names_the_seg_after_it(model_file: Path, tmp_path: Path) -> None:
    src = scan(tmp_path / "one.dcm")
    [r] = run_predict(cfg(model_file, src, out=str(tmp_path / "lesion.png"), dicom_seg=True))
    assert r.dicom_seg == tmp_path / "lesion_seg.dcm" and r.dicom_seg.is_file()


@pytest.mark.parametrize("kind", ["cine", "png"])
def test_other_inputs_are_refused_before_anything_is_written(model_file: Path, tmp_path: Path, kind: str) -> None:
    inputs = tmp_path / "in"
    scan(inputs / "one.dcm")
    if kind == "cine":
        scan(inputs / "loop.dcm", frames=3)
    else:
        Image.fromarray(np.zeros((20, 30), np.uint8)).save(inputs / "two.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", str(inputs), "--model", str(model_file), "--out", str(out),
                                      "--dicom-seg", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 1 and "--dicom-seg" in result.output and "Traceback" not in result.output
    assert ("loop.dcm" if kind == "cine" else "two.png") in result.output
    assert not out.exists()


def test_a_seg_is_not_a_scan(model_file: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    src = scan(inputs / "one.dcm")
    run_predict(cfg(model_file, src, out=str(inputs), dicom_seg=True))
    assert (inputs / "one_seg.dcm").is_file()
    assert expand_inputs([str(inputs)]) == [src]  # a folder's SEG (and mask) files are left out
    with pytest.raises(dicom.DicomError, match="Segmentation"):
        dicom.check_pixels(dicom.read(inputs / "one_seg.dcm"))  # named directly, or met by prepare


def test_missing_highdicom_is_one_line_naming_the_extra(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_highdicom(name: str, *args: object, **kwargs: object) -> object:
        if name == "highdicom" or name.startswith("highdicom."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_highdicom)
    src = scan(tmp_path / "one.dcm")
    with pytest.raises(MoslError, match=r"mosl-cli\[dicom-seg\]"):
        run_predict(cfg(model_file, src, out=str(tmp_path / "o"), dicom_seg=True))
    assert not (tmp_path / "o").exists()
