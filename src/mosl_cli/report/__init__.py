"""``mosl report``: the study's tables and figures from many finetune and evaluate run folders.

Every folder given is searched recursively for

- finetune runs: a ``config.json`` with ``command: "finetune"`` and the run's ``metrics.json``;
- evaluate outputs: a ``metrics.json`` with ``format: "mosl-metrics"``. Each is matched to the finetune
  run whose ``model.safetensors`` it scored (its ``model`` path, taken relative to the current folder
  when not absolute) or else to the run folder it lies in (``RUN/eval/``, as ``studies/paper-grid/paper_grid.sh``
  writes). A run with several evaluations uses its test-split one (without TTA when there is a choice).

A run's pre-training (method, data, scope) is read from the pre-train run's ``config.json`` beside the
weight file that ``--init`` named, else from that file's safetensors metadata; ``--init none`` is the
supervised baseline. The pre-training data is named by ``data_tag.txt`` in the pre-train run folder
when there is one (``paper_grid.sh`` writes ``breast``, ``multiorgan``, ``natural``), else by the
dataset folder names joined with ``+``.

Runs that share a setting (model, size, label fraction, method, pre-training data and scope) but differ
in other options (``mosl finetune``'s, or the pre-training's such as ``--epochs``) are told apart by a
**variant**: the values of the options that differ, e.g. ``pretrain epochs=30`` or
``encoder_lr_scale=0.1``; with several, only where an arm departs from the most common values, and
``reference`` for the arm that departs in none (see :func:`assign_variants`). Each variant is its own
row, line and Δ Dice.

Written into ``--out``: ``runs.csv`` (one row per finetune run), ``summary.csv`` and ``report.md``
(mean ± std over seeds per setting, Δ Dice against the supervised baseline at the same model, size and
label fraction), and, when matplotlib is installed, ``dice_vs_labels.png`` (test Dice against label
fraction per method and pre-training data; at most eight lines per panel, more arms spread over
several panels that each repeat the baselines) and ``masks.png`` (scan | ground truth | each model's mask
for a few benign and malignant test cases, like the paper's figures). A run folder whose files are
missing or unreadable is named in ``problems`` and left out; the rest still comes out.

The package: :mod:`.runs` finds the runs and makes their rows, :mod:`.variants` names the arms of a
setting, :mod:`.tables` summarises over seeds and writes the CSVs and report.md, :mod:`.figures`
draws the PNGs; :func:`run_report` here chains them.
"""

from __future__ import annotations

from pathlib import Path

from mosl_cli.config import ReportConfig
from mosl_cli.errors import MoslError
from mosl_cli.fsutil import write_text
from mosl_cli.names import CONFIG_FILE, DATA_TAG_FILE, METRICS_FILE
from mosl_cli.report.figures import (
    BASELINE_STYLES,
    MASKS_FILE,
    MATPLOTLIB_MISSING,
    PLOT_FILE,
    _figures,
    choose_grid_models,
    pick_cases,
    plot_dice_vs_fraction,
    plot_mask_grid,
    predict_masks,
)
from mosl_cli.report.runs import (
    BASELINE,
    EVAL_FORMAT,
    LESION_CLASSES,
    RUN_COLUMNS,
    FoundRuns,
    class_names,
    data_name,
    find_runs,
    match_evaluations,
    pretrain_config,
    pretraining_of,
    run_row,
)
from mosl_cli.report.tables import (
    MARKDOWN_FILE,
    NONE,
    RUNS_CSV,
    SUMMARY_CSV,
    ReportResult,
    baseline_for,
    display_table,
    markdown,
    mean_std,
    model_label,
    setting_order,
    summarize,
    write_csv,
)
from mosl_cli.report.variants import (
    FINETUNE_IGNORED,
    PRETRAIN_IGNORED,
    PRETRAIN_PREFIX,
    REFERENCE,
    SERIES_KEYS,
    SETTING_KEYS,
    assign_variants,
    options_of,
    pretrain_options,
    variant_text,
)

