"""Ultrasound DICOM: frames as 8-bit ``L`` / ``RGB`` images, the imaging region, pixel spacing, leakage ids.

pydicom is an optional extra (``pip install 'mosl-cli[dicom]'``) imported only here, lazily.

- Frames: single- and multi-frame files; MONOCHROME1 (inverted), MONOCHROME2, RGB, YBR_FULL and
  YBR_FULL_422 (converted to RGB by pydicom's pixel handling) and PALETTE COLOR (``apply_color_lut``).
  Compressed transfer syntaxes decode when an installed pydicom plugin can (JPEG baseline and
  RLE need nothing more than Pillow and numpy); others raise :class:`DicomError` naming the syntax.
- Imaging region: the largest 2-D region (``RegionSpatialFormat`` 1) of
  ``SequenceOfUltrasoundRegions``; cropping to it drops burned-in text, calipers and rulers.
- Spacing, mm per pixel ``(row, column)``: the region's ``PhysicalDeltaY/X`` when its units are cm
  (code 3; ×10), else ``PixelSpacing``, else ``None``.
- Leakage group: ``PatientID`` (placeholders such as ``ANONYMOUS`` ignored), else
  ``StudyInstanceUID``, else ``SeriesInstanceUID``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mosl_cli.errors import MoslError

DICOM_EXTS = frozenset({".dcm", ".dicom", ".dic"})
INSTALL = "pip install 'mosl-cli[dicom]'"
_PLACEHOLDER_IDS = frozenset({"", "anonymous", "anon", "unknown", "none", "0", "patient", "anonymized", "anonymised"})
_CM = 3  # PhysicalUnitsX/YDirection code for centimetres
SEGMENTATION_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"})  # SEG, label map
_REGION_2D = 1  # RegionSpatialFormat code of a 2-D (B-mode) image region


class DicomError(ValueError):
    """A DICOM file mosl cannot use; the message is one line (without the file name)."""


def pydicom_module() -> Any:
    """``pydicom``, or :class:`MoslError` saying how to install the extra."""
    try:
        import pydicom
    except ImportError:
        raise MoslError(f"reading DICOM needs pydicom, which is not installed; run: {INSTALL}") from None
    return pydicom


def looks_like_dicom(path: str | Path) -> bool:
    """A DICOM suffix, or the ``DICM`` magic at byte 128 (files exported without a suffix)."""
    p = Path(path)
    if p.suffix.lower() in DICOM_EXTS:
        return True
    if p.name.upper() == "DICOMDIR":
        return False
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def read(path: str | Path, header_only: bool = False, lazy: bool = False) -> Any:
    """The pydicom ``Dataset`` of ``path`` (``header_only``: stop before the pixel data; ``lazy``: keep
    large values such as the pixel data on disk until used)."""
    pydicom = pydicom_module()
    try:
        ds = pydicom.dcmread(  # force: also files without the 128-byte preamble
            str(path),
            stop_before_pixels=header_only,
            force=True,
            defer_size="64 KB" if lazy else None,
        )
    except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DicomError(f"not a readable DICOM file ({type(exc).__name__}: {' '.join(str(exc).split())})") from exc
    if len(ds) == 0:
        raise DicomError("not a readable DICOM file (no data elements)")
    return ds


def frame_count(ds: Any) -> int:
    """Frames in the file (``NumberOfFrames``, 1 when absent)."""
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _syntax(ds: Any) -> Any:
    meta = getattr(ds, "file_meta", None)
    uid = None if meta is None else meta.get("TransferSyntaxUID")
    if uid is None:
        from pydicom.uid import ImplicitVRLittleEndian

        return ImplicitVRLittleEndian
    return uid


def _syntax_text(uid: Any) -> str:
    name = getattr(uid, "name", "") or "unknown"
    return f"{name} ({uid})" if name != str(uid) else str(uid)


def check_pixels(ds: Any) -> None:
    """:class:`DicomError` when the file is a segmentation (a mask, not a scan), has no pixel data, or
    no installed plugin decodes its syntax."""
    if str(ds.get("SOPClassUID", "")) in SEGMENTATION_CLASSES:
        raise DicomError("a DICOM Segmentation (a mask), not a scan; pass the scan it segments")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        kind = ds.get("SOPClassUID")
        what = f" ({getattr(kind, 'name', kind)})" if kind else ""
        raise DicomError(f"no pixel data{what}; pass image DICOM files, not reports, DICOMDIRs or structured documents")
    uid = _syntax(ds)
    try:
        from pydicom.pixels.decoders.base import get_decoder
    except ImportError:  # pydicom 2: decoding errors are reported when decoding
        return
    try:
        available = get_decoder(uid).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise DicomError(
            f"cannot decode transfer syntax {_syntax_text(uid)} with the installed plugins; install one "
            f"(e.g. pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg) or decompress the file (gdcmconv --raw)"
        )


def _processing() -> Any:
    """pydicom's LUT and colour-space helpers (``pydicom.pixels`` in 3.x, ``pixel_data_handlers.util`` in 2.x)."""
    try:
        from pydicom.pixels import processing
    except ImportError:
        from pydicom.pixel_data_handlers import util as processing
    return processing


