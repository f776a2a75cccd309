"""Readers: detection, listing and decoding of every native layout (real data where present)."""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mosl_cli.config import PrepareConfig
from mosl_cli.data.readers import READERS, camus, choose, cifar10, folder, hc18, pocus, safe_pickle, udiat, volumes
from mosl_cli.data.readers import base as rbase
from mosl_cli.errors import MoslError

CFG = PrepareConfig(sources=("x",), size=32, frames_per_video=3)


def frames(item: rbase.Item) -> list[rbase.Frame]:
    return item.load(item)


def by_key(items: list[rbase.Item]) -> dict[str, rbase.Item]:
    return {it.key: it for it in items}


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("busi_root", "busi"),
        ("udiat_root", "udiat"),
        ("hc18_root", "hc18"),
        ("pocus_root", "pocus"),
        ("camus_root", "camus"),
        ("cifar_root", "cifar10"),
        ("folder_root", "folder"),
    ],
)
def test_auto_detects_each_layout(fixture: str, expected: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue(fixture)
    reader, _ = choose(str(root))
    assert reader.NAME == expected
    for other in READERS.values():  # only the right reader and the catch-all folder reader claim it
        if other.NAME not in (expected, "folder", "synthetic"):
            assert not other.detect(root), f"{other.NAME} claims a {expected} layout"


def test_registry_names() -> None:
    assert list(READERS) == [
        "busi",
        "udiat",
        "hc18",
        "pocus",
        "camus",
        "cifar10",
        "miniimagenet",
        "dicom",
        "folder",
        "synthetic",
    ]


def test_choose_errors(tmp_path: Path, busi_root: Path) -> None:
    with pytest.raises(MoslError, match="--format 'nifti' is unknown"):
        choose(str(busi_root), "nifti")
    with pytest.raises(MoslError, match="no such folder"):
        choose(str(tmp_path / "nope"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(MoslError, match="not a folder"):
        choose(str(tmp_path / "file.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MoslError, match="no images and no known dataset layout"):
        choose(str(tmp_path / "empty"))
    with pytest.raises(MoslError, match="does not look like the camus layout"):
        choose(str(busi_root), "camus")
    with pytest.raises(MoslError, match="synthetic"):
        choose(str(busi_root), "synthetic")
    with pytest.raises(MoslError, match="generated"):
        choose("synthetic", "busi")
    for msg in ("dicom", "nope"):  # messages are one line
        try:
            choose(str(tmp_path / msg), msg if msg == "dicom" else "auto")
        except MoslError as exc:
            assert "\n" not in str(exc)


def test_forced_format_overrides_detection(busi_root: Path) -> None:
    reader, root = choose(str(busi_root), "folder")
    assert reader is folder and root == busi_root.resolve()


# --------------------------------------------------------------------------- BUSI


def test_busi_fixture(busi_root: Path) -> None:
    for root in (busi_root, busi_root / "Dataset_BUSI_with_GT"):  # the parent or the folder itself
        items = READERS["busi"].items(root.resolve(), CFG)
        assert [it.key for it in items] == [
            "benign/benign (1)",
            "benign/benign (2)",
            "benign/benign (10)",
            "malignant/malignant (1)",
            "malignant/malignant (2)",
            "normal/normal (1)",
            "normal/normal (2)",
        ]
    it = by_key(items)
    assert len(it["benign/benign (1)"].paths) == 3  # image, _mask, _mask_1
    (f,) = frames(it["benign/benign (1)"])
    assert f.mask is not None and f.mask.dtype == bool and f.mask.shape == (30, 40)
    assert f.mask[2:10, 2:10].all() and f.mask[20:25, 30:38].all()  # both masks merged by OR
    assert f.mask.sum() == 8 * 8 + 5 * 8
    (f,) = frames(it["benign/benign (2)"])  # RGBA with alpha 255 everywhere: colour decides
    assert f.mask.sum() == 10 * 15
    (f,) = frames(it["malignant/malignant (1)"])
    assert f.mask.sum() == 9 * 9 and it["malignant/malignant (1)"].cls == "malignant"
    (f,) = frames(it["normal/normal (1)"])
    assert f.mask is not None and not f.mask.any()
    (f,) = frames(it["normal/normal (2)"])  # a normal image without a mask file is still "no lesion"
    assert f.mask is not None and not f.mask.any()


def test_busi_real(real) -> None:
    root = real("busi")
    reader, base = choose(str(root))
    assert reader.NAME == "busi" and base.name == "Dataset_BUSI_with_GT"
    items = reader.items(base, CFG)
    assert collections.Counter(it.cls for it in items) == {"benign": 437, "malignant": 210, "normal": 133}
    extra = [it for it in items if len(it.paths) > 2]
    assert len(extra) == 17 and sum(len(it.paths) - 2 for it in extra) == 18
    it = by_key(items)
    (f,) = frames(it["benign/benign (195)"])  # _mask, _mask_1 and _mask_2
    parts = [rbase.open_mask(p) for p in it["benign/benign (195)"].paths[1:]]
    assert np.array_equal(f.mask, parts[0] | parts[1] | parts[2]) and f.mask.sum() > max(p.sum() for p in parts)
    modes = {Image.open(p).mode for x in items for p in x.paths[1:]}
    assert modes == {"1", "RGB", "RGBA"}  # as published; each decodes to a lesion or an empty mask
    assert frames(it["benign/benign (1)"])[0].mask.any()
    assert not frames(it["normal/normal (1)"])[0].mask.any()


def test_rgba_mask_with_constant_alpha(real) -> None:
    base = real("busi") / "Dataset_BUSI_with_GT"
    rgba = [p for p in sorted(base.glob("*/*_mask*.png")) if Image.open(p).mode == "RGBA"]
    assert rgba, "BUSI ships two RGBA masks"
    for p in rgba:
        a = np.asarray(Image.open(p))
        assert a[..., 3].min() == 255  # alpha carries nothing...
        m = rbase.open_mask(p)
        assert 0 < m.sum() < m.size  # ...the colour channels do


# --------------------------------------------------------------------------- UDIAT


def test_udiat_classes_from_xlsx(udiat_root: Path) -> None:
    for root in (udiat_root, udiat_root.parent):
        assert udiat.detect(root)
    items = udiat.items(udiat_root.parent, CFG)
    assert [(it.key, it.cls) for it in items] == [("000001", "benign"), ("000002", "malignant"), ("000003", "benign")]
    (f,) = frames(items[1])
    assert f.mask.sum() == 10 * 10 and f.image.mode == "L"


def test_udiat_without_xlsx_and_bad_xlsx(udiat_root: Path) -> None:
    (udiat_root / "DatasetB.xlsx").unlink()
    assert {it.cls for it in udiat.items(udiat_root, CFG)} == {"none"}
    (udiat_root / "DatasetB.xlsx").write_bytes(b"not a zip")
    with pytest.raises(MoslError, match="DatasetB.xlsx: unreadable spreadsheet"):
        udiat.items(udiat_root, CFG)


# --------------------------------------------------------------------------- HC18


def test_fill_outline_matches_filled_ellipse() -> None:
    h, w, box = 80, 100, (10, 12, 90, 70)
    outline = Image.new("L", (w, h), 0)
    ImageDraw.Draw(outline).ellipse(box, outline=255, width=1)
    filled = Image.new("L", (w, h), 0)
    ImageDraw.Draw(filled).ellipse(box, fill=255)
    got = hc18.fill_outline(np.asarray(outline) > 0)
    want = np.asarray(filled) > 0
    iou = (got & want).sum() / (got | want).sum()
    assert iou > 0.97
    assert not got[0].any() and got[h // 2 - 5 : h // 2 + 5, w // 2 - 5 : w // 2 + 5].all()


def test_hc18_fixture(hc18_root: Path) -> None:
    for root in (hc18_root, hc18_root / "training_set"):
        assert hc18.detect(root)
    items = hc18.items(hc18_root, CFG)
    assert [it.key for it in items] == ["training_set/000_HC", "training_set/001_2HC", "training_set/001_HC"]
    assert items[1].group == items[2].group != items[0].group  # scans of one subject stay together
    (f,) = frames(items[0])
    assert f.mask is not None and f.mask[25, 30] and not f.mask[0, 0]
    assert frames(items[1])[0].mask is None and items[0].organ == "fetal-head"


def test_hc18_real(real) -> None:
    root = real("hc18")
    reader, base = choose(str(root))
    items = reader.items(base, CFG)
    on_disk = [p for p in (root / "training_set").glob("*HC.png")]
    assert reader.NAME == "hc18" and len(items) == len(on_disk) > 0
    assert all(len(it.paths) == 1 for it in items)  # no annotations shipped: unlabelled
    assert frames(items[0])[0].mask is None


# --------------------------------------------------------------------------- POCUS


def test_pocus_fixture(pocus_root: Path) -> None:
    for root in (pocus_root, pocus_root / "data", pocus_root.parent):
        assert pocus.detect(root)
    items = by_key(pocus.items(pocus_root, CFG))
    assert items["pocus_images/convex/Cov_fig1"].cls == "covid"
    assert items["pocus_images/linear/Pneu_img2"].cls == "pneumonia"
    video = items["pocus_videos/convex/Reg_clip"]
    assert video.cls == "regular" and video.frames_grouped
    got = frames(video)
    assert [f.suffix for f in got] == ["#f00002", "#f00006", "#f00010"]  # 3 evenly spaced of 12
    assert got[0].image.size == (64, 48)
    gif = frames(items["pocus_videos/linear/Vir_loop"])
    assert len(gif) == 3 and items["pocus_videos/linear/Vir_loop"].cls == "viral"
    with pytest.raises(rbase.DECODE_ERRORS):
        frames(items["pocus_videos/linear/Pne_broken"])


def test_pocus_labels() -> None:
    assert pocus.label(Path("a/Cov_x.mp4")) == "covid"
    assert pocus.label(Path("a/pneu-x.png")) == "pneumonia"
    assert pocus.label(Path("a/Pne_x.png")) == "pneumonia"
    assert pocus.label(Path("a/Reg_x.png")) == "regular"
    assert pocus.label(Path("a/Vir_x.png")) == "viral"
    assert pocus.label(Path("a/label_uncertain/Vir_or_Pneu_x.mp4")) == "uncertain"
    assert pocus.label(Path("a/Other.png")) == "unknown"


def test_pocus_real(real) -> None:
    root = real("pocus")
    reader, base = choose(str(root))
    items = reader.items(base, CFG)
    stills = [it for it in items if not it.frames_grouped]
    videos = [it for it in items if it.frames_grouped]
    on_disk = [p for p in (base / "pocus_videos").rglob("*") if p.suffix.lower() in rbase.VIDEO_EXTS]
    assert reader.NAME == "pocus" and len(stills) == 31 and len(videos) == len(on_disk) > 0
    assert {it.cls for it in items} <= {"covid", "pneumonia", "regular", "viral", "uncertain"}
    patients = {it.group for it in videos if it.group}
    assert patients == {"Reg_pat1", "Reg_pat2", "Reg_pat3", "Reg_pat4"}
    mpeg = next(it for it in videos if it.paths[0].endswith(".mpeg"))  # no frame count in the header
    got = frames(mpeg)
    assert len(got) == 3 and all(f.image.mode == "RGB" for f in got)


# --------------------------------------------------------------------------- CAMUS


def test_camus_fixture(camus_root: Path) -> None:
    items = camus.items(camus_root, CFG)
    assert len(items) == 9  # 2 patients x 4, 1 MetaImage patient x 1; half sequences ignored
    assert {it.group for it in items} == {"patient0001", "patient0002", "patient0003"}
    it = by_key(items)
    (f,) = frames(it["patient0001/patient0001_4CH_ES"])  # stored 3-D with one slice
    assert f.image.size == (16, 20) and f.image.mode == "L"  # [y, x] = 20 x 16
    assert f.mask.sum() == 6 * 5 and f.mask[4:10, 3:8].all()
    (f,) = frames(it["patient0003/patient0003_2CH_ED"])
    assert f.mask.sum() == 30
    two = camus.items(camus_root, PrepareConfig(sources=("x",), camus_label=2))
    assert frames(two[0])[0].mask.sum() == 4 * 5


def test_nifti_and_mhd_roundtrip(tmp_path: Path) -> None:
    from conftest import write_mhd, write_nifti

    a = np.arange(12 * 7, dtype=np.int16).reshape(12, 7) - 40
    assert np.array_equal(volumes.read_nifti(write_nifti(tmp_path / "a.nii", a)), a)
    assert np.array_equal(volumes.read_nifti(write_nifti(tmp_path / "a.nii.gz", a)), a)
    assert np.array_equal(volumes.read_mhd(write_mhd(tmp_path / "b.mhd", a)), a)
    (tmp_path / "bad.nii").write_bytes(b"\0" * 100)
    with pytest.raises(rbase.SkipSample, match="NIfTI"):
        volumes.read_nifti(tmp_path / "bad.nii")


# --------------------------------------------------------------------------- CIFAR-10 / mini-ImageNet


def test_cifar_python_batches(cifar_root: Path) -> None:
    reader, base = choose(str(cifar_root))
    assert reader is cifar10 and base.name == "cifar-10-batches-py"
    (item,) = reader.items(base, CFG)
    got = frames(item)
    assert len(got) == 12 and [f.cls for f in got[:4]] == ["airplane", "automobile", "bird", "airplane"]
    assert got[0].image.size == (32, 32) and got[0].image.mode == "RGB" and item.organ == "natural"


def test_restricted_unpickler_executes_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        safe_pickle.load(tmp_path / "evil.pkl")
    assert not marker.exists()
    for proto in (3, 4, 5):  # plain arrays still load, whatever the protocol
        (tmp_path / "ok.pkl").write_bytes(pickle.dumps({"a": np.arange(6).reshape(2, 3)}, protocol=proto))
        assert safe_pickle.load(tmp_path / "ok.pkl")["a"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_evil_cifar_batch_is_skipped(cifar_root: Path) -> None:
    batch = cifar_root / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps({"data": Image.new("L", (1, 1))}))  # needs PIL classes: refused
    items = by_key(cifar10.items(cifar_root, CFG))
    with pytest.raises(rbase.SkipSample, match="refusing to load"):
        frames(items["data_batch_2"])


def test_miniimagenet_cache_and_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cache = {
        "image_data": rng.integers(0, 256, (5, 84, 84, 3), dtype=np.uint8),
        "class_dict": {"n01532829": [0, 1, 2], "n01558993": [3, 4]},
    }
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "mini-imagenet-cache-train.pkl").write_bytes(pickle.dumps(cache, protocol=4))
    reader, base = choose(str(tmp_path / "cache"))
    (item,) = reader.items(base, CFG)
    got = frames(item)
    assert reader.NAME == "miniimagenet" and [f.cls for f in got] == ["n01532829"] * 3 + ["n01558993"] * 2
    csv_root = tmp_path / "csv"
    (csv_root / "images").mkdir(parents=True)
    Image.fromarray(cache["image_data"][0]).save(csv_root / "images" / "n0153282900000005.jpg")
    (csv_root / "train.csv").write_text("filename,label\nn0153282900000005.jpg,n01532829\n")
    reader, base = choose(str(csv_root))
    items = reader.items(base, CFG)
    assert reader.NAME == "miniimagenet" and [it.cls for it in items] == ["n01532829"]
    assert frames(items[0])[0].image.size == (84, 84)


def test_natural_jpeg_layouts_real(real) -> None:
    cifar = real("natural/cifar10")
    reader, base = choose(str(cifar))
    items = reader.items(base, CFG)
    assert reader.NAME == "cifar10" and len(items) == 5000
    assert collections.Counter(it.cls for it in items) == {c: 500 for c in cifar10.CLASSES}
    assert {it.organ for it in items} == {"natural"}
    forced = folder.items(cifar, CFG)  # the organ rule does not depend on --format
    assert {it.organ for it in forced} == {"natural"} and len(forced) == 5000
    mini = real("natural/mini-imagenet")
    reader, base = choose(str(mini))
    items = reader.items(base, CFG)
    assert reader.NAME == "miniimagenet" and len(items) == 2000 and len({it.cls for it in items}) == 100
    assert {it.organ for it in folder.items(mini, CFG)} == {"natural"}


# --------------------------------------------------------------------------- folder / synthetic


def test_folder_masks_by_stem(folder_root: Path) -> None:
    items = by_key(folder.items(folder_root, CFG))
    assert set(items) == {"healthy/s0.jpg", "healthy/s1.jpg", "lesion/s0.jpg", "lesion/s1.jpg"}
    assert items["lesion/s0.jpg"].cls == "lesion" and items["lesion/s0.jpg"].organ == "unknown"
    assert frames(items["lesion/s1.jpg"])[0].mask.sum() == 16
    assert not frames(items["healthy/s0.jpg"])[0].mask.any()  # s0_mask.png matched, empty
    assert frames(items["healthy/s1.jpg"])[0].mask is None  # no mask: unlabelled
    # the image folder itself, with masks in a sibling folder
    items = by_key(folder.items(folder_root / "images", CFG))
    assert frames(items["lesion/s0.jpg"])[0].mask.sum() == 36


def test_folder_classes_and_organ_rule(tmp_path: Path) -> None:
    assert folder.class_of(Path("train/cat/1.jpg")) == "cat"
    assert folder.class_of(Path("x.jpg")) == "none"
    assert folder.organ_of({"cat", "dog"}) == "natural"
    assert folder.organ_of({"n01532829"}) == "natural"
    assert folder.organ_of({"benign", "cat"}) == "unknown"
    assert folder.organ_of({"none"}) == "unknown"


def test_synthetic_reader() -> None:
    reader, _ = choose("synthetic")
    items = reader.items(Path("synthetic"), PrepareConfig(sources=("synthetic",), size=32, synthetic_count=5))
    assert len(items) == 5
    (f,) = frames(items[0])
    assert f.image.size == (32, 32) and f.cls in {"benign", "malignant", "normal", "unlabelled"}
    assert f.organ and (f.mask is None) == (f.cls == "unlabelled")


def test_mask_array_modes() -> None:
    grey = Image.fromarray(np.array([[0, 3], [0, 0]], dtype=np.uint8))
    assert rbase.mask_array(grey).tolist() == [[False, True], [False, False]]
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[1, 1, 2] = 9  # any colour channel counts
    assert rbase.mask_array(Image.fromarray(rgb)).sum() == 1
    la = np.zeros((2, 2, 4), dtype=np.uint8)
    la[0, 0, 3] = 255  # colour empty, alpha varies: alpha is the mask
    assert rbase.mask_array(Image.fromarray(la, "RGBA")).tolist() == [[True, False], [False, False]]
    assert rbase.evenly_spaced(12, 3) == [2, 6, 10] and rbase.evenly_spaced(2, 5) == [0, 1]
    assert rbase.evenly_spaced(0, 3) == []
