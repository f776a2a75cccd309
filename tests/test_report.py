"""``mosl report`` on run folders written by the real pretrain, finetune and evaluate code (tiny runs)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from mosl_cli.cli import app
from mosl_cli.config import EvaluateConfig, FinetuneConfig, PretrainConfig, ReportConfig
from mosl_cli.data.store import load_dataset, write_dataset
from mosl_cli.errors import MoslError
from mosl_cli.evaluate import run_evaluate
from mosl_cli.finetune import run_finetune
from mosl_cli.pretrain import run_pretrain
from mosl_cli.report import (
    DATA_TAG_FILE,
    MATPLOTLIB_MISSING,
    choose_grid_models,
    data_name,
    find_runs,
    match_evaluations,
    mean_std,
    pick_cases,
    pretraining_of,
    run_report,
    summarize,
)
from tiny import blob_dataset

FRACTIONS = (0.5, 1.0)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _resplit(path: Path) -> Path:
    """Splits cycling over 5 (coprime with the 3 classes), so the test split holds benign and malignant cases."""
    ds = load_dataset(path)
    for i, record in enumerate(ds.records):
        record["split"] = ("train", "train", "train", "val", "test")[i % 5]
    return write_dataset(path, ds.images.clone(), ds.masks.clone(), ds.manifest)


def _finetune_and_evaluate(data: Path, run: Path, init: str, fraction: float, seed: int) -> dict[str, Any]:
    run_finetune(
        FinetuneConfig(
            data=str(data),
            init=init,
            encoder="resnet18",
            label_fraction=fraction,
            size=32,
            epochs=1,
            batch_size=4,
            steps_per_epoch=2,
            seed=seed,
            device="cpu",
            out=str(run),
        )
    )
    return run_evaluate(
        EvaluateConfig(model=str(run / "model.safetensors"), data=str(data), out=str(run / "eval"), device="cpu")
    ).metrics


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One pre-train (tagged ``breast``); fine-tuned from it and from scratch at two fractions (the
    baseline at 100 % with two seeds), each evaluated into ``RUN/eval``; then the report."""
    root = tmp_path_factory.mktemp("report")
    data = _resplit(blob_dataset(root / "blobs", n=30, size=32))
    pre = root / "runs" / "pretrain" / "simclr"
    run_pretrain(
        PretrainConfig(
            method="simclr",
            data=(str(data),),
            encoder="resnet18",
            size=32,
            epochs=1,
            batch_size=8,
            steps_per_epoch=1,
            warmup_epochs=0,
            device="cpu",
            out=str(pre),
        )
    )
    (pre / DATA_TAG_FILE).write_text("breast\n")
    evals: dict[tuple[str, float, int], dict[str, Any]] = {}
    settings = [("simclr", str(pre / "model.safetensors"), f, 0) for f in FRACTIONS]
    settings += [("supervised", "none", f, 0) for f in FRACTIONS] + [("supervised", "none", 1.0, 1)]
    for name, init, fraction, seed in settings:
        run = root / "runs" / "finetune" / name / f"f{fraction}_s{seed}"
        evals[(name, fraction, seed)] = _finetune_and_evaluate(data, run, init, fraction, seed)
    # A run whose metrics.json is corrupted, and one that never finished (no metrics.json).
    broken = root / "runs" / "finetune" / "broken"
    shutil.copytree(
        root / "runs" / "finetune" / "supervised" / "f0.5_s0",
        broken,
        ignore=shutil.ignore_patterns("eval", "*.safetensors"),
    )
    (broken / "metrics.json").write_text('{"best_val_dice": 0.5,', encoding="utf-8")
    unfinished = root / "runs" / "finetune" / "unfinished"
    unfinished.mkdir()
    shutil.copy(broken / "config.json", unfinished / "config.json")
    result = run_report(ReportConfig(runs=(str(root / "runs"),), out=str(root / "report"), cases=2))
    return {"root": root, "data": data, "evals": evals, "result": result, "broken": broken, "unfinished": unfinished}


def _lesion_dice(doc: dict[str, Any]) -> float:
    return float(doc["lesion"]["dice"]["mean"])


