"""The summary over seeds per setting, Δ Dice against the baseline, and the files: runs.csv, summary.csv, report.md."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosl_cli.fsutil import atomic_path
from mosl_cli.report.runs import BASELINE
from mosl_cli.report.variants import SETTING_KEYS, _differing

RUNS_CSV = "runs.csv"
SUMMARY_CSV = "summary.csv"
MARKDOWN_FILE = "report.md"
NONE = "–"


@dataclass
class ReportResult:
    """What :func:`run_report` found and wrote.

    ``runs``: one dict per finetune run (the rows of runs.csv); ``groups``: one dict per setting (the
    rows of summary.csv); ``columns`` / ``table``: the display strings shown in report.md and on screen;
    ``problems``: one line per folder left out or without test figures; ``notes``: figures skipped and why.
    """

    out: Path
    runs: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    columns: list[str]
    table: list[list[str]]
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- aggregation


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std (n − 1) of the finite values; std is ``None`` below two values."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None


def _series_order(method: str, data: str, scope: str) -> tuple[bool, str, str, str]:
    return (method != BASELINE, method, data, scope)


def setting_order(g: dict[str, Any]) -> tuple[Any, ...]:
    """Sections by model and size, then label fraction, then the baseline before the pre-trained series,
    then variant."""
    return (
        g["arch"],
        g["encoder"],
        g["size"],
        g["label_fraction"],
        *_series_order(g["method"], g["data"], g["scope"]),
        g.get("variant", ""),
    )


def baseline_for(g: dict[str, Any], baselines: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The baseline group to compare ``g`` with, among those at its model, size and label fraction: the
    one whose values of the options that tell the baselines apart are ``g``'s, else the sole one, else none."""
    keys = _differing(baselines)
    matches = [b for b in baselines if all(b["options"].get(k) == g["options"].get(k) for k in keys)]
    if len(matches) == 1:
        return matches[0]
    return baselines[0] if len(baselines) == 1 else None


def summarize(rows: Sequence[dict[str, Any]], classes: Sequence[str]) -> list[dict[str, Any]]:
    """One dict per setting (:data:`SETTING_KEYS` and ``variant``) over the runs that have test figures:
    ``n`` seeds, ``seeds``, ``<metric>_mean`` / ``<metric>_std`` for dice, iou, val_dice and each class's
    dice, and ``delta_dice`` = its mean Dice − the supervised baseline's at the same model, size and label
    fraction (see :func:`baseline_for`; ``None`` for the baseline itself and where no baseline ran)."""
    by_setting: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if r["dice"] is not None:
            by_setting.setdefault((*(r[k] for k in SETTING_KEYS), r.get("variant", "")), []).append(r)
    groups = []
    for key, members in by_setting.items():
        g: dict[str, Any] = dict(zip((*SETTING_KEYS, "variant"), key))
        g["options"] = members[0].get("options") or {}  # the same in every member but for the seed
        g["n"] = len(members)
        g["dice_group"] = members[0]["dice_group"] if len({r["dice_group"] for r in members}) == 1 else "mixed"
        g["seeds"] = " ".join(str(s) for s in sorted(r["seed"] for r in members))
        for metric in ("dice", "iou", "val_dice", *(f"dice_{c}" for c in classes)):
            g[f"{metric}_mean"], g[f"{metric}_std"] = mean_std(r.get(metric) for r in members)
        groups.append(g)
    baselines: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for g in groups:
        if g["method"] == BASELINE:
            baselines.setdefault(tuple(g[k] for k in ("arch", "encoder", "size", "label_fraction")), []).append(g)
    for g in groups:
        base = baseline_for(g, baselines.get(tuple(g[k] for k in ("arch", "encoder", "size", "label_fraction")), []))
        g["delta_dice"] = (
            None
            if g["method"] == BASELINE or base is None or g["dice_mean"] is None or base["dice_mean"] is None
            else g["dice_mean"] - base["dice_mean"]
        )
    return sorted(groups, key=setting_order)


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return NONE
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def _fraction(f: float) -> str:
    return f"{100 * f:g} %"


def model_label(g: dict[str, Any]) -> str:
    return f"{g['arch']}/{g['encoder']} {g['size']} px"


def display_table(groups: Sequence[dict[str, Any]], classes: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Column names and display strings of the summary (the Markdown and the on-screen table); a
    ``variant`` column after ``scope`` only where some setting has variants."""
    variants = any(g.get("variant") for g in groups)
    columns = [
        "model",
        "labels",
        "method",
        "data",
        "scope",
        *(["variant"] if variants else []),
        "n",
        "Dice",
        "Δ Dice",
        "IoU",
        *(f"Dice {c}" for c in classes),
    ]
    table = []
    for g in groups:
        baseline = g["method"] == BASELINE
        if baseline:
            delta = "baseline"
        else:
            delta = NONE if g["delta_dice"] is None else f"{round(g['delta_dice'], 3) + 0.0:+.3f}"  # no "-0.000"
        table.append(
            [
                model_label(g),
                _fraction(g["label_fraction"]),
                g["method"],
                NONE if baseline else g["data"],
                NONE if baseline else g["scope"],
                *([g.get("variant") or NONE] if variants else []),
                str(g["n"]),
                _pm(g["dice_mean"], g["dice_std"]),
                delta,
                _pm(g["iou_mean"], g["iou_std"]),
                *(_pm(g.get(f"dice_{c}_mean"), g.get(f"dice_{c}_std")) for c in classes),
            ]
        )
    return columns, table


# --------------------------------------------------------------------------- files


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}" if math.isfinite(value) else ""
    return value


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """A CSV with ``columns`` (``None``/NaN as empty cells, floats with 6 decimals), atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def markdown(result: ReportResult, roots: Sequence[str], figures: Sequence[str]) -> str:
    """report.md: one table per model and input size, then the figures and the problems."""
    evaluated = sum(1 for r in result.runs if r["dice"] is not None)
    lines = [
        "# mosl report",
        "",
        f"{len(result.runs)} finetune runs ({evaluated} with test figures) under: "
        f"{', '.join(f'`{r}`' for r in roots)}.",
        "",
        "Values are means ± sample standard deviations over the n seeds of each run's mean over the test cases; "
        "one seed shows its value alone. **data** and **scope** are the pre-training's (`mosl pretrain --data`, "
        "`--scope`). **Dice** and **IoU** pool the benign and malignant cases (the lesion score; "
        "all cases where an evaluation has neither class), then Dice per class. **Δ Dice** is the "
        "difference from the supervised baseline (random initialisation, `--init none`) at the same model, input "
        "size and label fraction. Every run is listed in `runs.csv`; these rows are in `summary.csv`.",
    ]
    if "variant" in result.columns:
        lines[-1] += (
            " **variant** names the options whose values differ between runs of one setting (`pretrain …`: "
            "the pre-training's); where several differ, an arm lists only those where it departs from the "
            "value most arms share, and the arm that departs in none is `reference`. Δ Dice is taken against "
            "the baseline with the same finetune options where the baselines differ."
        )
    columns = result.columns[1:]
    section = None
    for row in result.table:
        if row[0] != section:
            section = row[0]
            lines += [
                "",
                f"## {section}",
                "",
                _md_row(columns),
                _md_row(
                    ["---:" if c in ("labels", "n") or c.startswith(("Dice", "Δ", "IoU")) else "---" for c in columns]
                ),
            ]
        lines.append(_md_row(row[1:]))
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    if result.problems:
        lines += ["", "## Problems (left out)", ""] + [f"- {p}" for p in result.problems]
    return "\n".join(lines) + "\n"
