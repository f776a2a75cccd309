"""CLI conventions: real choices (exit 2 with the list), flags shown as flags, completion, --config replay, --json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest
from typer.testing import CliRunner

from mosl_cli import choices as K
from mosl_cli.cli import app
from tiny import TINY, blob_dataset

runner = CliRunner()
ASSETS = Path(__file__).resolve().parents[1] / "assets"
WIDE = {"COLUMNS": "200"}


def test_choice_lists_match_their_registries() -> None:
    import segmentation_models_pytorch as smp

    from mosl_cli.augment import PRESETS
    from mosl_cli.data.readers import FORMATS
    from mosl_cli.data.splits import SPLITS
    from mosl_cli.export import FORMATS as EXPORT_FORMATS
    from mosl_cli.methods import METHODS
    from mosl_cli.methods.backbone import SCOPES

    assert set(get_args(K.Method)) == set(METHODS) and set(get_args(K.Scope)) == set(SCOPES)
    assert set(get_args(K.Preset)) == set(PRESETS) and set(get_args(K.Split)) == {*SPLITS, "all"}
    assert set(get_args(K.ReaderFormat)) == set(FORMATS) and set(get_args(K.ExportFormat)) == set(EXPORT_FORMATS)
    assert set(get_args(K.Arch)) == set(smp.MODEL_ARCHITECTURES_MAPPING)


def test_wrong_method_exits_2_with_the_choices() -> None:
    result = runner.invoke(app, ["pretrain", "--method", "byol"], env=WIDE)
    assert result.exit_code == 2
    assert all(name in result.output for name in ("byol", "simclr", "moco", "simsiam")), result.output


@pytest.mark.parametrize(
    "args", [["evaluate", "--split", "holdout"], ["finetune", "--arch", "vnet"], ["prepare", "x", "--format", "nifty"]]
)
def test_other_choices_exit_2(args: list[str]) -> None:
    assert runner.invoke(app, args, env=WIDE).exit_code == 2


def test_help_lists_choices_and_shows_flags_as_flags() -> None:
    text = runner.invoke(app, ["pretrain", "--help"], env=WIDE).output
    assert "simclr|moco|simsiam" in text and "<bool>" not in text
    text = runner.invoke(app, ["evaluate", "--help"], env=WIDE).output
    assert "--no-tta" in text and "test|val|train|all" in text and "<bool>" not in text


def test_shell_completion_is_enabled() -> None:
    assert "--install-completion" in runner.invoke(app, ["--help"], env=WIDE).output


def _settings(run: Path) -> dict:
    doc = json.loads((run / "config.json").read_text())
    cfg = doc["config"]
    cfg["init"] = doc["resolved"]["init"]["init"]
    return {k: v for k, v in cfg.items() if k not in ("out", "epochs")}


def test_finetune_config_replays_settings_except_the_overridden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = blob_dataset(tmp_path / "ds", n=12, size=32)
    first = [
        "finetune",
        "--data",
        str(data),
        "--init",
        "none",
        *TINY,
        "--arch",
        "fpn",
        "--lr",
        "5e-4",
        "--label-fraction",
        "0.5",
        "--seed",
        "3",
        "--no-augment",
        "--patience",
        "7",
        "--no-amp",
        "--out",
        "run1",
    ]
    assert runner.invoke(app, first, env=WIDE).exit_code == 0
    again = runner.invoke(app, ["finetune", "--config", "run1/config.json", "--epochs", "2"], env=WIDE)
    assert again.exit_code == 0, again.output
    new = json.loads((tmp_path / "mosl_finetune" / "config.json").read_text())["config"]
    assert new["epochs"] == 2 and new["out"] == "mosl_finetune"
    assert _settings(tmp_path / "mosl_finetune") == _settings(tmp_path / "run1")


def test_config_of_another_step_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"command": "finetune", "config": {}}))
    result = runner.invoke(app, ["pretrain", "--config", str(tmp_path / "config.json")], env=WIDE)
    assert result.exit_code == 2 and "mosl finetune" in result.output


def test_pretrain_config_maps_renamed_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mosl_cli import pretrain

    seen = {}

    def fake(cfg, bar):  # capture the settings instead of training
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(pretrain, "run_pretrain", fake)
    config = {
        "command": "pretrain",
        "config": {
            "method": "moco",
            "data": ["a", "b"],
            "data_weights": [1.0, 3.0],
            "crop_scale": [0.3, 1.0],
            "amp": False,
            "epochs": 9,
            "temperature": 0.1,
            "out": "elsewhere",
            "channels_last": True,
        },
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    runner.invoke(app, ["pretrain", "--config", str(tmp_path / "config.json"), "--epochs", "4"], env=WIDE)
    cfg = seen["cfg"]
    assert (cfg.method, cfg.data, cfg.data_weights, cfg.crop_scale, cfg.amp, cfg.epochs, cfg.temperature, cfg.out) == (
        "moco",
        ("a", "b"),
        (1.0, 3.0),
        (0.3, 1.0),
        False,
        4,
        0.1,
        "mosl_pretrain",
    )


def test_json_on_info_evaluate_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = blob_dataset(tmp_path / "ds", n=12, size=32)
    info = runner.invoke(app, ["info", str(data), "--json"])
    assert info.exit_code == 0 and json.loads(info.stdout)["images"] == 12
    train = [
        "finetune",
        "--data",
        str(data),
        "--init",
        "none",
        *TINY,
    ]
    assert runner.invoke(app, train).exit_code == 0
    ev = runner.invoke(app, ["evaluate", "--data", str(data), "--device", "cpu", "--json"])
    assert ev.exit_code == 0, ev.output
    doc = json.loads(ev.stdout)
    assert doc["split"] == "test" and "dice" in doc["summary"] and doc["files"][0].endswith("metrics.json")
    pr = runner.invoke(
        app, ["predict", str(ASSETS / "example_scan.png"), "--out", "m.png", "--device", "cpu", "--json"]
    )
    assert pr.exit_code == 0, pr.output
    doc = json.loads(pr.stdout)
    assert doc["count"] == 1 and doc["files"][0]["mask"] == "m.png"
