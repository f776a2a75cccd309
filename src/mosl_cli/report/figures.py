"""The figures: test Dice against label fraction (``dice_vs_labels.png``) and the mask grid (``masks.png``).

matplotlib is imported inside the functions (it is an optional extra), torch only by the mask grid.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mosl_cli.config import ReportConfig
from mosl_cli.errors import MoslError
from mosl_cli.fsutil import atomic_path
from mosl_cli.names import WEIGHTS_FILE
from mosl_cli.report.runs import BASELINE, LESION_CLASSES
from mosl_cli.report.tables import ReportResult, _fraction, _series_order, model_label

PLOT_FILE = "dice_vs_labels.png"
MASKS_FILE = "masks.png"
BASELINE_STYLES = (("black", "--"), ("dimgray", ":"), ("gray", "-."))  # colour, line style of each baseline series
MAX_SERIES = 8  # lines per panel of dice_vs_labels.png; more are spread over several panels
SeriesKey = tuple[str, str, str, str]  # method, data, scope, variant: one line of dice_vs_labels.png
MATPLOTLIB_MISSING = "matplotlib is not installed: tables written, no figures (pip install 'mosl-cli[report]')"


def _series_label(method: str, data: str, scope: str, variant: str = "") -> str:
    label = "supervised (random init)" if method == BASELINE else f"{method} · {data} · {scope}"
    return f"{label} · {variant}" if variant else label


def save_png(fig: Any, path: str | Path, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG atomically: a reader never sees half a file."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def panel_series(keys: Sequence[SeriesKey], max_series: int = MAX_SERIES) -> list[list[SeriesKey]]:
    """The series of one model and size split into panels of at most ``max_series`` lines: all of them
    in one panel when they fit, else the pre-trained series in sort order over as few panels as hold
    them, evenly, each panel with every baseline series drawn too (the reference for its arms)."""
    if len(keys) <= max_series:
        return [list(keys)]
    baselines = [k for k in keys if k[0] == BASELINE]
    others = [k for k in keys if k[0] != BASELINE]
    room = max(1, max_series - len(baselines))
    n = math.ceil(len(others) / room)
    size = math.ceil(len(others) / n)
    return [baselines + others[i : i + size] for i in range(0, len(others), size)]


def plot_dice_vs_fraction(groups: Sequence[dict[str, Any]], path: Path, max_series: int = MAX_SERIES) -> None:
    """Test Dice (mean ± std over seeds) against label fraction, one line per method × data × scope
    (× variant), one panel per model and input size, one legend below them. Needs matplotlib.

    A model and size with more than ``max_series`` series gets several panels (see :func:`panel_series`),
    each with its own legend and the same Dice axis, so that no panel holds more lines than can be told apart."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    def key_of(g: dict[str, Any]) -> SeriesKey:
        return (g["method"], g["data"], g["scope"], g.get("variant", ""))

    plotted = [g for g in groups if g["dice_mean"] is not None]
    keys = sorted({key_of(g) for g in plotted}, key=lambda k: (*_series_order(*k[:3]), k[3]))
    sections = list(dict.fromkeys(model_label(g) for g in groups))
    in_section = {s: {key_of(g) for g in plotted if model_label(g) == s} for s in sections}
    panels = [
        (s, chunk) for s in sections for chunk in panel_series([k for k in keys if k in in_section[s]], max_series)
    ]
    split = len(panels) > len(sections)
    baselines = [k for k in keys if k[0] == BASELINE]  # several when their finetune options differ (e.g. --epochs)
    baseline_style = {k: BASELINE_STYLES[i % len(BASELINE_STYLES)] for i, k in enumerate(baselines)}
    if split:  # colours repeat from panel to panel; within a panel they stay distinct
        palette = colormaps["tab10"].colors
        colours = {}
        for _, chunk in panels:
            for i, k in enumerate(k for k in chunk if k not in baseline_style):
                colours.setdefault(k, palette[i % len(palette)])
    else:
        palette = colormaps["tab10" if len(keys) <= 10 else "tab20"].colors  # distinct colours for up to 20 series
        colours = {k: palette[i % len(palette)] for i, k in enumerate(keys)}
    colours.update({k: style[0] for k, style in baseline_style.items()})
    labels = {k: textwrap.fill(_series_label(*k), 60 if split else 90) for k in keys}
    if split:
        ncols = min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        legend_lines = max(sum(labels[k].count("\n") + 1 for k in chunk) for _, chunk in panels)
        fig = Figure(figsize=(6.0 * ncols, (3.6 + 0.2 * legend_lines) * nrows), layout="constrained")
        grid = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        axes = [ax for row in grid for ax in row]
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
    else:
        legend_lines = sum(labels[k].count("\n") + 1 for k in keys)
        fig = Figure(figsize=(6.0 * len(sections), 4.0 + 0.2 * legend_lines), layout="constrained")
        axes = list(fig.subplots(1, len(sections), squeeze=False)[0])
    handles: dict[SeriesKey, Any] = {}
    parts = {section: sum(1 for s, _ in panels if s == section) for section in sections}
    seen: dict[str, int] = {}
    for ax, (section, chunk) in zip(axes, panels):
        series: dict[SeriesKey, list[dict[str, Any]]] = {}
        for g in groups:
            if model_label(g) == section and g["dice_mean"] is not None and key_of(g) in chunk:
                series.setdefault(key_of(g), []).append(g)
        fractions: set[float] = set()
        panel_handles = {}
        for i, key in enumerate(k for k in chunk if k in series):
            points = sorted(series[key], key=lambda g: g["label_fraction"])
            fractions.update(g["label_fraction"] for g in points)
            shift = 1.0 + 0.02 * (i - (len(series) - 1) / 2)  # side by side, so the error bars stay readable
            panel_handles[key] = handles[key] = ax.errorbar(
                [g["label_fraction"] * shift for g in points],
                [g["dice_mean"] for g in points],
                yerr=[g["dice_std"] or 0.0 for g in points],
                marker="o",
                capsize=3,
                color=colours[key],
                linestyle=baseline_style[key][1] if key in baseline_style else "-",
            )
        ax.set_xscale("log")
        ticks = sorted(fractions)
        ax.set_xticks(ticks, labels=[_fraction(f) for f in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("labelled training images")
        lesion = all(g["dice_group"] == "lesion" for g in groups if model_label(g) == section)
        ax.set_ylabel("test Dice (benign + malignant)" if lesion else "test Dice")
        ax.yaxis.set_tick_params(labelleft=True)
        seen[section] = seen.get(section, 0) + 1
        ax.set_title(f"{section} ({seen[section]}/{parts[section]})" if parts[section] > 1 else section)
        ax.grid(alpha=0.3)
        if split:
            ax.legend(
                list(panel_handles.values()),
                [labels[k] for k in panel_handles],
                loc="upper center",
                bbox_to_anchor=(0.5, -0.16),
                fontsize="small",
            )
    if not split:
        shown = [k for k in keys if k in handles]
        fig.legend(
            [handles[k] for k in shown], [labels[k] for k in shown], loc="outside lower center", fontsize="small"
        )
    save_png(fig, path)


def choose_grid_models(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run per method × data × scope for the mask grid: the lowest seed (0 in a grid), then the
    largest label fraction, then the largest input size, among runs whose weight file exists."""
    best: dict[tuple[str, str, str], tuple[tuple[Any, ...], dict[str, Any]]] = {}
    for r in rows:
        if not (Path(r["run"]) / WEIGHTS_FILE).is_file():
            continue
        key = (r["method"], r["data"], r["scope"])
        rank = (r["seed"], -r["label_fraction"], -r["size"], r["run"])
        if key not in best or rank < best[key][0]:
            best[key] = (rank, r)
    return [best[k][1] for k in sorted(best, key=lambda k: _series_order(*k))]


def _spread(items: Sequence[int], k: int) -> list[int]:
    """``k`` items evenly spaced over ``items`` (all of them when there are no more than ``k``)."""
    if len(items) <= k:
        return list(items)
    if k == 1:
        return [items[len(items) // 2]]
    return [items[round(j * (len(items) - 1) / (k - 1))] for j in range(k)]


def pick_cases(ds: Any, split: str, per_class: int) -> list[int]:
    """``per_class`` benign and ``per_class`` malignant labelled cases of ``split``, evenly spread;
    for a dataset without those classes, ``2 · per_class`` cases that have a lesion."""
    idx = ds.indices(split, labelled=True)
    picked: list[int] = []
    for cls in LESION_CLASSES:
        picked += _spread([i for i in idx if ds.records[i].get("class") == cls], per_class)
    if not picked and ds.masks is not None:
        picked = _spread([i for i in idx if bool(ds.masks[i].any())], 2 * per_class)
    return picked


def predict_masks(weights: Path, ds: Any, cases: list[int], threshold: float, tta: bool) -> tuple[Any, Any]:
    """Bool masks ``[K, 1, S, S]`` of one model for ``cases`` (at the dataset's size) and their Dice,
    float64 ``[K]``."""
    import torch

    from mosl_cli.device import resolve_device
    from mosl_cli.inference import model_probabilities, prepare_model
    from mosl_cli.metrics import confusion, dice
    from mosl_cli.models import model_from_file

    device = resolve_device("auto")
    model, meta = model_from_file(weights, device)
    model = prepare_model(model, meta, weights, device)
    if int(meta["in_channels"]) != ds.channels:
        raise MoslError(f"{weights}: a {meta['in_channels']}-channel model but {ds.path} has {ds.channels} channels")
    sel = torch.tensor(cases, dtype=torch.long)
    pred = (model_probabilities(model, ds.images[sel].to(device), meta, tta=tta) > threshold).cpu()
    target = ds.masks[sel] > 0
    return pred, dice(*confusion(pred, target)[:3])


def plot_mask_grid(models: Sequence[dict[str, Any]], per_class: int, path: Path) -> list[str]:
    """``masks.png``: one row per test case, columns scan | ground truth | each model's mask (its
    case Dice in the corner). The dataset and split are those the first model was evaluated on.
    Returns notes on what was left out. Needs matplotlib."""
    from matplotlib.figure import Figure

    from mosl_cli.data.store import load_dataset

    notes: list[str] = []
    first = models[0]
    ds = load_dataset(first["data_path"])
    if ds.masks is None:
        raise MoslError(f"{first['data_path']}: the dataset has no masks")
    cases = pick_cases(ds, first["split"] or "test", per_class)
    if not cases:
        raise MoslError(f"{first['data_path']}: no labelled {first['split'] or 'test'} case with a lesion")
    columns: list[tuple[str, Any, Any]] = []
    for m in models:
        try:
            pred, scores = predict_masks(Path(m["run"]) / WEIGHTS_FILE, ds, cases, m["threshold"], bool(m["tta"]))
        except MoslError as exc:
            notes.append(f"mask grid: {m['run']} left out ({exc})")
            continue
        title = "supervised" if m["method"] == BASELINE else f"{m['method']}\n{m['data']} · {m['scope']}"
        columns.append((f"{title}\n{_fraction(m['label_fraction'])}, {m['size']} px", pred, scores))
    cell = 1.7
    ncols = 2 + len(columns)
    fig = Figure(figsize=(cell * ncols, cell * len(cases) + 0.8), layout="constrained")
    axes = fig.subplots(len(cases), ncols, squeeze=False)
    for r, i in enumerate(cases):
        image = ds.images[i]
        scan = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
        panels = [(scan, "gray", 255, None), (ds.masks[i, 0].numpy(), "gray", 1, None)]
        panels += [(pred[r, 0].numpy(), "gray", 1, float(scores[r])) for _, pred, scores in columns]
        for c, (picture, cmap, vmax, score) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(picture, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if score is not None:
                ax.text(
                    0.04,
                    0.96,
                    f"{score:.2f}",
                    transform=ax.transAxes,
                    ha="left",
                    va="top",
                    fontsize=8,
                    color="yellow",
                    bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0},
                )
        axes[r][0].set_ylabel(f"{ds.records[i].get('class')}\n{ds.records[i]['id']}", fontsize=7)
    for c, title in enumerate(["scan", "ground truth", *(t for t, _, _ in columns)]):
        axes[0][c].set_title(title, fontsize=7)
    save_png(fig, path)
    return notes


def _figures(result: ReportResult, cfg: ReportConfig) -> list[str]:
    """Write the PNG figures it can; their file names. Reasons for any left out go to ``result.notes``."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        result.notes.append(MATPLOTLIB_MISSING)
        return []
    names = []
    if result.groups:
        plot_dice_vs_fraction(result.groups, result.out / PLOT_FILE)
        names.append(PLOT_FILE)
    models = choose_grid_models([r for r in result.runs if r["dice"] is not None])
    if cfg.cases > 0 and models:
        try:
            result.notes += plot_mask_grid(models, cfg.cases, result.out / MASKS_FILE)
            names.append(MASKS_FILE)
        except MoslError as exc:
            result.notes.append(f"no mask grid: {exc}")
    return names
