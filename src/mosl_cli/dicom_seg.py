"""``mosl predict --dicom-seg``: the lesion mask of a single-frame DICOM scan as a DICOM Segmentation.

The SEG object (binary, one segment "lesion": SNOMED CT *Lesion* in *Morphologically abnormal
structure*, algorithm type AUTOMATIC, named ``mosl`` with its version) references its source scan
and copies its patient and study, so PACS viewers (OHIF, 3D Slicer, Weasis) show it over the
scan. It is written by highdicom (the ``dicom-seg`` extra), the reference implementation of the
DICOM SEG rules, in a new series (:data:`SERIES_NUMBER`).

Ultrasound scans rarely carry a frame of reference; without one, DICOM SEG can describe a single
frame only, so cine loops get PNG masks and no SEG (:func:`check_sources`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mosl_cli import __version__, dicom
from mosl_cli.errors import MoslError
from mosl_cli.fsutil import atomic_path

if TYPE_CHECKING:
    from mosl_cli.cine import Clip

INSTALL = "pip install 'mosl-cli[dicom-seg]'"
SERIES_NUMBER = 900  # the SEG series' number, after the scanner's own series
# Type 2 attributes of the patient and study modules that highdicom copies from the source: exports
# that leave them out get them empty (as DICOM allows), not an error.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def highdicom_module() -> Any:
    """``highdicom``, or :class:`MoslError` saying how to install the extra."""
    try:
        import highdicom
    except ImportError:
        raise MoslError(f"--dicom-seg needs highdicom, which is not installed; run: {INSTALL}") from None
    return highdicom


def check_sources(stills: Sequence[Path], clips: Sequence[Clip]) -> None:
    """:class:`MoslError` naming the first input that is not a single-frame DICOM scan: a still
    image (``stills``), a video, or a cine (``clips``); checked before anything is written."""
    others = [*stills, *(c.path for c in clips if c.kind != "dicom")]
    if others:
        raise MoslError(
            f"--dicom-seg: {others[0]} is not a DICOM scan (a SEG references its DICOM source); "
            "predict the DICOM scans with --dicom-seg and the others without it"
        )
    for clip in clips:
        if clip.sequence:
            raise MoslError(
                f"--dicom-seg: {clip.path} is a cine of {clip.frames} frames, and DICOM SEG without a frame of "
                "reference holds one frame; predict the cine without --dicom-seg (PNG masks per frame)"
            )


def write_seg(source: Path, mask: np.ndarray, dest: Path) -> None:
    """Write ``mask`` (bool or 0/non-zero ``[H, W]``, the scan's full frame) as a binary DICOM SEG
    of the DICOM scan ``source`` to ``dest``, atomically."""
    hd = highdicom_module()
    from pydicom.sr.codedict import codes

    try:
        src = dicom.read(source, header_only=True)
    except dicom.DicomError as exc:
        raise MoslError(f"{source}: {exc}") from None
    for name in _TYPE2:
        if name not in src:
            setattr(src, name, "")
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="mosl", version=__version__, family=codes.DCM.ArtificialIntelligence
        ),
    )
    try:
        seg = hd.seg.Segmentation(
            source_images=[src],
            pixel_array=(np.asarray(mask) > 0)[None],
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="mosl",
            manufacturer_model_name="mosl-cli",
            software_versions=__version__,
            device_serial_number="none",
            series_description="mosl lesion segmentation",
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise MoslError(
            f"{source}: cannot reference it from a DICOM SEG ({type(exc).__name__}: {' '.join(str(exc).split())}); "
            "predict it without --dicom-seg"
        ) from None
    with atomic_path(dest) as tmp:
        seg.save_as(tmp)


__all__ = ["INSTALL", "SERIES_NUMBER", "check_sources", "highdicom_module", "write_seg"]