def _raw_frame(ds: Any, index: int) -> np.ndarray:
    """Frame ``index`` as pydicom decodes it, YBR already converted to RGB: ``[H, W]`` or ``[H, W, 3]``."""
    try:
        from pydicom.pixels import pixel_array
    except ImportError:  # pydicom 2
        arr = ds.pixel_array
        arr = arr[index] if frame_count(ds) > 1 else arr
        pi = str(ds.get("PhotometricInterpretation", ""))
        if pi.startswith("YBR_FULL") and not _syntax(ds).is_compressed:
            arr = _processing().convert_color_space(arr, pi, "RGB")
        return arr
    return pixel_array(ds, index=index if frame_count(ds) > 1 else None)


def _scale(arr: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned integers of ``bits`` significant bits → uint8 (a fixed scale, the same for every frame)."""
    if arr.dtype == np.uint8 and bits <= 8:
        return arr
    top = float((1 << max(1, bits)) - 1)
    return np.clip(np.round(arr.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)


def _grey(ds: Any, arr: np.ndarray) -> np.ndarray:
    """A MONOCHROME1/2 frame as uint8: 8-bit kept, unsigned without a VOI window fixed-scaled by
    ``BitsStored``, else modality and VOI LUT then min–max scaled."""
    bits = int(ds.get("BitsStored", 8) or 8)
    windowed = "WindowCenter" in ds or "VOILUTSequence" in ds
    if np.issubdtype(arr.dtype, np.unsignedinteger) and (bits <= 8 or not windowed):
        out = _scale(arr, bits)
    else:
        from mosl_cli.data.readers.base import to_uint8

        lut = _processing()
        out = to_uint8(np.asarray(lut.apply_voi_lut(lut.apply_modality_lut(arr, ds), ds), dtype=np.float64))
    return 255 - out if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1" else out


def frame_image(ds: Any, index: int = 0) -> Image.Image:
    """Frame ``index`` of a decoded-ready dataset as a PIL image, mode ``L`` or ``RGB`` (uint8).

    Raises :class:`DicomError` (one line) when the pixel data cannot be decoded.
    """
    check_pixels(ds)
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    try:
        arr = _raw_frame(ds, index)
        if pi == "PALETTE COLOR":
            rgb = _processing().apply_color_lut(arr, ds)
            entry_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
            return Image.fromarray(_scale(rgb, entry_bits), "RGB")
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        raise DicomError(
            f"cannot decode the pixel data ({_syntax_text(_syntax(ds))}, {pi}): {' '.join(str(exc).split())[:200]}"
        ) from exc
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return Image.fromarray(_scale(arr, int(ds.get("BitsStored", 8) or 8)), "RGB")
    if arr.ndim != 2:
        raise DicomError(f"unsupported pixel layout {arr.shape} ({pi}); pass 2-D grey or colour images")
    return Image.fromarray(_grey(ds, arr), "L")


@dataclass(frozen=True)
class Region:
    """The imaging region in full-frame pixels, ``[y0, y1) × [x0, x1)``, and its spacing in mm (row, col)."""

    x0: int
    y0: int
    x1: int
    y1: int
    spacing_mm: tuple[float, float] | None

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``, what PIL's ``crop`` takes."""
        return self.x0, self.y0, self.x1, self.y1


def _region_spacing(item: Any) -> tuple[float, float] | None:
    try:
        if int(item.PhysicalUnitsXDirection) != _CM or int(item.PhysicalUnitsYDirection) != _CM:
            return None
        dx, dy = abs(float(item.PhysicalDeltaX)) * 10.0, abs(float(item.PhysicalDeltaY)) * 10.0
    except (AttributeError, TypeError, ValueError):
        return None
    return (dy, dx) if dx > 0 and dy > 0 else None


def imaging_region(ds: Any) -> Region | None:
    """The largest 2-D ultrasound region clipped to the frame, or ``None`` when the file has none."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    best: Region | None = None
    for item in ds.get("SequenceOfUltrasoundRegions", []) or []:
        if int(item.get("RegionSpatialFormat", _REGION_2D) or 0) != _REGION_2D:
            continue
        try:
            x0, y0 = max(0, int(item.RegionLocationMinX0)), max(0, int(item.RegionLocationMinY0))
            x1, y1 = int(item.RegionLocationMaxX1) + 1, int(item.RegionLocationMaxY1) + 1  # inclusive in DICOM
        except (AttributeError, TypeError, ValueError):
            continue
        x1, y1 = (min(x1, cols) if cols else x1), (min(y1, rows) if rows else y1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        region = Region(x0, y0, x1, y1, _region_spacing(item))
        if best is None or (x1 - x0) * (y1 - y0) > (best.x1 - best.x0) * (best.y1 - best.y0):
            best = region
    return best


def spacing_mm(ds: Any, region: Region | None = None) -> tuple[float, float] | None:
    """mm per pixel ``(row, column)``: the region's (cm → mm), else ``PixelSpacing``, else ``None``."""
    region = region if region is not None else imaging_region(ds)
    if region is not None and region.spacing_mm is not None:
        return region.spacing_mm
    try:
        dy, dx = (float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        return None
    return (dy, dx) if dy > 0 and dx > 0 else None


def leakage_group(ds: Any) -> str | None:
    """``patient:<id>``, else ``study:<uid>``, else ``series:<uid>``; ``None`` when the file names none."""
    patient = str(ds.get("PatientID", "") or "").strip()
    if patient.lower() not in _PLACEHOLDER_IDS:
        return f"patient:{patient}"
    for tag, name in (("StudyInstanceUID", "study"), ("SeriesInstanceUID", "series")):
        value = str(ds.get(tag, "") or "").strip()
        if value:
            return f"{name}:{value}"
    return None


def frame_rate(ds: Any, default: float = 10.0) -> float:
    """Frames per second of a cine: ``CineRate``, else 1000 / ``FrameTime`` (ms), else ``default``."""
    for value in (ds.get("CineRate"), ds.get("RecommendedDisplayFrameRate")):
        try:
            if value is not None and float(value) > 0:
                return float(value)
        except (TypeError, ValueError):
            pass
    try:
        ms = float(ds.get("FrameTime", 0) or 0)
    except (TypeError, ValueError):
        ms = 0.0
    return 1000.0 / ms if ms > 0 else default


__all__ = [
    "DICOM_EXTS",
    "INSTALL",
    "DicomError",
    "Region",
    "pydicom_module",
    "looks_like_dicom",
    "read",
    "frame_count",
    "check_pixels",
    "frame_image",
    "imaging_region",
    "spacing_mm",
    "leakage_group",
    "frame_rate",
]