# --------------------------------------------------------------------------- entry point


def run_report(cfg: ReportConfig) -> ReportResult:
    """Find the runs under ``cfg.runs``, write runs.csv, summary.csv, report.md and the figures into ``cfg.out``.

    Raises :class:`MoslError` for a missing folder, an ``--out`` that is a file, or no finetune run at all.
    """
    if cfg.cases < 0:
        raise MoslError(f"--cases {cfg.cases}: must be 0 (no mask grid) or more")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise MoslError(f"--out {out}: exists and is not a folder; pass a folder name")
    found = find_runs(cfg.runs)
    if not found.finetunes:
        detail = f" ({len(found.problems)} broken: {found.problems[0]})" if found.problems else ""
        raise MoslError(
            f"no finetune run found under {', '.join(cfg.runs)}{detail}; "
            "pass the folders written by `mosl finetune` or paper_grid.sh"
        )
    chosen, match_problems = match_evaluations(found)
    cache: dict[str, dict[str, str]] = {}
    options_cache: dict[str, dict[str, str]] = {}
    rows = [
        run_row(
            run, cfg_doc, metrics, chosen.get(run), pretraining_of(cfg_doc, cache), options_of(cfg_doc, options_cache)
        )
        for run, (cfg_doc, metrics) in found.finetunes.items()
    ]
    assign_variants(rows)
    rows.sort(key=lambda r: (*setting_order(r), r["seed"], r["run"]))
    classes = class_names(rows)
    groups = summarize(rows, classes)
    columns, table = display_table(groups, classes)
    result = ReportResult(out, rows, groups, columns, table, problems=found.problems + match_problems)

    out.mkdir(parents=True, exist_ok=True)
    per_class = [f"{m}_{c}" for c in classes for m in ("dice", "iou")]
    write_csv(out / RUNS_CSV, [*RUN_COLUMNS, *per_class], rows)
    summary_columns = [
        *SETTING_KEYS,
        "variant",
        "n",
        "seeds",
        "dice_group",
        "dice_mean",
        "dice_std",
        "delta_dice",
        "iou_mean",
        "iou_std",
        "val_dice_mean",
        "val_dice_std",
        *(f"dice_{c}_{s}" for c in classes for s in ("mean", "std")),
    ]
    write_csv(out / SUMMARY_CSV, summary_columns, groups)
    figures = _figures(result, cfg)
    write_text(out / MARKDOWN_FILE, markdown(result, cfg.runs, figures))
    result.files = [out / name for name in (RUNS_CSV, SUMMARY_CSV, MARKDOWN_FILE, *figures)]
    return result


__all__ = [
    "ReportResult",
    "FoundRuns",
    "run_report",
    "find_runs",
    "match_evaluations",
    "pretraining_of",
    "data_name",
    "run_row",
    "options_of",
    "assign_variants",
    "baseline_for",
    "summarize",
    "display_table",
    "mean_std",
    "plot_dice_vs_fraction",
    "plot_mask_grid",
    "choose_grid_models",
    "pick_cases",
    "RUN_COLUMNS",
    "DATA_TAG_FILE",
    "BASELINE",
    # also importable from here, as from the single module this package replaced
    "BASELINE_STYLES",
    "CONFIG_FILE",
    "EVAL_FORMAT",
    "FINETUNE_IGNORED",
    "LESION_CLASSES",
    "MARKDOWN_FILE",
    "MASKS_FILE",
    "MATPLOTLIB_MISSING",
    "METRICS_FILE",
    "NONE",
    "PLOT_FILE",
    "PRETRAIN_IGNORED",
    "PRETRAIN_PREFIX",
    "REFERENCE",
    "RUNS_CSV",
    "SERIES_KEYS",
    "SETTING_KEYS",
    "SUMMARY_CSV",
    "class_names",
    "markdown",
    "model_label",
    "predict_masks",
    "pretrain_config",
    "pretrain_options",
    "setting_order",
    "variant_text",
    "write_csv",
]
