"""Minimal readers for the medical formats CAMUS ships: NIfTI-1 (``.nii``, ``.nii.gz``) and MetaImage
(``.mhd`` + ``.raw``). Standard library and numpy only; no orientation handling beyond the array order.

Arrays come back in C order with the axes reversed from the file's (x fastest) order, i.e. ``[..., y, x]``
— the convention of SimpleITK, in which CAMUS images show the apex at the top.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from mosl_cli.data.readers.base import SkipSample

# NIfTI-1 datatype codes (nifti1.h) -> numpy dtypes
_NIFTI_DTYPES = {
    2: np.uint8,
    4: np.int16,
    8: np.int32,
    16: np.float32,
    64: np.float64,
    256: np.int8,
    512: np.uint16,
    768: np.uint32,
    1024: np.int64,
    1280: np.uint64,
}
_MET_DTYPES = {
    "MET_UCHAR": np.uint8,
    "MET_CHAR": np.int8,
    "MET_USHORT": np.uint16,
    "MET_SHORT": np.int16,
    "MET_UINT": np.uint32,
    "MET_INT": np.int32,
    "MET_ULONG": np.uint64,
    "MET_LONG": np.int64,
    "MET_FLOAT": np.float32,
    "MET_DOUBLE": np.float64,
}
NIFTI_HEADER = 348


def read_nifti(path: str | Path) -> np.ndarray:
    """A single-file NIfTI-1 image (``n+1``), optionally gzipped, as an array ``[..., y, x]``.

    ``scl_slope`` / ``scl_inter`` are applied when the slope is set (the result is then float64).
    """
    path = Path(path)
    with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as fh:
        blob = fh.read()
    if len(blob) < NIFTI_HEADER:
        raise SkipSample(f"not a NIfTI-1 file ({len(blob)} bytes, shorter than its header)")
    endian = "<" if struct.unpack("<i", blob[:4])[0] == NIFTI_HEADER else ">"
    if struct.unpack(f"{endian}i", blob[:4])[0] != NIFTI_HEADER:
        raise SkipSample("not a NIfTI-1 file (bad header size)")
    if blob[344:347] != b"n+1":
        raise SkipSample(f"unsupported NIfTI magic {blob[344:348]!r} (only single-file n+1)")
    dim = struct.unpack(f"{endian}8h", blob[40:56])
    datatype = struct.unpack(f"{endian}h", blob[70:72])[0]
    offset = int(struct.unpack(f"{endian}f", blob[108:112])[0])
    slope, inter = struct.unpack(f"{endian}2f", blob[112:120])
    if datatype not in _NIFTI_DTYPES:
        raise SkipSample(f"unsupported NIfTI datatype {datatype}")
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise SkipSample(f"bad NIfTI dimension count {ndim}")
    shape = tuple(int(d) for d in dim[1 : ndim + 1])
    dtype = np.dtype(_NIFTI_DTYPES[datatype]).newbyteorder(endian)
    count = int(np.prod(shape))
    if offset + count * dtype.itemsize > len(blob):
        raise SkipSample("truncated NIfTI file")
    arr = np.frombuffer(blob, dtype=dtype, count=count, offset=offset).reshape(shape[::-1])
    if slope not in (0.0, 1.0) or inter != 0.0:
        arr = arr * (slope or 1.0) + inter
    return arr.astype(arr.dtype.newbyteorder("="))


def read_mhd(path: str | Path) -> np.ndarray:
    """A MetaImage header (``.mhd``) and its data file (``.raw``, or zlib-compressed) as ``[..., y, x]``."""
    path = Path(path)
    header: dict[str, str] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            header[key.strip()] = value.strip()
    try:
        shape = tuple(int(v) for v in header["DimSize"].split())
        dtype = np.dtype(_MET_DTYPES[header["ElementType"]])
        data_file = header["ElementDataFile"]
    except KeyError as exc:
        raise SkipSample(f"MetaImage header lacks or has an unknown {exc}") from exc
    if data_file == "LOCAL":
        raise SkipSample("MetaImage with LOCAL data is not supported")
    msb = header.get("BinaryDataByteOrderMSB", header.get("ElementByteOrderMSB", "False")).lower() == "true"
    dtype = dtype.newbyteorder(">" if msb else "<")
    raw = (path.parent / data_file).read_bytes()
    if header.get("CompressedData", "False").lower() == "true":
        raw = zlib.decompress(raw)
    skip = int(header.get("HeaderSize", "0"))
    count = int(np.prod(shape))
    if skip < 0:  # -1: the data are the last bytes of the file
        skip = len(raw) - count * dtype.itemsize
    if skip + count * dtype.itemsize > len(raw):
        raise SkipSample("truncated MetaImage data")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=skip).reshape(shape[::-1])
    return arr.astype(arr.dtype.newbyteorder("="))


def read_volume(path: str | Path) -> np.ndarray:
    """Dispatch on the extension: ``.nii``/``.nii.gz`` or ``.mhd``."""
    name = str(path).lower()
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(path)
    if name.endswith(".mhd"):
        return read_mhd(path)
    raise SkipSample(f"unsupported volume format: {Path(path).name}")


def as_2d(arr: np.ndarray) -> np.ndarray:
    """Drop singleton axes; a volume that is not a 2-D image is skipped."""
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise SkipSample(f"expected a 2-D image, found shape {arr.shape}")
    return arr
