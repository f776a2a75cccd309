"""Bad inputs and unusable output paths: each ends in one stderr line without a traceback, exit code 1
(2 for an option value out of range), and leaves no output folder, no half-written file, no wrong data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from badinput import bad_weight_files, edit_manifest, fails, png_header_only, succeeds
from tiny import TINY

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SCAN = ASSETS / "example_scan.png"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad")


@pytest.fixture(scope="module")
def ds(work: Path) -> Path:
    succeeds(
        ["prepare", "synthetic", "--synthetic-count", "40", "--size", "32", "--workers", "1", "--out", work / "ds"]
    )
    return work / "ds"


@pytest.fixture(scope="module")
def model(work: Path, ds: Path) -> Path:
    succeeds(["finetune", "--data", ds, "--init", "none", *TINY, "--out", work / "ft"])
    return work / "ft" / "model.safetensors"


@pytest.fixture(scope="module")
def pretrained(work: Path, ds: Path) -> Path:
    succeeds(["pretrain", "--data", ds, "--method", "simsiam", *TINY, "--out", work / "pt"])
    return work / "pt" / "model.safetensors"


@pytest.fixture(scope="module")
def bad_weights(work: Path, model: Path) -> dict[str, Path]:
    return bad_weight_files(model, work / "weights")


def _step(step: str, ds: Path, model: Path, out: Path) -> list[object]:
    """A tiny invocation of ``step`` writing to ``out``."""
    return {
        "prepare": ["prepare", "synthetic", "--synthetic-count", "40", "--size", "32", "--workers", "1", "--out", out],
        "pretrain": ["pretrain", "--data", ds, "--method", "simsiam", *TINY, "--out", out],
        "finetune": ["finetune", "--data", ds, "--init", "none", *TINY, "--out", out],
        "evaluate": ["evaluate", "--model", model, "--data", ds, "--device", "cpu", "--out", out],
        "predict": ["predict", SCAN, "--model", model, "--device", "cpu", "--out", out],
        "report": ["report", model.parent, "--cases", "0", "--out", out],
    }[step]


STEPS = ["prepare", "pretrain", "finetune", "evaluate", "predict", "report"]
WEIGHT_CASES = [
    "truncated",
    "empty",
    "garbage-header",
    "header-longer-than-file",
    "pickle",
    "meta-list",
    "meta-no-arch",
    "meta-no-encoder",
]


# --------------------------------------------------------------------------- weight files


@pytest.mark.parametrize("case", WEIGHT_CASES)
@pytest.mark.parametrize("step", ["finetune", "predict", "evaluate"])
def test_damaged_weight_file_is_one_line(
    step: str, case: str, ds: Path, bad_weights: dict[str, Path], tmp_path: Path
) -> None:
    weights, out = bad_weights[case], tmp_path / "out"
    args = {
        "finetune": ["finetune", "--data", ds, "--init", weights, *TINY, "--out", out],
        "predict": ["predict", SCAN, "--model", weights, "--device", "cpu", "--out", out],
        "evaluate": ["evaluate", "--model", weights, "--data", ds, "--device", "cpu", "--out", out],
    }[step]
    line = fails(args)
    assert str(weights) in line
    if case.startswith("meta-no-"):
        assert case.removeprefix("meta-no-") in line
    assert not out.exists()


def test_init_file_for_another_encoder_prints_a_notice(ds: Path, pretrained: Path, tmp_path: Path) -> None:
    args = ["finetune", "--data", ds, "--init", pretrained, *TINY, "--encoder", "resnet34", "--out", tmp_path / "ft"]
    result = succeeds(args)
    assert "note:" in result.stderr and "resnet18" in result.stderr and "--encoder resnet34" in result.stderr
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["resolved"]["encoder"] == "resnet18"


# --------------------------------------------------------------------------- dataset manifests


MANIFEST_CASES = {
    "samples": lambda m: {k: v for k, v in m.items() if k != "samples"},
    "size": lambda m: {k: v for k, v in m.items() if k != "size"},
    "channels": lambda m: {k: v for k, v in m.items() if k != "channels"},
    "split": lambda m: {**m, "samples": [{k: v for k, v in s.items() if k != "split"} for s in m["samples"]]},
    "has_mask": lambda m: {**m, "samples": [{k: v for k, v in s.items() if k != "has_mask"} for s in m["samples"]]},
    "list": lambda m: [m],
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
@pytest.mark.parametrize("step", ["info", "evaluate", "finetune", "pretrain"])
def test_broken_manifest_is_one_line_naming_the_key(
    step: str, case: str, ds: Path, model: Path, tmp_path: Path
) -> None:
    broken = edit_manifest(ds, tmp_path / "broken", MANIFEST_CASES[case])
    out = tmp_path / "out"
    args = {
        "info": ["info", broken],
        "evaluate": ["evaluate", "--model", model, "--data", broken, "--device", "cpu", "--out", out],
        "finetune": ["finetune", "--data", broken, "--init", "none", *TINY, "--out", out],
        "pretrain": ["pretrain", "--data", broken, "--method", "simsiam", *TINY, "--out", out],
    }[step]
    line = fails(args)
    assert "manifest.json" in line and (case in line if case != "list" else "list" in line)
    assert not out.exists()


@pytest.mark.parametrize("step", ["info", "evaluate", "finetune", "pretrain"])
def test_mixed_dataset_pair_is_refused_by_every_reader(
    step: str, ds: Path, model: Path, work: Path, tmp_path: Path
) -> None:
    other = work / "ds-other"
    if not other.exists():
        succeeds(
            [
                "prepare",
                "synthetic",
                "--synthetic-count",
                "40",
                "--size",
                "32",
                "--seed",
                "1",
                "--workers",
                "1",
                "--out",
                other,
            ]
        )
    mixed = tmp_path / "mixed"
    shutil.copytree(ds, mixed)
    shutil.copy(other / "data.safetensors", mixed / "data.safetensors")  # new tensors beside the old manifest
    out = tmp_path / "out"
    args = {
        "info": ["info", mixed],
        "evaluate": ["evaluate", "--model", model, "--data", mixed, "--device", "cpu", "--out", out],
        "finetune": ["finetune", "--data", mixed, "--init", "none", *TINY, "--out", out],
        "pretrain": ["pretrain", "--data", mixed, "--method", "simsiam", *TINY, "--out", out],
    }[step]
    assert "different runs of prepare" in fails(args)
    assert not out.exists()


def test_prepare_refuses_an_existing_dataset_without_overwrite(ds: Path, tmp_path: Path) -> None:
    target = tmp_path / "ds"
    shutil.copytree(ds, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    args = ["prepare", "synthetic", "--synthetic-count", "30", "--size", "32", "--workers", "1", "--out", target]
    assert "--overwrite" in fails(args)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    succeeds([*args, "--overwrite"])
    assert len(json.loads((target / "manifest.json").read_text())["samples"]) == 30
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert "not a mosl dataset" in fails([*args[:-1], tmp_path / "other", "--overwrite"])
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------- output paths


@pytest.mark.parametrize("step", STEPS)
def test_out_that_is_a_file_or_under_a_file_or_under_proc(step: str, ds: Path, model: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for out, words in ((afile, "is a file"), (afile / "sub", "is a file"), (Path("/proc/mosl-out"), "/proc/mosl-out")):
        if step == "predict" and out == afile:
            continue  # predict's --out without an image suffix is a folder: tested below
        line = fails(_step(step, ds, model, out))
        assert str(out) in line and words in line, line
    assert afile.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_predict_out_file_under_a_file(model: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("keep")
    line = fails(["predict", SCAN, "--model", model, "--device", "cpu", "--out", tmp_path / "afile" / "mask.png"])
    assert "afile" in line and "not a folder" in line


def _mount_tmpfs(path: Path, size: str, read_only: bool = False) -> None:
    path.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    if read_only:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


@pytest.fixture
def small_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``small_fs(read_only)``: a 64 KiB tmpfs (read-only when asked), unmounted afterwards."""
    mounts: list[Path] = []

    def make(read_only: bool = False) -> Path:
        path = tmp_path / f"fs{len(mounts)}"
        _mount_tmpfs(path, "64k", read_only)
        mounts.append(path)
        return path

    yield make
    for path in mounts:
        subprocess.run(["umount", str(path)], capture_output=True)


