"""The `mosl` command as users' shell scripts call it: help, exit codes, and the default chain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mosl_cli.cli import app

runner = CliRunner()
ASSETS = Path(__file__).resolve().parents[1] / "assets"
STEPS = ["prepare", "info", "pretrain", "finetune", "evaluate", "predict", "report"]


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\nfrom mosl_cli.cli import app\nfrom typer.testing import CliRunner\n"
        "for step in [[], ['prepare'], ['pretrain'], ['finetune'], ['evaluate'], ['predict'], ['report']]:\n"
        "    r = CliRunner().invoke(app, [*step, '--help'])\n    assert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("step", STEPS)
def test_each_step_has_help_with_an_example(step: str) -> None:
    result = runner.invoke(app, [step, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Example" in result.output


@pytest.mark.parametrize(
    "args, fragment, code",
    [
        (["prepare", "/no/such/folder"], "/no/such/folder", 1),
        (["prepare", "synthetic", "--size", "5"], "--size", 2),
        (["finetune", "--data", "/no/such/dataset"], "/no/such/dataset", 1),
        # brackets in a name are text, not rich markup (a closing tag alone used to raise MarkupError)
        (["finetune", "--data", "/no/[red]such[/]/x[/bold]"], "/no/[red]such[/]/x[/bold]", 1),
        (["evaluate", "--model", "/no/such/model.safetensors"], "/no/such/model.safetensors", 1),
        (["evaluate", "--threshold", "1.5"], "--threshold", 2),
        (["pretrain", "--data", "/no/such/dataset"], "/no/such/dataset", 1),
        (["pretrain", "--method", "simclr", "--dense-weight", "1"], "--scope encoder-decoder", 2),
        (["pretrain", "--dense-weight", "1"], "add --method simclr, moco or simsiam", 2),  # the default is mim
        (["pretrain", "--positives", "group"], "add --method simclr, moco or simsiam", 2),
        (["pretrain", "--jitter", "1.5"], "--jitter", 2),
        (["pretrain", "--checkpoint-every", "-5"], "--checkpoint-every", 2),
        (["finetune", "--checkpoint-every", "-5"], "--checkpoint-every", 2),
        (["finetune", "--fold", "1"], "--fold needs --folds K", 2),
        (["finetune", "--folds", "5", "--fold", "5"], "--fold 5 is outside 0..4", 2),
    ],
)
def test_user_errors_are_one_line(
    args: list[str], fragment: str, code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Input errors exit 1, option values out of range (usage errors) exit 2: one line either way."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == [], "a failed step leaves no output folder"


def test_usage_error_is_exit_2() -> None:
    assert runner.invoke(app, ["prepare", "synthetic", "--channels", "2"]).exit_code == 2


def test_default_folders_chain_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare → pretrain → finetune → evaluate → predict with default folders (tiny settings)."""
    monkeypatch.chdir(tmp_path)
    small = ["--encoder", "resnet18", "--size", "32", "--epochs", "1", "--device", "cpu"]
    steps = [
        ["prepare", "synthetic", "--synthetic-count", "48", "--size", "64"],
        ["pretrain", "--method", "simsiam", *small, "--batch-size", "8", "--steps-per-epoch", "2"],
        ["finetune", *small, "--batch-size", "8", "--steps-per-epoch", "2"],
        ["evaluate", "--device", "cpu"],
        ["predict", str(ASSETS / "example_scan.png"), "--out", "mask.png", "--overlay", "--device", "cpu"],
    ]
    for args in steps:
        result = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 0, (args, result.output)
    for path in [
        "mosl_data/data.safetensors",
        "mosl_pretrain/model.safetensors",
        "mosl_finetune/model.safetensors",
        "mosl_eval/metrics.json",
        "mosl_eval/per_case.csv",
        "mask.png",
        "mask_overlay.png",
    ]:
        assert (tmp_path / path).is_file(), path
    from PIL import Image

    assert Image.open(tmp_path / "mask.png").size == Image.open(ASSETS / "example_scan.png").size
    import json

    config = json.loads((tmp_path / "mosl_finetune" / "config.json").read_text())
    assert config["resolved"]["init"]["init"].endswith("mosl_pretrain/model.safetensors")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["finetune", "--size", "0"], "--size"),
        (["pretrain", "--method", "byol"], "'simclr', 'moco', 'simsiam'"),
        (["finetune", "--no-such-option"], "--no-such-option"),
        (["prepare"], "sources"),
        (["finetune", "--no-such-[/big]"], "--no-such-[/big]"),
    ],
)
def test_parser_usage_errors_are_one_line_from_the_console_script(args: list[str], fragment: str) -> None:
    """What the option parser rejects ends, through the real entry point, in one stderr line and exit 2."""
    proc = subprocess.run([sys.executable, "-m", "mosl_cli", *args], capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], proc.stderr


def test_version_and_help_exit_0() -> None:
    version = subprocess.run(
        [sys.executable, "-m", "mosl_cli", "--version"], capture_output=True, text=True, timeout=120
    )
    assert version.returncode == 0 and version.stdout.startswith("mosl ")
    helped = subprocess.run(
        [sys.executable, "-m", "mosl_cli", "finetune", "--help"], capture_output=True, text=True, timeout=120
    )
    assert helped.returncode == 0 and "--label-fraction" in helped.stdout


def test_printed_paths_keep_their_brackets(grey_model_file: Path, tmp_path: Path) -> None:
    """stdout prints names as they are: a folder called out[red] is not rich markup."""
    from PIL import Image

    Image.new("L", (40, 30), 128).save(tmp_path / "scan.png")
    out = tmp_path / "out[red]"
    result = runner.invoke(
        app, ["predict", str(tmp_path / "scan.png"), "--model", str(grey_model_file), "--out", str(out)],
        env={"COLUMNS": "400"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert str(out / "scan_mask.png") in result.output and (out / "scan_mask.png").is_file()
