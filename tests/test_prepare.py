"""``run_prepare`` end to end: real datasets (when present), multi-source fixtures and bad input."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mosl_cli.config import PrepareConfig
from mosl_cli.data.store import load_dataset, read_manifest
from mosl_cli.errors import MoslError
from mosl_cli.prepare import READERS, decode_item, run_prepare, summarize


def prepare(tmp_path: Path, *sources: str | Path, **kw) -> tuple:
    cfg = PrepareConfig(
        sources=tuple(str(s) for s in sources), out=str(tmp_path / "ds"), **{"size": 32, "workers": 1, **kw}
    )
    calls: list[tuple[str, int, int]] = []
    summary = run_prepare(cfg, lambda stage, done, total: calls.append((stage, done, total)))
    return summary, load_dataset(summary.out), calls


def groups_respect_splits(records: list[dict]) -> bool:
    splits = collections.defaultdict(set)
    for r in records:
        splits[r["group"]].add(r["split"])
    return all(len(s) == 1 for s in splits.values())


# --------------------------------------------------------------------------- real data


def test_busi_real(real, tmp_path: Path) -> None:
    summary, ds, calls = prepare(tmp_path, real("busi"), size=64, workers=2)
    assert summary.total == 780 and ds.images.shape == (780, 1, 64, 64) and ds.masks.shape == (780, 1, 64, 64)
    (row,) = summary.rows
    assert row["classes"] == {"benign": 437, "malignant": 210, "normal": 133}
    assert row["masks"] == 647 and row["organ"] == "breast" and row["skipped"] == 0
    assert summary.dedup["identical_hash_pairs"] >= 16 and summary.groups_merged > 16
    assert summary.dedup["largest_group"] <= 8  # no transitive chaining into a giant group
    assert groups_respect_splits(ds.records)
    assert sum(row["splits"].values()) == 780 and row["splits"]["train"] > row["splits"]["test"] > row["splits"]["val"]
    normal = [i for i, r in enumerate(ds.records) if r["class"] == "normal"]
    assert all(ds.records[i]["has_mask"] for i in normal) and int(ds.masks[normal].sum()) == 0
    assert set(np.unique(ds.masks.numpy()).tolist()) == {0, 1}
    assert ("decode", 780, 780) in calls and calls[-1] == ("write", 1, 1)
    assert summarize(ds.manifest) == summary.rows
    r = ds.records[0]
    assert Path(r["paths"][0]).is_file() and r["height"] > 0 and r["width"] == 320


def test_hc18_real_unlabelled(real, tmp_path: Path) -> None:
    root = real("hc18")
    summary, ds, _ = prepare(tmp_path, root, size=32, workers=2)
    on_disk = len(list((root / "training_set").glob("*HC.png")))  # 999 published; this copy may hold fewer
    assert summary.total == on_disk and ds.masks is None
    assert summary.rows[0]["organ"] == "fetal-head" and summary.rows[0]["masks"] == 0
    assert not any(r["has_mask"] for r in ds.records)


def test_pocus_real_frames_stay_together(real, tmp_path: Path) -> None:
    root = real("pocus")
    videos = [p for p in root.rglob("*") if p.suffix.lower() in {".mp4", ".avi", ".mov", ".mpeg", ".gif"}]
    summary, ds, _ = prepare(tmp_path, root, size=32, frames_per_video=1, workers=2)
    stills = [r for r in ds.records if "#f" not in r["id"]]
    frames = [r for r in ds.records if "#f" in r["id"]]
    assert len(stills) == 31 and len(frames) == len(videos) and not summary.skipped
    assert groups_respect_splits(ds.records) and summary.rows[0]["organ"] == "lung"
    by_video = collections.defaultdict(set)
    for r in frames:
        by_video[r["paths"][0]].add(r["group"])
    assert all(len(g) == 1 for g in by_video.values())


# --------------------------------------------------------------------------- fixtures


def test_several_sources_make_one_dataset(tmp_path: Path, busi_root: Path, hc18_root: Path, camus_root: Path) -> None:
    summary, ds, _ = prepare(tmp_path, busi_root, hc18_root, camus_root, "synthetic", synthetic_count=12, channels=3)
    assert [r["name"] for r in ds.manifest["sources"]][:3] == ["busi", "hc18", "camus"]
    assert ds.images.shape == (7 + 3 + 9 + 12, 3, 32, 32) and ds.masks.shape[0] == ds.images.shape[0]
    recs = ds.records
    assert len({r["id"] for r in recs}) == len(recs)
    for i, r in enumerate(recs):
        if not r["has_mask"]:
            assert int(ds.masks[i].sum()) == 0  # unlabelled samples get an all-zero mask
    grey = [i for i, r in enumerate(recs) if r["source"] == "hc18"]
    assert all(bool((ds.images[i, 0] == ds.images[i, 1]).all()) for i in grey)  # grey replicated to RGB
    # the cross-class copy in the BUSI fixture is grouped; CAMUS patients are groups
    busi = {r["id"]: r for r in recs if r["source"] == "busi"}
    assert busi["busi/benign/benign (1)"]["group"] == busi["busi/malignant/malignant (2)"]["group"]
    assert summary.groups_merged >= 1 and groups_respect_splits(recs)
    camus = [r for r in recs if r["source"] == "camus"]
    assert {r["group"] for r in camus} == {
        "camus/patient0001/patient0001_2CH_ED",
        "camus/patient0002/patient0002_2CH_ED",
        "camus/patient0003/patient0003_2CH_ED",
    }
    rows = {(r["source"], r["organ"]): r for r in summary.rows}
    assert rows[("hc18", "fetal-head")]["masks"] == 1 and rows[("camus", "heart")]["images"] == 9
    assert rows[("busi", "breast")]["masks"] == 5  # 7 images, 2 normal (empty masks)
    assert sum(r["images"] for r in summary.rows) == summary.total == len(recs)
    m = read_manifest(summary.out)
    assert m["size"] == 32 and m["channels"] == 3 and m["seed"] == 0 and m["splits"] == [0.7, 0.1, 0.2]
    assert {"name", "reader", "root", "organ", "count"} <= set(m["sources"][0])
    for key in ("id", "source", "organ", "class", "paths", "height", "width", "has_mask", "group", "split"):
        assert key in recs[0]


def test_luminance_and_square_resize(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    arr = np.zeros((10, 40, 3), dtype=np.uint8)
    arr[..., 0] = 255  # pure red: luminance 76 (ITU-R 601-2)
    Image.fromarray(arr).save(folder / "red.png")
    _, ds, _ = prepare(tmp_path, folder, size=16)
    assert ds.images.shape == (1, 1, 16, 16) and int(ds.images[0, 0, 8, 8]) == 76
    r = ds.records[0]
    assert (r["height"], r["width"]) == (10, 40) and ds.masks is None and r["class"] == "none"


def test_splits_are_deterministic(tmp_path: Path, folder_root: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(
            folder_root / "images" / "lesion" / f"x{i}.png"
        )
    a = prepare(tmp_path / "a", folder_root, seed=5)[1].records
    b = prepare(tmp_path / "b", folder_root, seed=5)[1].records
    c = prepare(tmp_path / "c", folder_root, seed=6)[1].records
    assert [r["split"] for r in a] == [r["split"] for r in b] != [r["split"] for r in c]


def test_pool_and_serial_decoding_agree(tmp_path: Path, busi_root: Path) -> None:
    src = busi_root / "Dataset_BUSI_with_GT" / "benign"
    for i in range(30):  # enough files for the pool
        (src / f"benign (2) copy {i}.png").write_bytes((src / "benign (2).png").read_bytes())
    _, one, _ = prepare(tmp_path / "one", busi_root, workers=1)
    _, two, _ = prepare(tmp_path / "two", busi_root, workers=2)
    assert bool((one.images == two.images).all()) and one.records == two.records
    assert len({r["group"] for r in one.records if r["id"].startswith("busi/benign/benign (2)")}) == 1
    assert one.manifest["dedup"]["identical_pixel_pairs"] == 31 * 30 // 2 + 1  # the copies, and benign (1) twice


# --------------------------------------------------------------------------- bad input


def test_bad_files_are_skipped_and_listed(tmp_path: Path, folder_root: Path) -> None:
    lesion = folder_root / "images" / "lesion"
    good = (lesion / "s0.jpg").read_bytes()
    Image.fromarray(np.zeros((30, 30), dtype=np.uint8)).save(lesion / "truncated.png")
    data = (lesion / "truncated.png").read_bytes()
    (lesion / "truncated.png").write_bytes(data[: len(data) // 2])
    (lesion / "notes.png").write_text("this is not an image")
    (lesion / "empty.jpg").write_bytes(b"")
    (lesion / "halfjpeg.jpg").write_bytes(good[: len(good) // 3])
    (lesion / "big.jpg").write_bytes(good)
    Image.fromarray(np.zeros((7, 7), dtype=np.uint8)).save(folder_root / "masks" / "lesion" / "big.png")  # wrong size
    summary, ds, _ = prepare(tmp_path, folder_root)
    reasons = {Path(k["path"]).name: k["reason"] for k in summary.skipped}
    assert set(reasons) == {"truncated.png", "notes.png", "empty.jpg", "halfjpeg.jpg", "big.jpg"}
    assert "7x7" in reasons["big.jpg"] and "24x20" in reasons["big.jpg"]
    assert reasons["notes.png"].startswith("unreadable")
    assert summary.total == 4 and ds.images.shape[0] == 4
    assert sum(r["skipped"] for r in summary.rows) == 5
    assert len(ds.manifest["skipped"]) == 5 and summarize(ds.manifest) == summary.rows


def test_no_usable_image_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.png").write_text("nope")
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(MoslError, match="no usable image.*all 2 files were skipped") as exc:
        prepare(tmp_path, folder)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"format": "nifti"}, "--format 'nifti' is unknown"),
        ({"splits": (0.5, 0.2, 0.2)}, "sum to 0.9"),
        ({"splits": (0.0, 0.5, 0.5)}, "train fraction"),
        ({"channels": 2}, "--channels 2"),
        ({"size": 8}, "--size 8"),
        ({"frames_per_video": 0}, "--frames-per-video"),
        ({"dedup_distance": 65}, "--dedup-distance"),
    ],
)
def test_bad_options(tmp_path: Path, folder_root: Path, kw: dict, msg: str) -> None:
    with pytest.raises(MoslError, match=msg):
        prepare(tmp_path, folder_root, **kw)


def test_bad_sources(tmp_path: Path, folder_root: Path) -> None:
    with pytest.raises(MoslError, match="nope: no such folder"):
        prepare(tmp_path, tmp_path / "nope")
    with pytest.raises(MoslError, match="given twice"):
        prepare(tmp_path, folder_root, folder_root)
    with pytest.raises(MoslError, match="no source"):
        run_prepare(PrepareConfig(sources=(), out=str(tmp_path / "x")))
    empty_busi = tmp_path / "b" / "Dataset_BUSI_with_GT" / "benign"
    empty_busi.mkdir(parents=True)
    (empty_busi / "x_mask.png").write_bytes(b"")
    with pytest.raises(MoslError, match="no images found in the busi layout"):
        prepare(tmp_path, tmp_path / "b")


def test_decode_item_reports_reasons(tmp_path: Path, busi_root: Path) -> None:
    items = READERS["busi"].items(busi_root, PrepareConfig(sources=("x",)))
    mask = Path(items[0].paths[1])
    Image.new("1", (5, 5)).save(mask)
    out, reason = decode_item(items[0], 32, 1)
    assert out == [] and reason is not None and "mask benign (1)_mask.png is 5x5" in reason
    out, reason = decode_item(items[1], 32, 1)
    assert reason is None and out[0].image.shape == (1, 32, 32) and out[0].mask.shape == (32, 32)
    assert json.dumps(out[0].phash)  # a plain int