@pytest.mark.parametrize("step", STEPS)
def test_out_on_a_read_only_file_system(step: str, ds: Path, model: Path, small_fs) -> None:  # type: ignore[no-untyped-def]
    fs = small_fs(read_only=True)
    line = fails(_step(step, ds, model, fs / "out"))
    assert str(fs / "out") in line and "read-only file system" in line.lower()


@pytest.mark.parametrize("step", ["prepare", "finetune", "evaluate", "predict"])
def test_out_on_a_full_file_system(step: str, ds: Path, model: Path, small_fs) -> None:  # type: ignore[no-untyped-def]
    fs = small_fs()  # 64 KiB: a weight file or a dataset does not fit
    if step in ("evaluate", "predict"):  # their outputs are small: fill the file system first
        with open(fs / "filler", "wb", buffering=0) as fh, pytest.raises(OSError):
            while True:
                fh.write(b"\0" * 512)
    line = fails(_step(step, ds, model, fs / "out"), started=step == "finetune")
    assert str(fs / "out") in line and "no space left" in line
    leftovers = [p.name for p in (fs / "out").rglob("*")] if (fs / "out").exists() else []
    assert not any(name.endswith(".tmp") for name in leftovers), leftovers
    assert "model.safetensors" not in leftovers and "data.safetensors" not in leftovers


