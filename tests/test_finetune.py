"""`mosl finetune`: nested label fractions, init from mosl and external checkpoints, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file

from mosl_cli.augment import SegAugment, cutmix
from mosl_cli.config import FinetuneConfig
from mosl_cli.data.store import load_dataset
from mosl_cli.errors import MoslError, UsageError
from mosl_cli.finetune import build_finetune_model, build_optimizer, label_subset, run_finetune
from mosl_cli.fsutil import read_jsonl
from mosl_cli.models import build_model, load_into, read_metadata, save_weights, weights_metadata
from mosl_cli.train import cosine_lr, poly_lr
from tiny import blob_dataset, tiny_finetune_config


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blob_dataset(tmp_path_factory.mktemp("ft") / "ds", n=60)


def _cfg(data: Path, out: Path, **kw: object) -> FinetuneConfig:
    return tiny_finetune_config(data, out, **kw)


def test_label_fractions_are_nested_and_stratified(data: Path) -> None:
    ds = load_dataset(data)
    subsets = {f: set(label_subset(ds, f, seed=0)) for f in (0.1, 0.25, 0.5, 1.0)}
    assert subsets[0.1] <= subsets[0.25] <= subsets[0.5] <= subsets[1.0]
    assert subsets[1.0] == set(ds.indices("train", labelled=True))
    for f, subset in subsets.items():
        classes = {ds.records[i]["class"] for i in subset}
        assert classes == {"benign", "malignant", "normal"}, f
    assert label_subset(ds, 0.25, seed=0) == label_subset(ds, 0.25, seed=0)
    assert label_subset(ds, 0.25, seed=0) != label_subset(ds, 0.25, seed=1)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(MoslError, match="label-fraction"):
            label_subset(ds, bad, seed=0)


def test_finetune_from_scratch_writes_segmentation_model(data: Path, tmp_path: Path) -> None:
    result = run_finetune(_cfg(data, tmp_path / "run"))
    meta = read_metadata(tmp_path / "run" / "model.safetensors")
    assert meta["kind"] == "segmentation" and meta["encoder"] == "resnet18" and meta["size"] == 32
    assert result.best_epoch >= 1 and 0 <= result.best_val_dice <= 1
    assert (tmp_path / "run" / "metrics.json").is_file() and (tmp_path / "run" / "log.jsonl").is_file()


def test_init_auto_uses_default_pretrain_weights(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    model = build_model("unet", "resnet18", 1)
    enc = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    os.makedirs("mosl_pretrain")
    save_weights(
        "mosl_pretrain/model.safetensors",
        enc,
        weights_metadata(
            kind="pretrained",
            arch="unet",
            encoder="resnet18",
            in_channels=1,
            size=32,
            scope="encoder",
            method="simsiam",
        ),
    )
    result = run_finetune(_cfg(data, tmp_path / "auto", init="auto", encoder="resnet50"))
    assert result.init["init"].endswith("mosl_pretrain/model.safetensors") and result.init["auto"]
    assert result.init["encoder"] == "resnet18"  # rebuilt from the file's metadata
    assert result.init["load"]["loaded"] == len(enc)


@pytest.mark.parametrize("scope, built", [("encoder", "unetplusplus"), ("encoder-decoder", "unet")])
def test_an_encoder_only_init_takes_the_asked_decoder_a_whole_unet_keeps_its_own(
    data: Path, tmp_path: Path, scope: str, built: str
) -> None:
    state = build_model("unet", "resnet18", 1).state_dict()
    meta = weights_metadata(kind="pretrained", arch="unet", encoder="resnet18", in_channels=1, size=32, scope=scope)
    save_weights(tmp_path / "pre.safetensors", state, meta)
    cfg = _cfg(data, tmp_path / "run", init=str(tmp_path / "pre.safetensors"), arch="unetplusplus", epochs=1)
    result = run_finetune(cfg)
    assert result.init["arch"] == built and type(result.model).__name__.lower() == built
    assert result.init["load"]["loaded"] >= len([k for k in state if k.startswith("encoder.")])
    assert read_metadata(tmp_path / "run" / "model.safetensors")["arch"] == built


def test_a_fine_tune_on_another_dataset_starts_a_fine_tune_whole(data: Path, tmp_path: Path) -> None:
    """Transfer from another organ's masks: ``--init`` its fine-tune's weight file loads every tensor,
    the mask head included, into the same network."""
    other = blob_dataset(tmp_path / "other", n=12, seed=1)
    run_finetune(_cfg(other, tmp_path / "source", epochs=1))
    weights = tmp_path / "source" / "model.safetensors"
    file = load_file(str(weights))
    model, init = build_finetune_model(_cfg(data, tmp_path / "target", init=str(weights)), str(weights), 1)
    assert init["load"]["loaded"] == len(file) and init["load"]["unexpected"] == 0
    state = model.state_dict()
    assert any(n.startswith("segmentation_head.") for n in file)
    assert all(torch.equal(state[n], t) for n, t in file.items())


def _torchvision_resnet18_state() -> dict[str, torch.Tensor]:
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.mark.parametrize("kind", ["torchvision", "lightly", "solo", "moco", "simsiam"])
def test_external_checkpoints_load_by_name(tmp_path: Path, kind: str) -> None:
    state = _torchvision_resnet18_state()
    n_backbone = len([k for k in state if not k.startswith("fc.")])
    if kind == "torchvision":
        obj, name = state, "resnet18.pth"
    elif kind == "lightly":  # nn.Sequential(*resnet.children()[:-1]) under "backbone."
        index = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}
        seq = {
            f"backbone.{index[k.split('.')[0]]}.{k.split('.', 1)[1]}": v
            for k, v in state.items()
            if not k.startswith("fc.")
        }
        seq["projection_head.layers.0.weight"] = torch.zeros(4, 4)
        obj, name = {"state_dict": seq, "epoch": 3}, "lightly.ckpt"
    elif kind == "solo":
        obj = {"state_dict": {f"backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}}
        name = "solo.ckpt"
    elif kind == "moco":
        q = {f"module.encoder_q.{k}": v for k, v in state.items()}
        k_ = {f"module.encoder_k.{k}": v for k, v in state.items()}
        obj, name = {"state_dict": {**q, **k_, "module.queue": torch.zeros(128, 8)}, "arch": "resnet18"}, "moco.pth.tar"
    else:
        obj, name = {"state_dict": {f"module.encoder.{k}": v for k, v in state.items()}}, "simsiam.pth.tar"
    torch.save(obj, tmp_path / name)
    model = build_model("unet", "resnet18", 1)
    report = load_into(model, tmp_path / name)
    assert len(report.loaded) == n_backbone
    assert "encoder.conv1.weight" in report.adapted  # RGB first conv summed onto one grey channel
    expected = state["layer1.0.conv1.weight"]
    torch.testing.assert_close(model.state_dict()["encoder.layer1.0.conv1.weight"], expected)


def test_checkpoint_that_matches_nothing_is_rejected(tmp_path: Path) -> None:
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(MoslError, match="no tensor matches"):
        load_into(build_model("unet", "resnet18", 1), tmp_path / "other.pth")


def test_bad_inputs_are_user_errors(data: Path, tmp_path: Path) -> None:
    with pytest.raises(MoslError, match="label-fraction"):
        run_finetune(_cfg(data, tmp_path / "a", label_fraction=1.5))
    with pytest.raises(MoslError, match="no such file"):
        run_finetune(_cfg(data, tmp_path / "b", init=str(tmp_path / "missing.safetensors")))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b" / "model.safetensors").exists()


def test_sgd_is_nnunets_nesterov_sgd_and_trains(data: Path, tmp_path: Path) -> None:
    cfg = _cfg(data, tmp_path / "run", optimizer="sgd", lr=0.01, encoder_lr_scale=0.5, epochs=2)
    optimizer = build_optimizer(build_model("unet", "resnet18", 1), cfg, torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(g["nesterov"] and g["momentum"] == 0.99 for g in optimizer.param_groups)
    assert [g["lr_scale"] for g in optimizer.param_groups] == [0.5, 1.0]  # encoder, then decoder and head
    run_finetune(cfg)
    log = read_jsonl(tmp_path / "run" / "log.jsonl")
    assert len(log) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    assert '"optimizer": "sgd"' in (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(UsageError, match="--optimizer 'adam' is not one of adamw, sgd"):
        run_finetune(_cfg(data, tmp_path / "bad", optimizer="adam"))
    assert not (tmp_path / "bad").exists()


def test_cutmix_pastes_boxes_into_the_training_batch_and_is_checked(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []

    def spy(images: torch.Tensor, *maps: torch.Tensor, p: float) -> tuple[torch.Tensor, ...]:
        calls.append(p)
        return cutmix(images, *maps, p=p)

    monkeypatch.setattr("mosl_cli.finetune.cutmix", spy)
    run_finetune(_cfg(data, tmp_path / "off", epochs=1, steps_per_epoch=2))
    assert calls == []  # off by default
    run_finetune(_cfg(data, tmp_path / "on", cutmix=0.5, epochs=1, steps_per_epoch=2))
    assert calls == [0.5, 0.5]  # once a step
    assert '"cutmix": 0.5' in (tmp_path / "on" / "config.json").read_text()
    with pytest.raises(UsageError, match="--cutmix 1.5 must be in"):
        run_finetune(_cfg(data, tmp_path / "bad", cutmix=1.5))
    assert not (tmp_path / "bad").exists()


def test_elastic_option_reaches_the_augmentation_and_is_checked(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[float] = []

    def spy(*args: object, **kwargs: object) -> SegAugment:
        built.append(float(kwargs["elastic_p"]))  # type: ignore[arg-type]
        return SegAugment(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("mosl_cli.finetune.SegAugment", spy)
    run_finetune(_cfg(data, tmp_path / "off", epochs=1, steps_per_epoch=2))
    run_finetune(_cfg(data, tmp_path / "on", elastic=0.3, epochs=1, steps_per_epoch=2))
    assert built == [0.0, 0.3]  # off by default, then the training pipeline's share
    assert '"elastic": 0.3' in (tmp_path / "on" / "config.json").read_text()
    with pytest.raises(UsageError, match="--elastic 1.5 must be in"):
        run_finetune(_cfg(data, tmp_path / "bad", elastic=1.5))
    assert not (tmp_path / "bad").exists()


def test_poly_schedule_is_nnunets_and_trains(data: Path, tmp_path: Path) -> None:
    assert [poly_lr(s, 10, 0, 1.0) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5**0.9, 0.0])
    assert poly_lr(1, 10, 4, 1.0) == pytest.approx(0.5)  # linear warm-up first, as the cosine schedule
    # nearly linear: below the half-cosine early on, above it near the end
    assert poly_lr(3, 10, 0, 1.0) < cosine_lr(3, 10, 0, 1.0) and poly_lr(7, 10, 0, 1.0) > cosine_lr(7, 10, 0, 1.0)
    run_finetune(_cfg(data, tmp_path / "run", schedule="poly", warmup_epochs=0, epochs=2, steps_per_epoch=3))
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "run" / "log.jsonl")]  # the lr of each epoch's last step
    assert lrs == pytest.approx([1e-3 * (1 - 2 / 6) ** 0.9, 1e-3 * (1 - 5 / 6) ** 0.9])
    with pytest.raises(UsageError, match="--schedule 'step' is not one of cosine, poly"):
        run_finetune(_cfg(data, tmp_path / "bad", schedule="step"))


def test_freeze_encoder_bn_keeps_pretrained_statistics(data: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", 1)
    state = model.state_dict()
    state["encoder.bn1.running_mean"].fill_(0.25)  # statistics that training in train mode would move
    enc = {k: v for k, v in state.items() if k.startswith("encoder.")}
    save_weights(
        tmp_path / "pre.safetensors",
        enc,
        weights_metadata(
            kind="pretrained", arch="unet", encoder="resnet18", in_channels=1, size=32, scope="encoder", method="simclr"
        ),
    )
    kept = run_finetune(_cfg(data, tmp_path / "kept", init=str(tmp_path / "pre.safetensors"), freeze_encoder_bn=True))
    moved = run_finetune(_cfg(data, tmp_path / "moved", init=str(tmp_path / "pre.safetensors")))
    torch.testing.assert_close(kept.model.state_dict()["encoder.bn1.running_mean"], enc["encoder.bn1.running_mean"])
    assert not torch.allclose(moved.model.state_dict()["encoder.bn1.running_mean"], enc["encoder.bn1.running_mean"])
    assert not torch.equal(
        kept.model.state_dict()["encoder.bn1.weight"], enc["encoder.bn1.weight"]
    )  # scale still trains
    with pytest.raises(MoslError, match="--freeze-encoder-bn"):
        run_finetune(_cfg(data, tmp_path / "scratch", freeze_encoder_bn=True))


def test_resume_from_a_checkpoint_older_than_the_log(data: Path, tmp_path: Path) -> None:
    """With --checkpoint-every longer than the run, only epoch 1 is checkpointed before the interruption
    after epoch 3: resume trims the log to epoch 1 and ends where an uninterrupted run does."""
    full = run_finetune(_cfg(data, tmp_path / "full", epochs=4))

    def stop_after_third_epoch(event: str, info: dict) -> None:
        if event == "epoch" and info["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_finetune(_cfg(data, tmp_path / "cut", epochs=4, checkpoint_every=3600), stop_after_third_epoch)
    assert len(read_jsonl(tmp_path / "cut" / "log.jsonl")) == 3
    resumed = run_finetune(_cfg(data, tmp_path / "cut", epochs=4, checkpoint_every=3600, resume=True))
    assert [r["epoch"] for r in read_jsonl(tmp_path / "cut" / "log.jsonl")] == [1, 2, 3, 4]
    assert resumed.best_epoch == full.best_epoch
    assert resumed.best_val_dice == pytest.approx(full.best_val_dice, abs=1e-6)
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
