"""Shared fixtures: the real data folder (or a skip) and small datasets written in each native layout."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real datasets in their native layouts); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real(shared_data: Path):
    """``real("busi")``: a sub-folder of the real data, skipping the test when it is absent."""

    def get(name: str) -> Path:
        p = shared_data / name
        if not p.exists():
            pytest.skip(f"real data {p} not found")
        return p

    return get


# --------------------------------------------------------------------------- small file writers


@pytest.fixture(scope="session")
def grey_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained grey (1-channel) resnet18 U-Net at 32 px, as a mosl weight file: for predict's plumbing."""
    import torch

    from mosl_cli.models import build_model, save_weights, weights_metadata

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    meta = weights_metadata(
        kind="segmentation", arch="unet", encoder="resnet18", in_channels=1, size=32, scope="encoder-decoder"
    )
    save_weights(path, build_model("unet", "resnet18", 1).state_dict(), meta)
    return path


def noise(rng: np.random.Generator, h: int, w: int, rgb: bool = False) -> np.ndarray:
    """A random uint8 image ``[h, w]`` or ``[h, w, 3]`` (two of them never share a pHash in practice)."""
    return rng.integers(0, 256, size=(h, w, 3) if rgb else (h, w), dtype=np.uint8)


def save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    img = img.convert(mode) if mode else img
    img.save(path)
    return path


def box_mask(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


def write_xlsx(path: Path, rows: list[list[str | int]]) -> None:
    """A minimal .xlsx: strings as shared strings, ints as numeric cells."""
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    shared: list[str] = []
    xml_rows = []
    for r, row in enumerate(rows, 1):
        cells = []
        for c, v in enumerate(row):
            ref = f"{chr(65 + c)}{r}"
            if isinstance(v, int):
                cells.append(f'<c r="{ref}"><v>{v}</v></c>')
            else:
                shared.append(v)
                cells.append(f'<c r="{ref}" t="s"><v>{len(shared) - 1}</v></c>')
        xml_rows.append(f'<row r="{r}">{"".join(cells)}</row>')
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>',
        )
        z.writestr(
            "xl/workbook.xml",
            f'<workbook xmlns="{main}" xmlns:r="{rel}">'
            '<sheets><sheet name="S" sheetId="1" r:id="rId7"/></sheets></workbook>',
        )
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId7" Type="worksheet" Target="worksheets/data.xml"/></Relationships>',
        )
        z.writestr(
            "xl/worksheets/data.xml",
            f'<worksheet xmlns="{main}"><sheetData>{"".join(xml_rows)}</sheetData></worksheet>',
        )
        z.writestr(
            "xl/sharedStrings.xml", f'<sst xmlns="{main}">{"".join(f"<si><t>{s}</t></si>" for s in shared)}</sst>'
        )


_NIFTI_CODES = {np.dtype(np.uint8): (2, 8), np.dtype(np.int16): (4, 16), np.dtype(np.float32): (16, 32)}


def write_nifti(path: Path, arr: np.ndarray, extra_dim: bool = False) -> Path:
    """A single-file NIfTI-1 image from an array ``[y, x]`` (x varies fastest on disk)."""
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    ny, nx = arr.shape
    dims = [3, nx, ny, 1, 1, 1, 1, 1] if extra_dim else [2, nx, ny, 1, 1, 1, 1, 1]
    struct.pack_into("<8h", hdr, 40, *dims)
    code, bits = _NIFTI_CODES[arr.dtype]
    struct.pack_into("<hh", hdr, 70, code, bits)
    struct.pack_into("<8f", hdr, 76, *([1.0] * 8))
    struct.pack_into("<f", hdr, 108, 352.0)
    hdr[344:348] = b"n+1\0"
    blob = bytes(hdr) + b"\0" * 4 + np.ascontiguousarray(arr).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(blob) if path.name.endswith(".gz") else blob)
    return path