def test_csv_has_one_row_per_finished_run(grid: dict[str, Any]) -> None:
    with open(grid["root"] / "report" / "runs.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5
    got = {(r["method"], r["data"], r["scope"], float(r["label_fraction"]), int(r["seed"])): r for r in rows}
    assert set(got) == {("simclr", "breast", "encoder", f, 0) for f in FRACTIONS} | {
        ("supervised", "none", "none", f, s) for f, s in ((0.5, 0), (1.0, 0), (1.0, 1))
    }
    for (method, _, _, fraction, seed), row in got.items():
        doc = grid["evals"][(method, fraction, seed)]
        assert row["dice_group"] == "lesion" and row["split"] == "test"
        assert float(row["dice"]) == pytest.approx(_lesion_dice(doc), abs=1e-6)
        assert float(row["iou"]) == pytest.approx(doc["lesion"]["iou"]["mean"], abs=1e-6)
        assert float(row["dice_benign"]) == pytest.approx(doc["per_class"]["benign"]["dice"]["mean"], abs=1e-6)
        assert float(row["dice_malignant"]) == pytest.approx(doc["per_class"]["malignant"]["dice"]["mean"], abs=1e-6)
        assert int(row["size"]) == 32 and row["encoder"] == "resnet18" and Path(row["eval"]).name == "eval"
    assert got[("simclr", "breast", "encoder", 1.0, 0)]["init"].endswith("model.safetensors")


def _markdown_rows(path: Path) -> list[dict[str, str]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        for line in lines[1:]
        if not line.startswith("| ---")
    ]


def test_markdown_groups_seeds_and_gives_delta_to_baseline(grid: dict[str, Any]) -> None:
    rows = _markdown_rows(grid["root"] / "report" / "report.md")
    assert [(r["labels"], r["method"], r["data"]) for r in rows] == [
        ("50 %", "supervised", "–"),
        ("50 %", "simclr", "breast"),
        ("100 %", "supervised", "–"),
        ("100 %", "simclr", "breast"),
    ]
    evals = grid["evals"]
    base_100 = [_lesion_dice(evals[("supervised", 1.0, s)]) for s in (0, 1)]
    mean_100, std_100 = mean_std(base_100)
    assert (
        rows[2]["n"] == "2" and rows[2]["Dice"] == f"{mean_100:.3f} ± {std_100:.3f}" and rows[2]["Δ Dice"] == "baseline"
    )
    assert rows[0]["n"] == "1" and rows[0]["Dice"] == f"{_lesion_dice(evals[('supervised', 0.5, 0)]):.3f}"
    for row, fraction, base in ((rows[1], 0.5, _lesion_dice(evals[("supervised", 0.5, 0)])), (rows[3], 1.0, mean_100)):
        assert row["Δ Dice"][0] in "+-" and len(row["Δ Dice"]) == 6
        assert float(row["Δ Dice"]) == pytest.approx(_lesion_dice(evals[("simclr", fraction, 0)]) - base, abs=5.1e-4)
    groups = {(g["method"], g["label_fraction"]): g for g in grid["result"].groups}
    assert groups[("simclr", 1.0)]["delta_dice"] == pytest.approx(_lesion_dice(evals[("simclr", 1.0, 0)]) - mean_100)
    assert groups[("supervised", 1.0)]["delta_dice"] is None and groups[("supervised", 1.0)]["seeds"] == "0 1"
    assert "unet/resnet18 32 px" in (grid["root"] / "report" / "report.md").read_text(encoding="utf-8")


def test_figures_are_valid_pngs(grid: dict[str, Any]) -> None:
    for name in ("dice_vs_labels.png", "masks.png"):
        path = grid["root"] / "report" / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        with Image.open(path) as im:
            im.verify()
    assert grid["result"].notes == []


def test_mask_grid_picks_one_model_per_series_and_benign_and_malignant_cases(grid: dict[str, Any]) -> None:
    models = choose_grid_models(grid["result"].runs)
    assert [(m["method"], m["label_fraction"], m["seed"]) for m in models] == [
        ("supervised", 1.0, 0),
        ("simclr", 1.0, 0),
    ]
    ds = load_dataset(grid["data"])
    cases = pick_cases(ds, "test", 2)
    assert [ds.records[i]["class"] for i in cases] == ["benign", "benign", "malignant", "malignant"]
    assert all(ds.records[i]["split"] == "test" for i in cases)


def test_broken_and_unfinished_runs_are_named_and_the_rest_comes_out(grid: dict[str, Any]) -> None:
    problems = grid["result"].problems
    assert any(p.startswith(str(grid["broken"])) and "unreadable metrics.json" in p for p in problems)
    assert any(p.startswith(str(grid["unfinished"])) and "no metrics.json" in p for p in problems)
    assert len(problems) == 2
    assert len(grid["result"].runs) == 5
    assert "broken" in (grid["root"] / "report" / "report.md").read_text(encoding="utf-8")


def test_without_matplotlib_tables_still_come_out(
    grid: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    result = run_report(ReportConfig(runs=(str(grid["root"] / "runs"),), out=str(tmp_path / "r")))
    assert MATPLOTLIB_MISSING in result.notes
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.md", "runs.csv", "summary.csv"]
    assert len(result.groups) == 4


def test_cli_report_exits_0_and_prints_the_table(grid: dict[str, Any], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["report", str(grid["root"] / "runs"), "--out", str(tmp_path / "r"), "--cases", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "simclr" in result.output and "baseline" in result.output and "problem" in result.output
    assert (tmp_path / "r" / "report.md").is_file() and not (tmp_path / "r" / "masks.png").exists()
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "no such folder" in missing.output


def test_no_runs_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(MoslError, match="no finetune run"):
        run_report(ReportConfig(runs=(str(tmp_path / "empty"),), out=str(tmp_path / "r")))


def test_pretraining_named_from_weight_metadata_and_folder_names(grid: dict[str, Any], tmp_path: Path) -> None:
    pre = grid["root"] / "runs" / "pretrain" / "simclr"
    bare = tmp_path / "elsewhere" / "encoder.safetensors"  # no config.json beside it: the file's metadata
    bare.parent.mkdir()
    shutil.copy(pre / "model.safetensors", bare)
    info = pretraining_of({"config": {"init": str(bare)}, "resolved": {"init": {"init": str(bare)}}})
    assert info == {"init": str(bare), "method": "simclr", "data": "blobs", "scope": "encoder"}
    assert data_name(tmp_path, ["/d/busi", "/d/hc18/"]) == "busi+hc18"
    assert pretraining_of({"config": {"init": "none"}})["method"] == "supervised"


def test_summarize_mean_std_and_missing_baseline() -> None:
    def row(method: str, seed: int, dice: float, fraction: float = 0.5) -> dict[str, Any]:
        return {
            "arch": "unet",
            "encoder": "resnet18",
            "size": 64,
            "label_fraction": fraction,
            "method": method,
            "data": "breast",
            "scope": "encoder",
            "seed": seed,
            "dice": dice,
            "iou": dice / 2,
            "val_dice": None,
            "dice_group": "lesion",
        }

    groups = summarize(
        [
            row("supervised", 0, 0.5),
            row("supervised", 1, 0.7),
            row("moco", 0, 0.8),
            row("moco", 1, 0.6),
            row("moco", 0, 0.9, fraction=0.25),
        ],
        classes=[],
    )
    by = {(g["method"], g["label_fraction"]): g for g in groups}
    assert by[("supervised", 0.5)]["dice_mean"] == pytest.approx(0.6) and by[("supervised", 0.5)][
        "dice_std"
    ] == pytest.approx(0.1414214)
    assert by[("moco", 0.5)]["delta_dice"] == pytest.approx(0.1)
    assert by[("moco", 0.25)]["delta_dice"] is None and by[("moco", 0.25)]["dice_std"] is None
    assert [g["method"] for g in groups] == ["moco", "supervised", "moco"]  # by fraction, baseline first


def test_evaluations_matched_by_folder_test_split_preferred_and_orphans_named(
    grid: dict[str, Any], tmp_path: Path
) -> None:
    source = grid["root"] / "runs" / "finetune" / "supervised" / "f1.0_s0"
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "metrics.json"):
        shutil.copy(source / name, run / name)
    doc = json.loads((source / "eval" / "metrics.json").read_text(encoding="utf-8"))
    doc["model"] = "relative/to/another/cwd/model.safetensors"  # matched by the folder it lies in
    for folder, split in (("eval", "test"), ("eval_val", "val")):
        (run / folder).mkdir()
        (run / folder / "metrics.json").write_text(json.dumps({**doc, "split": split}), encoding="utf-8")
    (tmp_path / "orphan").mkdir()
    (tmp_path / "orphan" / "metrics.json").write_text(
        json.dumps({**doc, "model": "/nowhere/model.safetensors"}), encoding="utf-8"
    )
    folders = {k: v for k, v in doc.items() if k not in ("model", "models", "model_meta")}
    (tmp_path / "masks_eval").mkdir()  # `evaluate --pred --ref`: no model, not a problem, left out quietly
    (tmp_path / "masks_eval" / "metrics.json").write_text(json.dumps({**folders, "pred": "p", "ref": "r"}))
    found = find_runs([tmp_path, run])  # overlapping folders: each run and evaluation once
    assert list(found.finetunes) == [run.resolve()] and len(found.evals) == 3 and not found.problems
    chosen, problems = match_evaluations(found)
    assert chosen[run.resolve()][0] == (run / "eval").resolve()
    assert problems == [
        f"{(tmp_path / 'orphan').resolve()}: evaluates /nowhere/model.safetensors, "
        "which belongs to no finetune run found; evaluation left out"
    ]


def test_report_module_imports_neither_torch_nor_matplotlib() -> None:
    code = "import sys, mosl_cli.report; print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- variants


def _edit_json(path: Path, edit: Any) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    edit(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")


def _pretrain_copy(grid: dict[str, Any], dest: Path, **settings: Any) -> str:
    """The grid's pre-train run's config.json and data tag copied to ``dest`` with ``settings`` changed;
    its weight path."""
    source = grid["root"] / "runs" / "pretrain" / "simclr"
    dest.mkdir(parents=True)
    for name in ("config.json", DATA_TAG_FILE):
        shutil.copy(source / name, dest / name)
    _edit_json(dest / "config.json", lambda doc: doc["config"].update(settings))
    return str(dest / "model.safetensors")


def _finetune_copy(grid: dict[str, Any], source: str, run: Path, seed: int, dice: float, **settings: Any) -> None:
    """Finetune run ``source`` of the grid (config.json, metrics.json, eval/metrics.json) copied to ``run``
    as seed ``seed`` with lesion Dice ``dice`` and the finetune ``settings`` changed (``init`` as resolved too)."""
    shutil.copytree(grid["root"] / "runs" / "finetune" / source, run, ignore=shutil.ignore_patterns("*.safetensors"))

    def edit_config(doc: dict[str, Any]) -> None:
        doc["config"].update(settings, seed=seed)
        if "init" in settings:
            doc["resolved"]["init"]["init"] = settings["init"]

    def edit_eval(doc: dict[str, Any]) -> None:
        doc["model"] = str(run / "model.safetensors")
        doc["lesion"]["dice"]["mean"] = dice

    _edit_json(run / "config.json", edit_config)
    _edit_json(run / "eval" / "metrics.json", edit_eval)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_pretrainings_differing_in_epochs_are_two_variants(grid: dict[str, Any], tmp_path: Path) -> None:
    inits = {e: _pretrain_copy(grid, tmp_path / "pretrain" / f"e{e}", epochs=e) for e in (15, 30)}
    for epochs, dices in ((15, (0.60, 0.62, 0.64)), (30, (0.70, 0.74))):
        for seed, dice in enumerate(dices):
            _finetune_copy(
                grid, "simclr/f1.0_s0", tmp_path / "ft" / f"e{epochs}_s{seed}", seed, dice, init=inits[epochs]
            )
    for seed, dice in enumerate((0.50, 0.54)):
        _finetune_copy(grid, "supervised/f1.0_s0", tmp_path / "ft" / f"sup_s{seed}", seed, dice)
    result = run_report(ReportConfig(runs=(str(tmp_path / "ft"),), out=str(tmp_path / "r"), cases=0))
    got = {g["variant"]: g for g in result.groups}
    assert set(got) == {"", "pretrain epochs=15", "pretrain epochs=30"}
    assert [got[v]["n"] for v in ("", "pretrain epochs=15", "pretrain epochs=30")] == [2, 3, 2]
    assert got["pretrain epochs=15"]["delta_dice"] == pytest.approx(0.62 - 0.52)
    assert got["pretrain epochs=30"]["delta_dice"] == pytest.approx(0.72 - 0.52)
    rows = _markdown_rows(tmp_path / "r" / "report.md")
    assert [(r["method"], r["variant"], r["n"]) for r in rows] == [
        ("supervised", "–", "2"),
        ("simclr", "pretrain epochs=15", "3"),
        ("simclr", "pretrain epochs=30", "2"),
    ]
    assert (
        sorted(r["variant"] for r in _csv_rows(tmp_path / "r" / "runs.csv"))
        == ["", ""] + ["pretrain epochs=15"] * 3 + ["pretrain epochs=30"] * 2
    )
    assert [r["variant"] for r in _csv_rows(tmp_path / "r" / "summary.csv")] == [
        "",
        "pretrain epochs=15",
        "pretrain epochs=30",
    ]


def test_arms_differing_in_several_options_are_named_by_their_departures(grid: dict[str, Any], tmp_path: Path) -> None:
    # Four pre-trainings: the reference (15 epochs, lr 0.3), a longer one, a higher-lr one, and a short
    # one with a shorter warm-up; one of them also fine-tuned with frozen encoder epochs.
    arms = {"ref": {}, "e30": {"epochs": 30}, "lr": {"lr": 1.0}, "e5": {"epochs": 5, "warmup_epochs": 1}}
    inits = {
        name: _pretrain_copy(
            grid, tmp_path / "pretrain" / name, **{"epochs": 15, "lr": 0.3, "warmup_epochs": 5, **change}
        )
        for name, change in arms.items()
    }
    for name in arms:
        _finetune_copy(grid, "simclr/f1.0_s0", tmp_path / "ft" / name, 0, 0.6, init=inits[name])
    _finetune_copy(
        grid, "simclr/f1.0_s0", tmp_path / "ft" / "e30_frozen", 0, 0.6, init=inits["e30"], freeze_encoder_epochs=5
    )
    result = run_report(ReportConfig(runs=(str(tmp_path / "ft"),), out=str(tmp_path / "r"), cases=0))
    names = {Path(r["run"]).name: r["variant"] for r in result.runs}
    assert names == {
        "ref": "reference",
        "e30": "pretrain epochs=30",
        "lr": "pretrain lr=1.0",
        "e5": "pretrain epochs=5, pretrain warmup_epochs=1",
        "e30_frozen": "pretrain epochs=30, freeze_encoder_epochs=5",
    }
    assert len(result.groups) == 5


def test_finetune_options_split_and_delta_uses_the_matching_baseline(grid: dict[str, Any], tmp_path: Path) -> None:
    for epochs, dices in ((1, (0.50, 0.60)), (3, (0.70,))):
        for seed, dice in enumerate(dices):
            _finetune_copy(grid, "supervised/f1.0_s0", tmp_path / f"sup_e{epochs}_s{seed}", seed, dice, epochs=epochs)
    for scale, dices in ((1.0, (0.80, 0.90)), (0.1, (0.75, 0.85))):
        for seed, dice in enumerate(dices):
            _finetune_copy(
                grid,
                "simclr/f1.0_s0",
                tmp_path / f"simclr_x{scale}_s{seed}",
                seed,
                dice,
                epochs=3,
                encoder_lr_scale=scale,
            )
    result = run_report(ReportConfig(runs=(str(tmp_path),), out=str(tmp_path / "r"), cases=0))
    got = {(g["method"], g["variant"]): g for g in result.groups}
    assert list(got) == [
        ("supervised", "epochs=1"),
        ("supervised", "epochs=3"),
        ("simclr", "encoder_lr_scale=0.1"),
        ("simclr", "encoder_lr_scale=1.0"),
    ]
    assert got[("supervised", "epochs=1")]["n"] == 2 and got[("supervised", "epochs=1")]["dice_mean"] == pytest.approx(
        0.55
    )
    assert got[("simclr", "encoder_lr_scale=1.0")]["delta_dice"] == pytest.approx(0.85 - 0.70)  # against epochs=3
    assert got[("simclr", "encoder_lr_scale=0.1")]["delta_dice"] == pytest.approx(0.80 - 0.70)
    assert "variant" in result.columns and "**variant**" in (tmp_path / "r" / "report.md").read_text(encoding="utf-8")


def test_a_study_without_differences_has_no_variant_column(grid: dict[str, Any]) -> None:
    result = grid["result"]
    assert result.columns[:9] == ["model", "labels", "method", "data", "scope", "n", "Dice", "Δ Dice", "IoU"]
    assert all(c.startswith("Dice ") for c in result.columns[9:])
    assert all(r["variant"] == "" for r in result.runs) and all(g["variant"] == "" for g in result.groups)
    text = (grid["root"] / "report" / "report.md").read_text(encoding="utf-8")
    assert "variant" not in text
    assert all(r["variant"] == "" for r in _csv_rows(grid["root"] / "report" / "summary.csv"))


def test_baselines_that_differ_get_their_own_line_style(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    import mosl_cli.report.figures as report

    figures: list[Any] = []
    monkeypatch.setattr(report, "save_png", lambda fig, path: figures.append(fig))
    groups = [
        {
            "method": method,
            "data": data,
            "scope": scope,
            "variant": variant,
            "label_fraction": f,
            "dice_mean": 0.5 + f,
            "dice_std": 0.01,
            "dice_group": "lesion",
            "arch": "unet",
            "encoder": "resnet18",
            "size": 64,
        }
        for method, data, scope, variant in (
            ("supervised", "–", "–", "epochs=20"),
            ("supervised", "–", "–", "epochs=40"),
            ("simclr", "busi", "encoder", "epochs=40"),
        )
        for f in (0.1, 0.25)
    ]
    report.plot_dice_vs_fraction(groups, tmp_path / "plot.png")
    series = [line for line in figures[0].axes[0].get_lines() if line.get_marker() == "o"]  # not the error-bar caps
    styles = {(line.get_linestyle(), str(line.get_color())) for line in series}
    assert len(series) == 3 and len(styles) == 3  # two baselines told apart, and from the pre-trained arm


def test_many_series_are_spread_over_panels_of_at_most_eight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    import mosl_cli.report.figures as figures_module

    figures: list[Any] = []
    monkeypatch.setattr(figures_module, "save_png", lambda fig, path: figures.append(fig))
    arms = [("supervised", "–", "–", f"epochs={e}") for e in (20, 40)]
    arms += [("simclr", "busi", "encoder", f"pretrain epochs={e}") for e in range(1, 16)]  # 17 series in all
    groups = [
        {
            "method": m,
            "data": d,
            "scope": s,
            "variant": v,
            "label_fraction": f,
            "dice_mean": 0.5 + f,
            "dice_std": 0.01,
            "dice_group": "lesion",
            "arch": "unet",
            "encoder": "resnet18",
            "size": 64,
        }
        for m, d, s, v in arms
        for f in (0.1, 0.25)
    ]
    figures_module.plot_dice_vs_fraction(groups, tmp_path / "plot.png")
    panels = [ax for ax in figures[0].axes if ax.get_visible()]
    lines = [[line for line in ax.get_lines() if line.get_marker() == "o"] for ax in panels]
    assert len(panels) == 3 and all(len(p) <= figures_module.MAX_SERIES for p in lines)
    assert sum(len(p) for p in lines) == 15 + 2 * len(panels)  # every arm once, both baselines in each panel