# --------------------------------------------------------------------------- option values


@pytest.mark.parametrize("step", ["finetune", "pretrain"])
@pytest.mark.parametrize("size", ["0", "-5", "100000"])
def test_size_out_of_range_is_a_usage_error(step: str, size: str, ds: Path, tmp_path: Path) -> None:
    line = fails([step, "--data", ds, "--size", size, "--out", tmp_path / "out"], code=2)
    assert "--size" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["prepare", "synthetic", "--size", "0"],
        ["prepare", "synthetic", "--splits", "0.5,0.5"],
        ["prepare", "synthetic", "--channels", "2"],
        ["prepare", "synthetic", "--workers", "-1"],
        ["evaluate", "--threshold", "0"],
        ["predict", "x.png", "--batch-size", "0"],
        ["pretrain", "--jitter", "2"],
        ["finetune", "--checkpoint-every", "-1"],
        ["pretrain", "--method", "byol"],
        ["pretrain", "--scope", "all"],
        ["pretrain", "--epochs", "0"],
        ["finetune", "--batch-size", "0"],
        ["finetune", "--label-fraction", "2"],
        ["evaluate", "--split", "holdout"],
    ],
)
def test_usage_errors_exit_2_everywhere(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    fails(args, code=2)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- images


def test_decompression_bomb_is_one_line(model: Path, tmp_path: Path) -> None:
    (tmp_path / "scans").mkdir()
    bomb = png_header_only(tmp_path / "scans" / "bomb.png", 100_000, 100_000)
    out = tmp_path / "out"
    for target in (bomb, bomb.parent):  # the file itself, and inside a folder
        line = fails(["predict", target, "--model", model, "--device", "cpu", "--out", out])
        assert str(bomb) in line and "too many pixels" in line
        assert not out.exists()
    line = fails(["prepare", bomb.parent, "--format", "folder", "--size", "32", "--out", out])
    assert "bomb.png" in line and "decompression bomb" in line


def test_large_scan_is_read_without_a_warning(model: Path, tmp_path: Path) -> None:
    """Above Pillow's warning limit (lowered here to 1000 px) a scan is read and nothing leaks to stderr."""
    scan = tmp_path / "big.png"
    Image.fromarray(np.full((40, 40), 120, np.uint8)).save(scan)  # 1600 px: above 1000, below the 2000 error
    code = (
        "import sys, PIL.Image; PIL.Image.MAX_IMAGE_PIXELS = 1000\n"
        "from mosl_cli.cli import main; sys.argv = ['mosl', *sys.argv[1:]]; main()"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "predict",
            str(scan),
            "--model",
            str(model),
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "m.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and (tmp_path / "m.png").is_file()


def _animated_gif(path: Path) -> Path:
    frames = [Image.fromarray(np.full((24, 24), v, np.uint8)) for v in (50, 200, 120)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    return path


def test_animated_gif_first_frame_in_predict_and_prepare(model: Path, tmp_path: Path) -> None:
    from mosl_cli.imageio import read_image

    folder = tmp_path / "scans"
    folder.mkdir()
    gif = _animated_gif(folder / "loop.gif")
    assert int(read_image(gif, 1)[0].mean()) == 50  # predict's reader: the first frame
    succeeds(["predict", gif, "--model", model, "--device", "cpu", "--out", tmp_path / "one.png"])
    succeeds(["predict", folder, "--model", model, "--device", "cpu", "--out", tmp_path / "masks"])
    assert (tmp_path / "masks" / "loop_mask.png").is_file()
    succeeds(["prepare", folder, "--format", "folder", "--size", "16", "--splits", "1,0,0", "--out", tmp_path / "ds"])
    from mosl_cli.data.store import load_dataset

    assert int(load_dataset(tmp_path / "ds").images.float().mean()) == 50  # prepare's reader: the same frame


# --------------------------------------------------------------------------- outputs that would replace inputs


def test_predict_measurements_never_replace_an_input_or_a_mask(model: Path, tmp_path: Path) -> None:
    scan = shutil.copy(SCAN, tmp_path / "scan.png")
    before = Path(scan).read_bytes()
    base = ["predict", scan, "--model", model, "--device", "cpu", "--out", tmp_path / "mask.png", "--measurements"]
    for target, words in (
        (scan, "an input or a mask"),
        (tmp_path / "mask.png", "an input or a mask"),
        (tmp_path, "folder"),
    ):
        line = fails([*base, target])
        assert f"--measurements {target}" in line and words in line, line
        assert not (tmp_path / "mask.png").exists()  # refused before any mask is written
    assert Path(scan).read_bytes() == before


def test_predict_out_png_that_is_a_folder(model: Path, tmp_path: Path) -> None:
    (tmp_path / "masks.png").mkdir()
    line = fails(["predict", SCAN, "--model", model, "--device", "cpu", "--out", tmp_path / "masks.png"])
    assert "masks.png" in line and "is a folder" in line
    assert list((tmp_path / "masks.png").iterdir()) == []


def test_predict_on_a_prepared_dataset_points_to_evaluate(model: Path, ds: Path, tmp_path: Path) -> None:
    line = fails(["predict", ds, "--model", model, "--device", "cpu", "--out", tmp_path / "masks"])
    assert str(ds) in line and "mosl prepare" in line and f"mosl evaluate --data {ds}" in line
    assert not (tmp_path / "masks").exists()


def test_evaluate_out_of_a_run_folder_keeps_its_metrics(model: Path, ds: Path, tmp_path: Path) -> None:
    run = shutil.copytree(model.parent, tmp_path / "run")
    before = (run / "metrics.json").read_bytes()
    line = fails(["evaluate", "--model", run / "model.safetensors", "--data", ds, "--device", "cpu", "--out", run])
    assert str(run) in line and "metrics.json" in line and "another --out" in line
    assert (run / "metrics.json").read_bytes() == before and not (run / "per_case.csv").exists()


@pytest.mark.parametrize("fmt", ["torchscript", "smp"])
def test_export_never_replaces_a_weight_file(fmt: str, model: Path, tmp_path: Path) -> None:
    run = shutil.copytree(model.parent, tmp_path / "run")
    weights = run / "model.safetensors"
    before = weights.read_bytes()
    line = fails(["export", weights, "--format", fmt, "--out", weights if fmt == "torchscript" else run])
    assert "would replace the mosl weight file" in line and str(weights) in line
    assert weights.read_bytes() == before


def test_finetune_without_labelled_val_reports_no_val_dice(ds: Path, tmp_path: Path) -> None:
    def unlabel_val(m: dict[str, Any]) -> dict[str, Any]:
        return {**m, "samples": [{**s, "has_mask": s["has_mask"] and s["split"] != "val"} for s in m["samples"]]}

    no_val = edit_manifest(ds, tmp_path / "no_val", unlabel_val)
    result = succeeds(["finetune", "--data", no_val, "--init", "none", *TINY, "--out", tmp_path / "ft"])
    assert "no labelled val image" in result.stdout and "-1.0" not in result.stdout
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["best_val_dice"] is None and metrics["best_epoch"] is None  # not a -1 that reads as a Dice


@pytest.mark.parametrize("step", ["info", "evaluate"])
def test_data_that_is_a_file(step: str, model: Path, tmp_path: Path) -> None:
    args = {
        "info": ["info", SCAN],
        "evaluate": ["evaluate", "--model", model, "--data", SCAN, "--device", "cpu", "--out", tmp_path / "out"],
    }[step]
    line = fails(args)
    assert str(SCAN) in line and "a file, not a dataset directory" in line
