"""DICOM reading: each photometric interpretation, compressed syntaxes, cines, the imaging-region crop,
spacing, leakage groups, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dicom_files import dataset, jpeg_ybr_422, region, save, smooth_rgb, write, ybr_full, ybr_full_422_bytes
from mosl_cli import dicom
from mosl_cli.config import PrepareConfig
from mosl_cli.data.readers import choose
from mosl_cli.data.readers.base import SkipSample
from mosl_cli.data.readers.dicom import load_dicom, make_item
from mosl_cli.prepare import run_prepare

CFG = PrepareConfig(sources=("x",), frames_per_video=4)
RNG = np.random.default_rng(0)


def frame(path: Path, index: int = 0) -> np.ndarray:
    return np.asarray(dicom.frame_image(dicom.read(path), index))


def loaded(path: Path, cfg: PrepareConfig = CFG, masks: tuple[str, ...] = ()) -> list:
    return load_dicom(make_item(path, path.name, "none", "unknown", masks, cfg))


# --------------------------------------------------------------------------- photometric interpretations


def test_monochrome2_8_bit_is_kept(tmp_path: Path) -> None:
    grey = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    img = dicom.frame_image(dicom.read(write(tmp_path / "m2.dcm", grey)))
    assert img.mode == "L" and np.array_equal(np.asarray(img), grey)


def test_monochrome2_12_bit_is_scaled_by_bits_stored(tmp_path: Path) -> None:
    grey = RNG.integers(0, 4096, (10, 12)).astype(np.uint16)
    out = frame(write(tmp_path / "m12.dcm", grey, bits_stored=12))
    assert np.array_equal(out, np.round(grey * (255 / 4095)).astype(np.uint8))


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    grey = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    assert np.array_equal(frame(write(tmp_path / "m1.dcm", grey, "MONOCHROME1")), 255 - grey)


def test_rgb(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (16, 18, 3), dtype=np.uint8)
    img = dicom.frame_image(dicom.read(write(tmp_path / "rgb.dcm", rgb, "RGB")))
    assert img.mode == "RGB" and np.array_equal(np.asarray(img), rgb)


def test_ybr_full_is_converted_to_rgb(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (16, 18, 3), dtype=np.uint8)
    out = frame(write(tmp_path / "ybr.dcm", ybr_full(rgb), "YBR_FULL"))
    assert np.abs(out.astype(int) - rgb).max() <= 2  # two 8-bit roundings


def test_ybr_full_422_native_is_converted_to_rgb(tmp_path: Path) -> None:
    # chroma constant across each horizontal pixel pair, so sub-sampling loses nothing
    rgb = RNG.integers(0, 256, (12, 8, 1), dtype=np.uint8).repeat(3, -1)
    rgb[..., 0] = np.repeat(RNG.integers(0, 256, (12, 4)), 2, axis=1)
    rgb[..., 1] = rgb[..., 2] = 128
    ds = dataset(rgb, "YBR_FULL_422")
    ds.PixelData = ybr_full_422_bytes(rgb)
    out = np.asarray(dicom.frame_image(dicom.read(save(ds, tmp_path / "ybr422.dcm"))))
    assert out.shape == rgb.shape and np.abs(out.astype(int) - rgb).max() <= 3


def test_jpeg_baseline_ybr_full_422(tmp_path: Path) -> None:
    rgb = smooth_rgb(32, 48)
    out = frame(jpeg_ybr_422(tmp_path / "jpeg.dcm", rgb))
    assert out.shape == rgb.shape and np.abs(out.astype(int) - rgb).mean() < 4


def test_palette_colour_uses_the_lookup_table(tmp_path: Path) -> None:
    index = RNG.integers(0, 256, (10, 14), dtype=np.uint8)
    lut = RNG.integers(0, 65536, (3, 256)).astype(np.uint16)
    ds = dataset(index, "PALETTE COLOR")
    for name, table in zip(("Red", "Green", "Blue"), lut):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{name}PaletteColorLookupTableData", table.tobytes())
    img = dicom.frame_image(dicom.read(save(ds, tmp_path / "palette.dcm")))
    expected = np.round(lut[:, index].transpose(1, 2, 0) * (255 / 65535)).astype(np.uint8)
    assert img.mode == "RGB" and np.array_equal(np.asarray(img), expected)


def test_rle_lossless_is_decoded(tmp_path: Path) -> None:
    from pydicom.uid import RLELossless

    grey = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    ds = dataset(grey)
    ds.compress(RLELossless, grey)
    assert np.array_equal(frame(save(ds, tmp_path / "rle.dcm")), grey)


# --------------------------------------------------------------------------- refusals, one line each


def test_no_pixel_data_is_a_one_line_error(tmp_path: Path) -> None:
    path = save(dataset(None), tmp_path / "report.dcm")
    with pytest.raises(dicom.DicomError, match="no pixel data") as err:
        dicom.frame_image(dicom.read(path))
    assert "\n" not in str(err.value)
    with pytest.raises(SkipSample, match="no pixel data"):
        loaded(path)


def test_undecodable_syntax_names_it(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    ds = dataset(np.zeros((8, 8), np.uint8))
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\0" * 20])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    path = save(ds, tmp_path / "jls.dcm")
    with pytest.raises(dicom.DicomError, match="JPEG-LS Lossless") as err:
        dicom.frame_image(dicom.read(path))
    assert "\n" not in str(err.value) and "1.2.840.10008.1.2.4.80" in str(err.value)


def test_not_dicom_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.dcm").write_bytes(b"hello")
    with pytest.raises(dicom.DicomError, match="not a readable DICOM") as err:
        dicom.frame_image(dicom.read(tmp_path / "x.dcm"))
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- cine, region, spacing


def test_cine_gives_evenly_spaced_frames(tmp_path: Path) -> None:
    cine = np.stack([np.full((12, 16), 20 * i, np.uint8) for i in range(10)])
    frames = loaded(write(tmp_path / "cine.dcm", cine, frames=10))
    assert [f.suffix for f in frames] == ["#f00001", "#f00003", "#f00006", "#f00008"]
    assert [int(np.asarray(f.image)[0, 0]) for f in frames] == [20, 60, 120, 160]
    assert all(f.mask is None and f.meta["frame_size"] == [12, 16] for f in frames)


def test_region_crop_pixel_for_pixel_and_spacing(tmp_path: Path) -> None:
    grey = RNG.integers(0, 256, (60, 80), dtype=np.uint8)
    regions = [region(2, 2, 20, 10, fmt=0), region(10, 5, 69, 49, delta_cm=(0.02, 0.03))]  # text box, then image
    path = write(tmp_path / "us.dcm", grey, regions=regions, pixel_spacing=(0.9, 0.9))
    mask = np.zeros((60, 80), np.uint8)
    mask[20:30, 30:40] = 255
    Image.fromarray(mask).save(tmp_path / "us_mask.png")
    [f] = loaded(path, masks=(str(tmp_path / "us_mask.png"),))
    assert np.array_equal(np.asarray(f.image), grey[5:50, 10:70])
    assert np.array_equal(f.mask, mask[5:50, 10:70] > 0)
    assert f.meta == {"frame_size": [60, 80], "crop": [10, 5, 70, 50], "spacing_mm": [0.3, 0.2]}
    # off: the whole frame, spacing still the region's
    [full] = loaded(path, PrepareConfig(sources=("x",), region_crop=False))
    assert np.array_equal(np.asarray(full.image), grey) and "crop" not in full.meta
    assert full.meta["spacing_mm"] == [0.3, 0.2]


def test_pixel_spacing_without_region(tmp_path: Path) -> None:
    ds = dicom.read(write(tmp_path / "ps.dcm", np.zeros((8, 8), np.uint8), pixel_spacing=(0.25, 0.5)))
    assert dicom.imaging_region(ds) is None and dicom.spacing_mm(ds) == (0.25, 0.5)
    assert dicom.spacing_mm(dicom.read(write(tmp_path / "no.dcm", np.zeros((8, 8), np.uint8)))) is None


def test_leakage_group_falls_back_from_patient_to_study(tmp_path: Path) -> None:
    ds = dicom.read(write(tmp_path / "a.dcm", np.zeros((4, 4), np.uint8), patient="P7"))
    assert dicom.leakage_group(ds) == "patient:P7"
    anon = dicom.read(write(tmp_path / "b.dcm", np.zeros((4, 4), np.uint8), patient="ANONYMOUS"))
    assert dicom.leakage_group(anon) == f"study:{anon.StudyInstanceUID}"


# --------------------------------------------------------------------------- prepare


def _two_patients(root: Path) -> None:
    for p, patient in enumerate(("ALICE", "BOB")):
        for i in range(4):
            write(
                root / "images" / f"{patient}_{i}.dcm",
                RNG.integers(0, 256, (40, 40), dtype=np.uint8),
                patient=patient,
                body_part="BREAST",
            )
            m = np.zeros((40, 40), np.uint8)
            m[5 + i : 20, 8 : 25 + p] = 255
            Image.fromarray(m).save(
                (root / "masks").mkdir(exist_ok=True, parents=True) or root / "masks" / f"{patient}_{i}.png"
            )
        write(
            root / "images" / f"{patient}_cine.dcm",
            RNG.integers(0, 256, (6, 40, 40), dtype=np.uint8),
            frames=6,
            patient=patient,
        )


def test_two_patients_land_in_one_split_each(tmp_path: Path) -> None:
    root = tmp_path / "dicoms"
    _two_patients(root)
    (root / "images" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")  # an index file, not an image
    reader, _ = choose(str(root))
    assert reader.NAME == "dicom"
    for seed in range(4):
        summary = run_prepare(
            PrepareConfig(
                sources=(str(root),),
                out=str(tmp_path / f"out{seed}"),
                size=32,
                frames_per_video=3,
                workers=1,
                seed=seed,
            )
        )
        manifest = json.loads((summary.out / "manifest.json").read_text())
        by_patient: dict[str, set[str]] = {}
        for s in manifest["samples"]:
            by_patient.setdefault(s["id"].split("/")[1].split("_")[0], set()).add(s["split"])
        assert set(by_patient) == {"ALICE", "BOB"} and all(len(v) == 1 for v in by_patient.values()), by_patient
        assert len(manifest["samples"]) == 2 * (4 + 3)
    labelled = [s for s in manifest["samples"] if s["has_mask"]]
    assert len(labelled) == 8 and all(s["organ"] == "breast" for s in labelled)


def test_dcm_inside_the_folder_layout_and_suffixless_files(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    Image.fromarray(RNG.integers(0, 256, (20, 20), dtype=np.uint8)).save(
        (root / "a").mkdir(parents=True) or root / "a" / "x.png"
    )
    write(root / "a" / "y.dcm", RNG.integers(0, 256, (20, 20), dtype=np.uint8))
    write(root / "a" / "IM_0001", RNG.integers(0, 256, (20, 20), dtype=np.uint8))
    folder_items = choose(str(root), "folder")[0].items(root, CFG)
    assert sorted(it.key for it in folder_items) == ["a/x.png", "a/y.dcm"]  # folder: by suffix only
    dicom_items = choose(str(root))[0].items(root, CFG)  # auto → dicom: also by magic
    assert sorted(it.key for it in dicom_items) == ["a/IM_0001", "a/x.png", "a/y.dcm"]


def test_prepare_records_crop_and_spacing(tmp_path: Path) -> None:
    grey = RNG.integers(0, 256, (60, 80), dtype=np.uint8)
    write(tmp_path / "d" / "us.dcm", grey, regions=[region(10, 5, 41, 36, delta_cm=(0.01, 0.01))])
    summary = run_prepare(PrepareConfig(sources=(str(tmp_path / "d"),), out=str(tmp_path / "out"), size=32, workers=1))
    [rec] = json.loads((summary.out / "manifest.json").read_text())["samples"]
    assert rec["crop"] == [10, 5, 42, 37] and rec["frame_size"] == [60, 80] and rec["spacing_mm"] == [0.1, 0.1]
    assert (rec["height"], rec["width"]) == (32, 32)
    from mosl_cli.data.store import load_dataset

    stored = load_dataset(summary.out).images[0, 0].numpy()
    assert np.array_equal(stored, grey[5:37, 10:42])  # same size: the crop is stored unchanged


def test_missing_pydicom_is_one_line_naming_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from mosl_cli.errors import MoslError

    write(tmp_path / "d" / "a.dcm", np.zeros((8, 8), np.uint8))
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom now raises ImportError
    with pytest.raises(MoslError, match=r"pip install 'mosl-cli\[dicom\]'") as err:
        choose(str(tmp_path / "d"))[0].items(tmp_path / "d", CFG)
    assert "\n" not in str(err.value)
