"""``run_predict``: masks at each scan's own size, naming rules, overlays, and refusals before writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mosl_cli.config import PredictConfig
from mosl_cli.errors import MoslError
from mosl_cli.evaluate import model_probabilities
from mosl_cli.imageio import read_image
from mosl_cli.models import build_model, model_from_file, save_weights, weights_metadata
from mosl_cli.predict import OVERLAY_COLOUR, expand_inputs, outline, run_predict


def save_model(path: Path, *, kind: str = "segmentation", in_channels: int = 1) -> Path:
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", in_channels)
    scope = "encoder-decoder" if kind == "segmentation" else "encoder"
    meta = weights_metadata(kind=kind, arch="unet", encoder="resnet18", in_channels=in_channels, size=32, scope=scope)
    save_weights(path, model.state_dict(), meta)
    return path


def scan(path: Path, width: int, height: int, mode: str = "L", seed: int = 0) -> Path:
    """A smooth random scan (a blob on noise) so that the untrained model's output varies in space."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    blob = 200 * np.exp(-(((yy - height / 2) / (height / 4)) ** 2 + ((xx - width / 3) / (width / 5)) ** 2))
    grey = np.clip(blob + rng.normal(30, 10, (height, width)), 0, 255).astype(np.uint8)
    img = Image.fromarray(grey)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.convert(mode).save(path)
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(tmp_path_factory.mktemp("model") / "model.safetensors")


def median_probability(model_file: Path, path: Path) -> float:
    """A threshold that splits the scan's probabilities in half, so the mask is neither empty nor full."""
    model, meta = model_from_file(model_file)
    arr, _ = read_image(path, 1)
    prob = model_probabilities(model, torch.from_numpy(arr).permute(2, 0, 1)[None], meta)
    return float(prob.median())


def test_mask_has_the_scan_size_and_0_255_values(model_file: Path, tmp_path: Path) -> None:
    src = scan(tmp_path / "in" / "case.png", width=123, height=77)
    threshold = median_probability(model_file, src)
    out = tmp_path / "result.png"
    [done] = run_predict(
        PredictConfig(
            inputs=(str(src),), model=str(model_file), out=str(out), threshold=threshold, tta=False, device="cpu"
        )
    )
    assert done.mask == out and done.overlay is None and (done.height, done.width) == (77, 123)
    mask = np.asarray(Image.open(out))
    assert mask.shape == (77, 123) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 255}
    assert done.lesion_pixels == int((mask == 255).sum())
    # The same as thresholding the model's probabilities at the scan's own size.
    model, meta = model_from_file(model_file)
    arr, _ = read_image(src, 1)
    expected = model_probabilities(model, torch.from_numpy(arr).permute(2, 0, 1)[None], meta)[0, 0] > threshold
    assert np.mean(expected.numpy() != (mask == 255)) < 0.005