def write_mhd(path: Path, arr: np.ndarray) -> Path:
    """A MetaImage header + raw data file from an array ``[y, x]``."""
    met = {np.dtype(np.uint8): "MET_UCHAR", np.dtype(np.int16): "MET_SHORT"}[arr.dtype]
    raw = path.with_suffix(".raw")
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.write_bytes(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
    path.write_text(
        f"ObjectType = Image\nNDims = 2\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        f"DimSize = {arr.shape[1]} {arr.shape[0]}\nElementType = {met}\nElementDataFile = {raw.name}\n"
    )
    return path


class Py2Pickler(pickle._Pickler):  # type: ignore[misc]
    """Writes bytes as Python 2 ``str`` opcodes, like the CIFAR-10 batches pickled by Python 2."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 1.x wrote this module path, as in the published batches
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def write_video(path: Path, frames: int, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    """A small MPEG-4 video (PyAV) whose frames differ."""
    import av

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as box:
        stream = box.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
    return path


# --------------------------------------------------------------------------- native layouts


@pytest.fixture
def busi_root(tmp_path: Path) -> Path:
    """A BUSI layout: 1-bit, RGB and RGBA (alpha 255 everywhere) masks, a ``_mask_1``, a cross-class duplicate."""
    rng = np.random.default_rng(1)
    base = tmp_path / "busi" / "Dataset_BUSI_with_GT"
    h, w = 30, 40
    b1 = noise(rng, h, w, rgb=True)
    save(base / "benign" / "benign (1).png", b1)
    save(base / "benign" / "benign (1)_mask.png", box_mask(h, w, 2, 2, 10, 10), "1")
    save(base / "benign" / "benign (1)_mask_1.png", np.stack([box_mask(h, w, 20, 30, 25, 38)] * 3, -1))
    save(base / "benign" / "benign (2).png", noise(rng, h, w, rgb=True))
    rgba = np.zeros((h, w, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[5:15, 5:20, :3] = 255
    save(base / "benign" / "benign (2)_mask.png", rgba)
    save(base / "benign" / "benign (10).png", noise(rng, h, w, rgb=True))
    save(base / "benign" / "benign (10)_mask.png", box_mask(h, w, 0, 0, 5, 5), "1")
    save(base / "malignant" / "malignant (1).png", noise(rng, h, w, rgb=True))
    save(base / "malignant" / "malignant (1)_mask.png", np.stack([box_mask(h, w, 3, 3, 12, 12)] * 3, -1))
    save(base / "malignant" / "malignant (2).png", b1)  # the same picture as benign (1)
    save(base / "malignant" / "malignant (2)_mask.png", box_mask(h, w, 2, 2, 10, 10), "1")
    save(base / "normal" / "normal (1).png", noise(rng, h, w, rgb=True))
    save(base / "normal" / "normal (1)_mask.png", np.zeros((h, w, 3), dtype=np.uint8))
    save(base / "normal" / "normal (2).png", noise(rng, h, w, rgb=True))  # no mask file
    return tmp_path / "busi"


@pytest.fixture
def udiat_root(tmp_path: Path) -> Path:
    """UDIAT Dataset B: original/ + GT/ + DatasetB.xlsx (numeric and text image names)."""
    rng = np.random.default_rng(2)
    base = tmp_path / "DatasetB"
    for i in (1, 2, 3):
        save(base / "original" / f"{i:06d}.png", noise(rng, 24, 32))
        save(base / "GT" / f"{i:06d}.png", box_mask(24, 32, 4, 4, 12 + i, 12 + i))
    write_xlsx(
        base / "DatasetB.xlsx",
        [["Image", "Type", "Histology"], [1, "Benign", "FA"], ["000002", "Malignant", "IDC"], [3, "benign", "x"]],
    )
    return base


def ellipse_outline(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).ellipse(box, outline=255, width=1)
    return np.asarray(img)


@pytest.fixture
def hc18_root(tmp_path: Path) -> Path:
    """HC18: two subjects (one with a second scan ``_2HC``), one annotated with an ellipse outline."""
    rng = np.random.default_rng(3)
    base = tmp_path / "hc18" / "training_set"
    save(base / "000_HC.png", noise(rng, 50, 60))
    save(base / "000_HC_Annotation.png", ellipse_outline(50, 60, (10, 8, 50, 40)))
    save(base / "001_HC.png", noise(rng, 50, 60))
    save(base / "001_2HC.png", noise(rng, 50, 60))
    return tmp_path / "hc18"


@pytest.fixture
def pocus_root(tmp_path: Path) -> Path:
    """POCUS: still images, an MPEG-4 video, an animated GIF and an unreadable "video"."""
    rng = np.random.default_rng(4)
    data = tmp_path / "pocus" / "data"
    save(data / "pocus_images" / "convex" / "Cov_fig1.png", noise(rng, 40, 40, rgb=True))
    save(data / "pocus_images" / "linear" / "Pneu_img2.jpg", noise(rng, 40, 40, rgb=True))
    write_video(data / "pocus_videos" / "convex" / "Reg_clip.mp4", frames=12)
    gif = [Image.fromarray(noise(rng, 32, 32)) for _ in range(6)]
    (data / "pocus_videos" / "linear").mkdir(parents=True)
    gif[0].save(data / "pocus_videos" / "linear" / "Vir_loop.gif", save_all=True, append_images=gif[1:], duration=100)
    (data / "pocus_videos" / "linear" / "Pne_broken.mp4").write_bytes(b"not a video at all" * 10)
    return tmp_path / "pocus"


@pytest.fixture
def camus_root(tmp_path: Path) -> Path:
    """CAMUS: two NIfTI patients (one view stored 3-D with one slice) and one MetaImage patient."""
    rng = np.random.default_rng(5)
    base = tmp_path / "camus" / "database_nifti"
    labels = np.zeros((20, 16), dtype=np.uint8)
    labels[4:10, 3:8] = 1
    labels[10:14, 3:8] = 2
    for p in ("patient0001", "patient0002"):
        for view in ("2CH", "4CH"):
            for phase in ("ED", "ES"):
                img = rng.integers(0, 1000, (20, 16)).astype(np.int16)
                write_nifti(base / p / f"{p}_{view}_{phase}.nii.gz", img, extra_dim=(view == "4CH"))
                write_nifti(base / p / f"{p}_{view}_{phase}_gt.nii.gz", labels)
        write_nifti(base / p / f"{p}_4CH_half_sequence.nii.gz", rng.integers(0, 255, (20, 16)).astype(np.uint8))
    p = "patient0003"
    write_mhd(base / p / f"{p}_2CH_ED.mhd", rng.integers(0, 255, (20, 16)).astype(np.uint8))
    write_mhd(base / p / f"{p}_2CH_ED_gt.mhd", labels)
    return tmp_path / "camus"


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """CIFAR-10 python batches pickled the Python 2 way: 12 images, 3 classes."""
    rng = np.random.default_rng(6)
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (base / "batches.meta").write_bytes(py2_pickle({b"label_names": [n.encode() for n in names], b"num_vis": 3072}))
    data = rng.integers(0, 256, (12, 3072), dtype=np.uint8)
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [i % 3 for i in range(12)],
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(12)],
    }
    (base / "data_batch_1").write_bytes(py2_pickle(batch))
    return tmp_path


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """A plain folder: images/<class>/x.jpg with masks/<class>/x.png (other extension), one unmasked."""
    rng = np.random.default_rng(7)
    base = tmp_path / "plain"
    for cls in ("lesion", "healthy"):
        for i in range(2):
            save(base / "images" / cls / f"s{i}.jpg", noise(rng, 20, 24, rgb=True))
    save(base / "masks" / "lesion" / "s0.png", box_mask(20, 24, 2, 2, 8, 8))
    save(base / "masks" / "lesion" / "s1.png", box_mask(20, 24, 5, 5, 9, 9))
    save(base / "masks" / "healthy" / "s0_mask.png", np.zeros((20, 24), dtype=np.uint8))
    return base
