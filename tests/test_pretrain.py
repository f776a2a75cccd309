"""`mosl pretrain` on a tiny dataset: every method, both scopes, determinism, resume, NaN guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mosl_cli.config import PretrainConfig
from mosl_cli.errors import MoslError
from mosl_cli.fsutil import read_jsonl
from mosl_cli.models import read_metadata
from mosl_cli.pretrain import run_pretrain
from mosl_cli.train import CheckpointClock
from tiny import blob_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blob_dataset(tmp_path_factory.mktemp("pre") / "ds", n=36)


def _cfg(data: Path, out: Path, **kw: object) -> PretrainConfig:
    base = dict(
        data=(str(data),),
        encoder="resnet18",
        size=32,
        epochs=1,
        batch_size=8,
        warmup_epochs=0,
        proj_hidden=64,
        proj_dim=32,
        device="cpu",
        out=str(out),
    )
    base.update(kw)
    return PretrainConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["simclr", "moco", "simsiam"])
def test_each_method_writes_encoder_weights(data: Path, tmp_path: Path, method: str) -> None:
    result = run_pretrain(_cfg(data, tmp_path / method, method=method))
    weights = tmp_path / method / "model.safetensors"
    meta = read_metadata(weights)
    assert meta["kind"] == "pretrained" and meta["method"] == method and meta["scope"] == "encoder"
    names = load_file(str(weights)).keys()
    assert names and all(n.startswith("encoder.") for n in names)
    assert torch.isfinite(torch.tensor(result.final_loss))
    for name in ("config.json", "log.jsonl", "metrics.json", "checkpoint.safetensors"):
        assert (tmp_path / method / name).is_file()
    assert json.loads((tmp_path / method / "config.json").read_text())["config"]["method"] == method


def test_encoder_decoder_scope_saves_decoder(data: Path, tmp_path: Path) -> None:
    run_pretrain(_cfg(data, tmp_path / "ed", method="simsiam", scope="encoder-decoder"))
    names = set(load_file(str(tmp_path / "ed" / "model.safetensors")))
    assert any(n.startswith("decoder.") for n in names) and any(n.startswith("encoder.") for n in names)
    assert read_metadata(tmp_path / "ed" / "model.safetensors")["scope"] == "encoder-decoder"


def test_same_seed_same_first_epoch_loss(data: Path, tmp_path: Path) -> None:
    a = run_pretrain(_cfg(data, tmp_path / "a", method="simclr", seed=3))
    b = run_pretrain(_cfg(data, tmp_path / "b", method="simclr", seed=3))
    c = run_pretrain(_cfg(data, tmp_path / "c", method="simclr", seed=4))
    assert a.final_loss == b.final_loss
    assert a.final_loss != c.final_loss


def test_resume_after_interruption_equals_uninterrupted_run(data: Path, tmp_path: Path) -> None:
    full = _cfg(data, tmp_path / "full", method="moco", epochs=3)
    run_pretrain(full)

    def kill_after_first_epoch(event: str, info: dict) -> None:
        if event == "epoch" and info["epoch"] == 1:
            raise KeyboardInterrupt

    cut = _cfg(data, tmp_path / "cut", method="moco", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(cut, kill_after_first_epoch)
    assert len(read_jsonl(tmp_path / "cut" / "log.jsonl")) == 1
    with pytest.raises(MoslError, match="--resume"):
        run_pretrain(cut)
    resumed = run_pretrain(_cfg(data, tmp_path / "cut", method="moco", epochs=3, resume=True))
    assert resumed.resumed_from == 1
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    la = [r["loss"] for r in read_jsonl(tmp_path / "full" / "log.jsonl")]
    lb = [r["loss"] for r in read_jsonl(tmp_path / "cut" / "log.jsonl")]
    assert la == pytest.approx(lb, abs=1e-6)


def test_metrics_record_the_cost_and_a_resumed_run_adds_the_earlier_part(data: Path, tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    def stop_after_first_epoch(event: str, info: dict) -> None:
        if event == "epoch" and info["epoch"] == 1:
            raise KeyboardInterrupt

    cfg = _cfg(data, tmp_path / "r", method="simclr", epochs=2, steps_per_epoch=1, checkpoint_every=0)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(cfg, stop_after_first_epoch)
    checkpoint = str(tmp_path / "r" / "checkpoint.safetensors")
    with safe_open(checkpoint, framework="pt") as fh:
        meta = fh.metadata()
    progress = json.loads(meta["progress"])
    assert progress["cost"]["wall_s"] > 0 and progress["cost"]["cpu_s"] > 0 and progress["cost"]["gpu_s"] == 0
    # pretend the first part took 10 wall minutes and 20 CPU minutes: the resumed run must add them
    progress["cost"] = {"wall_s": 600.0, "cpu_s": 1200.0, "gpu_s": 0.0}
    save_file(load_file(checkpoint), checkpoint, metadata={**meta, "progress": json.dumps(progress)})
    result = run_pretrain(_cfg(data, tmp_path / "r", method="simclr", epochs=2, steps_per_epoch=1, resume=True))
    cost = json.loads((tmp_path / "r" / "metrics.json").read_text())["cost"]
    assert cost == result.cost and cost["device"] == "cpu" and cost["gpu_minutes"] == 0
    assert 10 < cost["wall_minutes"] < 11 and 20 < cost["cpu_minutes"] < 21


def test_nan_loss_stops_with_clear_message(data: Path, tmp_path: Path) -> None:
    with pytest.raises(MoslError, match="NaN"):
        run_pretrain(_cfg(data, tmp_path / "nan", method="simclr", lr=1e30, epochs=2))


def test_bad_options_are_user_errors(data: Path, tmp_path: Path) -> None:
    with pytest.raises(MoslError, match="--temperature does not apply"):
        run_pretrain(_cfg(data, tmp_path / "t", method="simsiam", temperature=0.1))
    with pytest.raises(MoslError, match="--method"):
        run_pretrain(_cfg(data, tmp_path / "x", method="byol"))
    with pytest.raises(MoslError, match="no such dataset"):
        run_pretrain(_cfg(tmp_path / "missing", tmp_path / "y"))


def test_checkpoint_clock_writes_first_last_and_on_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr("mosl_cli.train.time.monotonic", lambda: now[0])
    clock = CheckpointClock(60)
    due = []
    for t in (1, 30, 59, 62, 100, 123, 130):  # epoch ends, in seconds
        now[0] = t
        due.append(clock.due(final=t == 130))
    assert due == [True, False, False, True, False, True, True]
    every_epoch = CheckpointClock(0)
    assert all(every_epoch.due(final=False) for _ in range(3))
    with pytest.raises(MoslError, match="--checkpoint-every"):
        CheckpointClock(-1)
