"""Small DICOM files built with pydicom for the tests (no download): any photometric, frames, regions."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid  # noqa: E402

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"  # Ultrasound Image Storage
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage


def region(x0: int, y0: int, x1: int, y1: int, delta_cm: tuple[float, float] | None = None, fmt: int = 1) -> Dataset:
    """One SequenceOfUltrasoundRegions item; bounds inclusive, as DICOM writes them; ``delta_cm`` = (x, y)."""
    r = Dataset()
    r.RegionSpatialFormat, r.RegionDataType, r.RegionFlags = fmt, 1, 0
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x0, y0, x1, y1
    if delta_cm is not None:
        r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3
        r.PhysicalDeltaX, r.PhysicalDeltaY = delta_cm
    return r


def dataset(
    pixels: np.ndarray | None,
    photometric: str = "MONOCHROME2",
    *,
    frames: int = 1,
    patient: str = "P1",
    regions: list[Dataset] | None = None,
    pixel_spacing: tuple[float, float] | None = None,
    bits_stored: int | None = None,
    body_part: str | None = None,
    **extra: Any,
) -> Dataset:
    """A Dataset of ``pixels`` stored as given: ``[(frames,) H, W(, samples)]`` uint8/uint16 (``None``: no pixels)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = US_MULTIFRAME if frames > 1 else US_IMAGE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = patient, generate_uid(), generate_uid()
    ds.Modality = "US"
    if body_part:
        ds.BodyPartExamined = body_part
    if regions:
        ds.SequenceOfUltrasoundRegions = Sequence(regions)
    if pixel_spacing:
        ds.PixelSpacing = list(pixel_spacing)
    for k, v in extra.items():
        setattr(ds, k, v)
    if pixels is None:
        return ds
    samples = 3 if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422") else 1
    shape = pixels.shape[1:] if frames > 1 else pixels.shape
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    if samples == 3:
        ds.PlanarConfiguration = 0
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits_stored or bits, (bits_stored or bits) - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write(path: Path, pixels: np.ndarray | None, photometric: str = "MONOCHROME2", **kw: Any) -> Path:
    return save(dataset(pixels, photometric, **kw), path)


def ybr_full(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 → YBR_FULL uint8 (the DICOM PS3.3 C.7.6.3.1.2 equations)."""
    from pydicom.pixels import convert_color_space

    return convert_color_space(rgb, "RGB", "YBR_FULL")


def ybr_full_422_bytes(rgb: np.ndarray) -> bytes:
    """Native YBR_FULL_422 bytes (Y0 Y1 Cb Cr per horizontal pixel pair; chroma of the pair averaged)."""
    ybr = ybr_full(rgb).astype(np.int32)
    h, w, _ = ybr.shape
    out = np.empty((h, w // 2, 4), dtype=np.uint8)
    out[..., 0] = ybr[:, 0::2, 0]
    out[..., 1] = ybr[:, 1::2, 0]
    out[..., 2] = (ybr[:, 0::2, 1] + ybr[:, 1::2, 1]) // 2
    out[..., 3] = (ybr[:, 0::2, 2] + ybr[:, 1::2, 2]) // 2
    return out.tobytes()


def jpeg_ybr_422(path: Path, rgb: np.ndarray, **kw: Any) -> Path:
    """A JPEG-baseline DICOM of ``rgb`` (Pillow's 4:2:2 encoder), photometric YBR_FULL_422, as scanners write."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95, subsampling=1)  # 1 = 4:2:2
    ds = dataset(rgb, "YBR_FULL_422", **kw)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.LossyImageCompression = "01"
    return save(ds, path)


def smooth_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour picture (JPEG keeps it within a few levels)."""
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(0.5, 2.0, 3)
    r = 127 + 100 * np.sin(xx / (7 * a))
    g = 127 + 100 * np.cos(yy / (9 * b))
    bl = 127 + 80 * np.sin((xx + yy) / (11 * c))
    return np.stack([r, g, bl], -1).clip(0, 255).astype(np.uint8)