def test_one_input_without_out_goes_to_mosl_predict(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = scan(tmp_path / "scan one.jpg", width=50, height=64, mode="RGB")
    monkeypatch.chdir(tmp_path)
    [done] = run_predict(PredictConfig(inputs=(str(src),), model=str(model_file), device="cpu"))
    assert done.mask == Path("mosl_predict") / "scan one_mask.png"
    assert Image.open(tmp_path / done.mask).size == (50, 64)


def test_folders_and_globs(model_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    scan(folder / "b.png", 40, 30)
    scan(folder / "a.BMP", 33, 45)
    scan(folder / "c.tif", 64, 20)
    (folder / "notes.txt").write_text("not a scan")
    other = scan(tmp_path / "more" / "d.jpeg", 70, 50)
    out = tmp_path / "out"
    done = run_predict(
        PredictConfig(
            inputs=(str(folder), str(tmp_path / "more" / "*.jpeg")),
            model=str(model_file),
            out=str(out),
            batch_size=3,
            device="cpu",
        )
    )
    assert [d.input.name for d in done] == ["a.BMP", "b.png", "c.tif", "d.jpeg"]
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "b_mask.png", "c_mask.png", "d_mask.png"]
    for d in done:
        with Image.open(d.input) as src, Image.open(d.mask) as mask:
            assert mask.size == src.size
    assert done[-1].input == other


def test_overlay_draws_the_outline_on_the_scan(model_file: Path, tmp_path: Path) -> None:
    src = scan(tmp_path / "x.png", width=96, height=80)
    threshold = median_probability(model_file, src)
    [done] = run_predict(
        PredictConfig(
            inputs=(str(src),),
            model=str(model_file),
            out=str(tmp_path / "o"),
            overlay=True,
            threshold=threshold,
            device="cpu",
        )
    )
    assert done.overlay == tmp_path / "o" / "x_overlay.png"
    picture = np.asarray(Image.open(done.overlay))
    mask = np.asarray(Image.open(done.mask)) == 255
    grey = np.asarray(Image.open(src))
    edge = outline(torch.from_numpy(mask)).numpy()
    assert picture.shape == (80, 96, 3)
    assert edge.any() and not edge.all()
    assert (picture[edge] == OVERLAY_COLOUR).all()
    assert (picture[~edge] == grey[~edge][:, None]).all()


def test_outline_of_a_square_is_two_pixels_wide() -> None:
    m = torch.zeros(10, 10, dtype=torch.bool)
    m[3:7, 3:7] = True
    edge = outline(m)
    assert edge[2, 2:8].all() and edge[3, 3:7].all()  # outside ring and inside ring
    assert not edge[4:6, 4:6].any() and not edge[0].any()


def test_non_image_input_is_refused_before_writing(model_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    scan(folder / "good.png", 40, 30)
    bad = folder / "zz_bad.png"
    bad.write_text("this is text, not a PNG")
    out = tmp_path / "out"
    with pytest.raises(MoslError, match="zz_bad.png") as info:
        run_predict(PredictConfig(inputs=(str(folder),), model=str(model_file), out=str(out), device="cpu"))
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_pretrained_weight_file_is_rejected(tmp_path: Path) -> None:
    weights = save_model(tmp_path / "pre.safetensors", kind="pretrained")
    src = scan(tmp_path / "s.png", 40, 30)
    with pytest.raises(MoslError, match="pretrained weight file, not a segmentation model"):
        run_predict(PredictConfig(inputs=(str(src),), model=str(weights), out=str(tmp_path / "o"), device="cpu"))
    assert not (tmp_path / "o").exists()


def test_output_naming_conflicts_are_refused(model_file: Path, tmp_path: Path) -> None:
    a = scan(tmp_path / "one" / "same.png", 40, 30)
    b = scan(tmp_path / "two" / "same.png", 40, 30)
    with pytest.raises(MoslError, match="would both write"):
        run_predict(
            PredictConfig(inputs=(str(a), str(b)), model=str(model_file), out=str(tmp_path / "o"), device="cpu")
        )
    with pytest.raises(MoslError, match="names one file"):
        run_predict(
            PredictConfig(inputs=(str(a), str(b)), model=str(model_file), out=str(tmp_path / "m.png"), device="cpu")
        )
    with pytest.raises(MoslError, match="losslessly"):
        run_predict(PredictConfig(inputs=(str(a),), model=str(model_file), out=str(tmp_path / "m.jpg"), device="cpu"))
    assert not (tmp_path / "o").exists()


def test_probability_maps_beside_the_masks(model_file: Path, tmp_path: Path) -> None:
    """--probabilities: round(255 p) at the scan's size, named <stem>_prob.png (mask.png → mask_prob.png);
    above 127.5 exactly where the mask is when nothing is post-processed."""
    a, b = scan(tmp_path / "a.png", 61, 47), scan(tmp_path / "b.png", 40, 52, seed=1)
    threshold = median_probability(model_file, a)
    common = {"model": str(model_file), "tta": False, "postprocess": False, "device": "cpu", "probabilities": True}
    results = run_predict(PredictConfig(inputs=(str(a), str(b)), out=str(tmp_path / "o"), **common))  # type: ignore[arg-type]
    assert [r.probabilities for r in results] == [tmp_path / "o" / "a_prob.png", tmp_path / "o" / "b_prob.png"]
    for r in results:
        prob, mask = np.asarray(Image.open(r.probabilities)), np.asarray(Image.open(r.mask))
        assert prob.dtype == np.uint8 and prob.shape == (r.height, r.width)
        assert np.array_equal(mask > 0, prob > 127.5)
    [one] = run_predict(
        PredictConfig(inputs=(str(a),), out=str(tmp_path / "m.png"), threshold=threshold, **common)  # type: ignore[arg-type]
    )
    prob = np.asarray(Image.open(tmp_path / "m_prob.png")).astype(float)
    assert one.probabilities == tmp_path / "m_prob.png" and 0 < (prob > 255 * threshold).mean() < 1
    with pytest.raises(MoslError, match="are not scans"):  # masks and maps are not predicted again
        expand_inputs([str(tmp_path / "o")])


def test_missing_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MoslError, match="no such file"):
        expand_inputs([str(tmp_path / "absent.png")])
    with pytest.raises(MoslError, match="matches no"):
        expand_inputs([str(tmp_path / "*.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MoslError, match="no PNG/JPG/JPEG/BMP/TIF/TIFF/GIF scans here"):
        expand_inputs([str(tmp_path / "empty")])


def test_a_folder_or_glob_leaves_out_masks_and_overlays(tmp_path: Path) -> None:
    """BUSI keeps x_mask.png and x_mask_1.png beside x.png, and predict writes x_mask / x_overlay:
    none of them is a scan, unless named on the command line."""
    folder = tmp_path / "busi"
    for name in ("x.png", "x_mask.png", "x_mask_1.png", "x_overlay.png", "masked.png"):
        scan(folder / name, 20, 20)
    assert [p.name for p in expand_inputs([str(folder)])] == ["masked.png", "x.png"]
    assert [p.name for p in expand_inputs([str(folder / "*.png")])] == ["masked.png", "x.png"]
    assert [p.name for p in expand_inputs([str(folder / "x_mask.png")])] == ["x_mask.png"]
    for name in ("masked.png", "x.png"):
        (folder / name).unlink()
    with pytest.raises(MoslError, match=r"no .* scans here \(\*_mask, \*_overlay, \*_prob files are not scans"):
        expand_inputs([str(folder)])


def test_rgb_model_reads_rgb_scans(tmp_path: Path) -> None:
    weights = save_model(tmp_path / "rgb.safetensors", in_channels=3)
    src = scan(tmp_path / "g.png", 45, 37)  # a grey file, converted to RGB for a 3-channel model
    [done] = run_predict(PredictConfig(inputs=(str(src),), model=str(weights), out=str(tmp_path / "o"), device="cpu"))
    assert Image.open(done.mask).size == (45, 37)


def test_sixteen_bit_scan_is_scaled_to_eight_bits(tmp_path: Path) -> None:
    arr = np.arange(20 * 10, dtype=np.uint16).reshape(10, 20) * 300
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    grey, rgb = read_image(path, 1, with_rgb=True)
    assert grey.shape == (10, 20, 1) and rgb is not None and rgb.shape == (10, 20, 3)
    assert grey[..., 0].tolist() == (arr >> 8).astype(np.uint8).tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_prediction_matches_cpu(model_file: Path, tmp_path: Path) -> None:
    src = scan(tmp_path / "c.png", width=123, height=77)
    threshold = median_probability(model_file, src)
    [cpu] = run_predict(
        PredictConfig(
            inputs=(str(src),),
            model=str(model_file),
            out=str(tmp_path / "cpu"),
            threshold=threshold,
            overlay=True,
            device="cpu",
        )
    )
    [gpu] = run_predict(
        PredictConfig(
            inputs=(str(src),),
            model=str(model_file),
            out=str(tmp_path / "gpu"),
            threshold=threshold,
            overlay=True,
            device="cuda",
        )
    )
    a, b = np.asarray(Image.open(cpu.mask)), np.asarray(Image.open(gpu.mask))
    assert a.shape == b.shape == (77, 123)
    assert np.mean(a != b) < 0.05  # autocast on CUDA moves a few pixels at the threshold
    assert Image.open(gpu.overlay).size == (123, 77)
