"""``mosl report``: the study's tables and figures from many finetune and evaluate run folders.

Every folder given is searched recursively for

- finetune runs: a ``config.json`` with ``command: "finetune"`` and the run's ``metrics.json``;
- evaluate outputs: a ``metrics.json`` with ``format: "mosl-metrics"``. Each is matched to the finetune
  run whose ``model.safetensors`` it scored (its ``model`` path, taken relative to the current folder
  when not absolute) or else to the run folder it lies in (``RUN/eval/``, as ``scripts/paper_grid.sh``
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
``reference`` for the arm that departs in none (see :func:`assign_variants`). Each variant is its own row, line and Δ Dice.

Written into ``--out``: ``runs.csv`` (one row per finetune run), ``summary.csv`` and ``report.md``
(mean ± std over seeds per setting, Δ Dice against the supervised baseline at the same model, size and
label fraction), and, when matplotlib is installed, ``dice_vs_labels.png`` (test Dice against label
fraction per method and pre-training data) and ``masks.png`` (scan | ground truth | each model's mask
for a few benign and malignant test cases, like the paper's figures). A run folder whose files are
missing or unreadable is named in ``problems`` and left out; the rest still comes out.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosl_cli.config import WEIGHTS_FILE, FinetuneConfig, PretrainConfig, ReportConfig
from mosl_cli.errors import MoslError
from mosl_cli.fsutil import atomic_path, write_text

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
EVAL_FORMAT = "mosl-metrics"  # evaluate.METRICS_FORMAT (not imported: it would import torch)
DATA_TAG_FILE = "data_tag.txt"
RUNS_CSV = "runs.csv"
SUMMARY_CSV = "summary.csv"
MARKDOWN_FILE = "report.md"
PLOT_FILE = "dice_vs_labels.png"
MASKS_FILE = "masks.png"
BASELINE = "supervised"
BASELINE_STYLES = (("black", "--"), ("dimgray", ":"), ("gray", "-."))  # colour, line style of each baseline series
NONE = "–"
LESION_CLASSES = ("benign", "malignant")  # metrics.LESION_CLASSES: the paper's lesion score pools these
MATPLOTLIB_MISSING = "matplotlib is not installed: tables written, no figures (pip install 'mosl-cli[report]')"

RUN_COLUMNS: tuple[str, ...] = (
    "run", "method", "data", "scope", "variant", "init", "arch", "encoder", "size", "label_fraction", "seed",
    "labelled", "epochs_run", "best_epoch", "val_dice", "eval", "split", "tta", "n_test",
    "dice_group", "dice", "iou", "hd95", "dice_all", "iou_all",
)
SETTING_KEYS: tuple[str, ...] = ("arch", "encoder", "size", "label_fraction", "method", "data", "scope")
REFERENCE = "reference"  # the variant name of the arm that keeps every varying option at its most common value
SERIES_KEYS: tuple[str, ...] = tuple(k for k in SETTING_KEYS if k != "label_fraction")  # one plot line per series
PRETRAIN_PREFIX = "pretrain "  # variant options of the pre-training read "pretrain epochs=30"
# Options that never make a variant: the setting itself, seeds, files and speed-only switches.
PRETRAIN_IGNORED = frozenset({"method", "data", "scope", "device", "amp", "channels_last", "out", "resume", "overwrite"})
FINETUNE_IGNORED = frozenset({*SETTING_KEYS, "seed", "data", "init", "device", "amp", "channels_last", "out", "resume", "overwrite"})


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


# --------------------------------------------------------------------------- finding runs


@dataclass
class FoundRuns:
    """Finetune runs (folder → config.json and metrics.json documents) and evaluate outputs (folder → metrics.json)."""

    finetunes: dict[Path, tuple[dict[str, Any], dict[str, Any]]]
    evals: dict[Path, dict[str, Any]]
    problems: list[str]


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ``ValueError`` naming what is wrong otherwise."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no {path.name}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable {path.name} ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return doc


def find_runs(paths: Sequence[str | Path]) -> FoundRuns:
    """Search ``paths`` recursively for finetune runs and evaluate outputs.

    Raises :class:`MoslError` for a path that does not exist. Broken folders become ``problems``.
    """
    finetunes: dict[Path, tuple[dict[str, Any], dict[str, Any]]] = {}
    evals: dict[Path, dict[str, Any]] = {}
    problems: list[str] = []
    config_dirs: set[Path] = set()
    metrics_dirs: set[Path] = set()
    for root in map(Path, paths):
        if not root.exists():
            raise MoslError(f"{root}: no such folder; pass finetune run folders or a folder holding them (e.g. a paper_grid.sh workdir)")
        for cfg_path in sorted(root.rglob(CONFIG_FILE)):
            folder = cfg_path.parent.resolve()
            if folder in config_dirs:
                continue
            config_dirs.add(folder)
            try:
                cfg = _read_json(cfg_path)
            except ValueError as exc:
                problems.append(f"{cfg_path.parent}: {exc}; run left out")
                continue
            if cfg.get("command") != "finetune":
                continue
            if not isinstance(cfg.get("config"), dict):
                problems.append(f"{cfg_path.parent}: config.json has no `config` settings; run left out")
                continue
            try:
                metrics = _read_json(cfg_path.parent / METRICS_FILE)
            except ValueError as exc:
                problems.append(f"{cfg_path.parent}: {exc}; run left out (an unfinished run continues with `mosl finetune --resume`)")
                continue
            finetunes[folder] = (cfg, metrics)
        for metrics_path in sorted(root.rglob(METRICS_FILE)):
            folder = metrics_path.parent.resolve()
            if folder in config_dirs or folder in metrics_dirs:
                continue  # a run's own metrics.json (handled above), or one already read
            metrics_dirs.add(folder)
            try:
                doc = _read_json(metrics_path)
            except ValueError as exc:
                problems.append(f"{metrics_path.parent}: {exc}; evaluation left out (run `mosl evaluate` again)")
                continue
            if doc.get("format") != EVAL_FORMAT:
                continue
            if not isinstance(doc.get("model"), str) or not isinstance(doc.get("summary"), dict):
                problems.append(f"{metrics_path.parent}: metrics.json lacks `model` or `summary`; evaluation left out (run `mosl evaluate` again)")
                continue
            evals[folder] = doc
    return FoundRuns(finetunes, evals, problems)


def _absolute(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def match_evaluations(found: FoundRuns) -> tuple[dict[Path, tuple[Path, dict[str, Any]]], list[str]]:
    """For each finetune run folder, its chosen evaluation (folder, metrics.json); problems for the rest."""
    candidates: dict[Path, list[tuple[Path, dict[str, Any]]]] = {}
    problems: list[str] = []
    for folder, doc in found.evals.items():
        run = _absolute(doc["model"]).parent
        if run not in found.finetunes:
            run = next((p for p in folder.parents if p in found.finetunes), run)
        if run not in found.finetunes:
            problems.append(f"{folder}: evaluates {doc['model']}, which belongs to no finetune run found; evaluation left out")
            continue
        candidates.setdefault(run, []).append((folder, doc))
    chosen = {
        run: min(docs, key=lambda fd: (fd[1].get("split") != "test", bool(fd[1].get("tta")), str(fd[0])))
        for run, docs in candidates.items()
    }
    for run in found.finetunes:
        if run not in chosen:
            problems.append(f"{run}: no evaluation found; run `mosl evaluate --model {run / WEIGHTS_FILE} --out {run / 'eval'}`")
        elif chosen[run][1].get("split") != "test":
            problems.append(f"{run}: evaluated on the {chosen[run][1].get('split')} split only, not test; its test columns come from that split")
    return chosen, problems


# --------------------------------------------------------------------------- what each run is


def data_name(run_dir: Path | None, data_paths: Iterable[Any]) -> str:
    """The pre-training data's name: ``data_tag.txt`` in the pre-train run folder, else the folder names joined by ``+``."""
    if run_dir is not None:
        tag = run_dir / DATA_TAG_FILE
        if tag.is_file():
            text = tag.read_text(encoding="utf-8").strip()
            if text:
                return text
    names = []
    for item in data_paths:
        path = item.get("path") if isinstance(item, dict) else item
        if path:
            names.append(Path(str(path)).name or str(path))
    return "+".join(names) or "unknown"


def _init_of(cfg_doc: dict[str, Any]) -> str:
    """The weight file a finetune run started from (as resolved), or ``none``."""
    resolved_init = (cfg_doc.get("resolved") or {}).get("init") or {}
    return str(resolved_init.get("init") or cfg_doc["config"].get("init") or "none")


def pretrain_config(weights: Path) -> dict[str, Any] | None:
    """The ``config`` of the ``mosl pretrain`` run whose ``config.json`` lies beside weight file
    ``weights``; ``None`` when there is none (a bare or external weight file)."""
    try:
        pre = _read_json(weights.parent / CONFIG_FILE)
    except ValueError:
        return None
    return pre["config"] if pre.get("command") == "pretrain" and isinstance(pre.get("config"), dict) else None


def pretraining_of(cfg_doc: dict[str, Any], cache: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """``{"init", "method", "data", "scope"}`` of a finetune run's ``config.json`` document (see module doc)."""
    resolved_init = (cfg_doc.get("resolved") or {}).get("init") or {}
    init = _init_of(cfg_doc)
    if init == "none":
        return {"init": "none", "method": BASELINE, "data": "none", "scope": "none"}
    if cache is not None and init in cache:
        return cache[init]
    weights = Path(init)
    info = {"init": init, "method": str(resolved_init.get("method") or "external"),
            "data": "unknown", "scope": str(resolved_init.get("scope") or "unknown")}
    c = pretrain_config(weights)
    if c is not None:
        info.update(method=str(c.get("method")), scope=str(c.get("scope")), data=data_name(weights.parent, c.get("data") or ()))
    elif weights.is_file():
        from mosl_cli.models import read_metadata  # imports torch; only reached for bare weight files

        try:
            meta = read_metadata(weights)
        except MoslError:  # another project's checkpoint: named by its file
            info["data"] = weights.name
        else:
            data = meta.get("data") or ()
            info.update(method=str(meta.get("method") or info["method"]), scope=str(meta.get("scope") or info["scope"]),
                        data=data_name(weights.parent, data if isinstance(data, list) else [data]))
    if cache is not None:
        cache[init] = info
    return info


def _option_text(value: Any) -> str:
    """An option's value as variant text: ``default`` for ``None``, lists joined by ``/``."""
    if value is None:
        return "default"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "/".join(map(_option_text, value))
    return str(value)


def _options(settings: dict[str, Any], cls: type, ignored: frozenset[str], prefix: str = "") -> dict[str, str]:
    """``settings`` over ``cls``'s defaults (older runs lack newer options) as texts, less ``ignored``."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    return {prefix + k: _option_text(v) for k, v in {**defaults, **settings}.items() if k not in ignored}


def pretrain_options(init: str) -> dict[str, str]:
    """The options of the pre-train run whose ``config.json`` lies beside weight file ``init``, keys
    prefixed ``pretrain ``; empty for ``none`` or a bare weight file."""
    config = None if init == "none" else pretrain_config(Path(init))
    return {} if config is None else _options(config, PretrainConfig, PRETRAIN_IGNORED, PRETRAIN_PREFIX)


def options_of(cfg_doc: dict[str, Any], cache: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """A finetune run's comparable options (option → value text): its pre-training's, then its own,
    without those in :data:`PRETRAIN_IGNORED` / :data:`FINETUNE_IGNORED`."""
    init = _init_of(cfg_doc)
    cache = {} if cache is None else cache
    if init not in cache:
        cache[init] = pretrain_options(init)
    return {**cache[init], **_options(cfg_doc["config"], FinetuneConfig, FINETUNE_IGNORED)}


def variant_text(options: dict[str, str], keys: Iterable[str]) -> str:
    """``key=value`` of ``keys`` joined by ``, ``: pre-training options first, each part sorted by key."""
    ordered = sorted(keys, key=lambda k: (not k.startswith(PRETRAIN_PREFIX), k))
    return ", ".join(f"{k}={options.get(k, 'unknown')}" for k in ordered)


def _differing(groups: Sequence[dict[str, Any]]) -> set[str]:
    """Options whose values differ between ``groups``."""
    names = {k for g in groups for k in g["options"]}
    return {k for k in names if len({g["options"].get(k) for g in groups}) > 1}


def assign_variants(rows: Sequence[dict[str, Any]]) -> None:
    """Set each row's ``variant`` from its ``options``, so that every arm of a series (runs of one setting,
    :data:`SETTING_KEYS`, that differ in other options) keeps one short name and one plot line.

    The options that vary are pooled over a series' label fractions. With one varying option an arm is
    named by its value (``pretrain epochs=30``). With several, each option's reference value is the one
    most arms share (then most runs, then the first in sort order); an arm is named by the options where
    it departs from that (``pretrain epochs=5, pretrain warmup_epochs=1``), and the arm that departs in
    none is ``reference``. ``""`` where nothing varies."""
    settings: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        settings.setdefault(tuple(r[k] for k in SETTING_KEYS), []).append(r)
    series: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    varying: dict[tuple[Any, ...], set[str]] = {}
    for members in settings.values():
        key = tuple(members[0][k] for k in SERIES_KEYS)
        varying.setdefault(key, set()).update(_differing(members))
        series.setdefault(key, []).extend(members)
    for key, members in series.items():
        keys = varying[key]
        reference = _reference_values(members, keys) if len(keys) > 1 else {}
        for r in members:
            departs = [k for k in keys if k not in reference or r["options"].get(k) != reference[k]]
            r["variant"] = variant_text(r["options"], departs) if departs or not keys else REFERENCE


def _reference_values(rows: Sequence[dict[str, Any]], keys: Iterable[str]) -> dict[str, str | None]:
    """Per option in ``keys``: the value most arms (distinct option sets) share, then most runs, then sort order."""
    keys = sorted(keys)
    arms = Counter(tuple(r["options"].get(k) for k in keys) for r in rows)
    reference: dict[str, str | None] = {}
    for i, k in enumerate(keys):
        by_arms: Counter[str | None] = Counter()
        by_runs: Counter[str | None] = Counter()
        for arm, runs in arms.items():
            by_arms[arm[i]] += 1
            by_runs[arm[i]] += runs
        reference[k] = min(by_arms, key=lambda v: (-by_arms[v], -by_runs[v], str(v)))
    return reference


def _number(value: Any) -> float | None:
    """A finite float, else ``None``."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _mean_of(group: dict[str, Any] | None, metric: str) -> float | None:
    if not isinstance(group, dict) or not isinstance(group.get(metric), dict):
        return None
    return _number(group[metric].get("mean"))


def run_row(run: Path, cfg_doc: dict[str, Any], metrics: dict[str, Any], evaluation: tuple[Path, dict[str, Any]] | None,
            pretraining: dict[str, str], options: dict[str, str] | None = None) -> dict[str, Any]:
    """One runs.csv row: the setting, training figures and test figures of a finetune run.

    ``options`` (see :func:`options_of`) are kept for :func:`assign_variants`, which sets ``variant``.

    ``dice``/``iou``/``hd95`` are the lesion group's (benign + malignant) means, or all cases' where the
    evaluation has no lesion group (``dice_group`` says which); ``dice_<class>``/``iou_<class>`` per class.
    """
    c, resolved = cfg_doc["config"], cfg_doc.get("resolved") or {}
    row: dict[str, Any] = {
        "run": str(run), **{k: pretraining[k] for k in ("method", "data", "scope", "init")},
        "variant": "", "options": dict(options or {}),
        "arch": str(resolved.get("arch") or c.get("arch")), "encoder": str(resolved.get("encoder") or c.get("encoder")),
        "size": int(c.get("size", 0)), "label_fraction": float(c.get("label_fraction", 1.0)), "seed": int(c.get("seed", 0)),
        "labelled": metrics.get("labelled_train"), "epochs_run": metrics.get("epochs_run"),
        "best_epoch": metrics.get("best_epoch"), "val_dice": _number(metrics.get("best_val_dice")),
        "eval": "", "split": "", "tta": "", "n_test": None, "dice_group": "", "dice": None, "iou": None, "hd95": None,
        "dice_all": None, "iou_all": None, "data_path": str(c.get("data", "")), "threshold": 0.5,
    }
    if evaluation is None:
        return row
    folder, doc = evaluation
    headline = doc.get("lesion") if isinstance(doc.get("lesion"), dict) else doc["summary"]
    row.update(
        eval=str(folder), split=str(doc.get("split", "")), tta=bool(doc.get("tta")), n_test=headline.get("n"),
        dice_group="lesion" if headline is doc.get("lesion") else "all",
        dice=_mean_of(headline, "dice"), iou=_mean_of(headline, "iou"), hd95=_mean_of(headline, "hd95"),
        dice_all=_mean_of(doc["summary"], "dice"), iou_all=_mean_of(doc["summary"], "iou"),
        data_path=str(doc.get("data") or row["data_path"]), threshold=float(doc.get("threshold", 0.5)),
    )
    for name, group in (doc.get("per_class") or {}).items():
        row[f"dice_{name}"] = _mean_of(group, "dice")
        row[f"iou_{name}"] = _mean_of(group, "iou")
    return row


def class_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Classes with per-class columns: benign and malignant first, then the others by name."""
    seen = {k[5:] for r in rows for k in r if k.startswith("dice_") and k != "dice_all" and k != "dice_group"}
    return [c for c in LESION_CLASSES if c in seen] + sorted(seen - set(LESION_CLASSES))


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
    """Sections by model and size, then label fraction, then the baseline before the pre-trained series, then variant."""
    return (g["arch"], g["encoder"], g["size"], g["label_fraction"], *_series_order(g["method"], g["data"], g["scope"]),
            g.get("variant", ""))


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
        g["delta_dice"] = (None if g["method"] == BASELINE or base is None or g["dice_mean"] is None or base["dice_mean"] is None
                           else g["dice_mean"] - base["dice_mean"])
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
    columns = ["model", "labels", "method", "data", "scope", *(["variant"] if variants else []), "n", "Dice", "Δ Dice", "IoU",
               *(f"Dice {c}" for c in classes)]
    table = []
    for g in groups:
        baseline = g["method"] == BASELINE
        if baseline:
            delta = "baseline"
        else:
            delta = NONE if g["delta_dice"] is None else f"{round(g['delta_dice'], 3) + 0.0:+.3f}"  # no "-0.000"
        table.append([
            model_label(g), _fraction(g["label_fraction"]), g["method"], NONE if baseline else g["data"],
            NONE if baseline else g["scope"], *([g.get("variant") or NONE] if variants else []), str(g["n"]),
            _pm(g["dice_mean"], g["dice_std"]), delta, _pm(g["iou_mean"], g["iou_std"]),
            *(_pm(g.get(f"dice_{c}_mean"), g.get(f"dice_{c}_std")) for c in classes),
        ])
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
        "# mosl report", "",
        f"{len(result.runs)} finetune runs ({evaluated} with test figures) under: {', '.join(f'`{r}`' for r in roots)}.", "",
        "Values are means ± sample standard deviations over the n seeds of each run's mean over the test cases; "
        "one seed shows its value alone. **data** and **scope** are the pre-training's (`mosl pretrain --data`, "
        "`--scope`). **Dice** and **IoU** pool the benign and malignant cases (the lesion score; "
        "all cases where an evaluation has neither class), then Dice per class. **Δ Dice** is the "
        "difference from the supervised baseline (random initialisation, `--init none`) at the same model, input "
        "size and label fraction. Every run is listed in `runs.csv`; these rows are in `summary.csv`.",
    ]
    if "variant" in result.columns:
        lines[-1] += (" **variant** names the options whose values differ between runs of one setting (`pretrain …`: "
                      "the pre-training's); where several differ, an arm lists only those where it departs from the "
                      "value most arms share, and the arm that departs in none is `reference`. Δ Dice is taken against "
                      "the baseline with the same finetune options where the baselines differ.")
    columns = result.columns[1:]
    section = None
    for row in result.table:
        if row[0] != section:
            section = row[0]
            lines += ["", f"## {section}", "", _md_row(columns),
                      _md_row(["---:" if c in ("labels", "n") or c.startswith(("Dice", "Δ", "IoU")) else "---" for c in columns])]
        lines.append(_md_row(row[1:]))
    if figures:
        lines += ["", "## Figures", ""] + [f"![{name}]({name})" for name in figures]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    if result.problems:
        lines += ["", "## Problems (left out)", ""] + [f"- {p}" for p in result.problems]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- figures


def _series_label(method: str, data: str, scope: str, variant: str = "") -> str:
    label = "supervised (random init)" if method == BASELINE else f"{method} · {data} · {scope}"
    return f"{label} · {variant}" if variant else label


def _save_png(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_dice_vs_fraction(groups: Sequence[dict[str, Any]], path: Path) -> None:
    """Test Dice (mean ± std over seeds) against label fraction, one line per method × data × scope
    (× variant), one panel per model and input size, one legend below them. Needs matplotlib."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    def key_of(g: dict[str, Any]) -> tuple[str, str, str, str]:
        return (g["method"], g["data"], g["scope"], g.get("variant", ""))

    keys = sorted({key_of(g) for g in groups if g["dice_mean"] is not None}, key=lambda k: (*_series_order(*k[:3]), k[3]))
    palette = colormaps["tab10" if len(keys) <= 10 else "tab20"].colors  # distinct colours for up to 20 series
    baselines = [k for k in keys if k[0] == BASELINE]  # several when their finetune options differ (e.g. --epochs)
    baseline_style = {k: BASELINE_STYLES[i % len(BASELINE_STYLES)] for i, k in enumerate(baselines)}
    colours = {k: baseline_style[k][0] if k in baseline_style else palette[i % len(palette)] for i, k in enumerate(keys)}
    labels = {k: textwrap.fill(_series_label(*k), 90) for k in keys}
    sections = list(dict.fromkeys(model_label(g) for g in groups))
    legend_lines = sum(labels[k].count("\n") + 1 for k in keys)
    fig = Figure(figsize=(6.0 * len(sections), 4.0 + 0.2 * legend_lines), layout="constrained")
    axes = fig.subplots(1, len(sections), squeeze=False)[0]
    handles: dict[tuple[str, str, str, str], Any] = {}
    for ax, section in zip(axes, sections):
        series: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
        for g in groups:
            if model_label(g) == section and g["dice_mean"] is not None:
                series.setdefault(key_of(g), []).append(g)
        fractions: set[float] = set()
        for i, key in enumerate(k for k in keys if k in series):
            points = sorted(series[key], key=lambda g: g["label_fraction"])
            fractions.update(g["label_fraction"] for g in points)
            shift = 1.0 + 0.02 * (i - (len(series) - 1) / 2)  # side by side, so the error bars stay readable
            handles[key] = ax.errorbar(
                [g["label_fraction"] * shift for g in points], [g["dice_mean"] for g in points],
                yerr=[g["dice_std"] or 0.0 for g in points], marker="o", capsize=3, color=colours[key],
                linestyle=baseline_style[key][1] if key in baseline_style else "-")
        ax.set_xscale("log")
        ticks = sorted(fractions)
        ax.set_xticks(ticks, labels=[_fraction(f) for f in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("labelled training images")
        lesion = all(g["dice_group"] == "lesion" for g in groups if model_label(g) == section)
        ax.set_ylabel("test Dice (benign + malignant)" if lesion else "test Dice")
        ax.set_title(section)
        ax.grid(alpha=0.3)
    shown = [k for k in keys if k in handles]
    fig.legend([handles[k] for k in shown], [labels[k] for k in shown], loc="outside lower center", fontsize="small")
    _save_png(fig, path)


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
    """Bool masks ``[K, 1, S, S]`` of one model for ``cases`` (at the dataset's size) and their Dice, float64 ``[K]``."""
    import torch

    from mosl_cli.device import resolve_device
    from mosl_cli.evaluate import model_probabilities, prepare_model
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
                ax.text(0.04, 0.96, f"{score:.2f}", transform=ax.transAxes, ha="left", va="top", fontsize=8,
                        color="yellow", bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
        axes[r][0].set_ylabel(f"{ds.records[i].get('class')}\n{ds.records[i]['id']}", fontsize=7)
    for c, title in enumerate(["scan", "ground truth", *(t for t, _, _ in columns)]):
        axes[0][c].set_title(title, fontsize=7)
    _save_png(fig, path)
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
        raise MoslError(f"no finetune run found under {', '.join(cfg.runs)}{detail}; pass the folders written by `mosl finetune` or paper_grid.sh")
    chosen, match_problems = match_evaluations(found)
    cache: dict[str, dict[str, str]] = {}
    options_cache: dict[str, dict[str, str]] = {}
    rows = [run_row(run, cfg_doc, metrics, chosen.get(run), pretraining_of(cfg_doc, cache), options_of(cfg_doc, options_cache))
            for run, (cfg_doc, metrics) in found.finetunes.items()]
    assign_variants(rows)
    rows.sort(key=lambda r: (*setting_order(r), r["seed"], r["run"]))
    classes = class_names(rows)
    groups = summarize(rows, classes)
    columns, table = display_table(groups, classes)
    result = ReportResult(out, rows, groups, columns, table, problems=found.problems + match_problems)

    out.mkdir(parents=True, exist_ok=True)
    per_class = [f"{m}_{c}" for c in classes for m in ("dice", "iou")]
    write_csv(out / RUNS_CSV, [*RUN_COLUMNS, *per_class], rows)
    summary_columns = [*SETTING_KEYS, "variant", "n", "seeds", "dice_group", "dice_mean", "dice_std", "delta_dice", "iou_mean", "iou_std",
                       "val_dice_mean", "val_dice_std", *(f"dice_{c}_{s}" for c in classes for s in ("mean", "std"))]
    write_csv(out / SUMMARY_CSV, summary_columns, groups)
    figures = _figures(result, cfg)
    write_text(out / MARKDOWN_FILE, markdown(result, cfg.runs, figures))
    result.files = [out / name for name in (RUNS_CSV, SUMMARY_CSV, MARKDOWN_FILE, *figures)]
    return result


__all__ = [
    "ReportResult", "FoundRuns", "run_report", "find_runs", "match_evaluations", "pretraining_of", "data_name",
    "run_row", "options_of", "assign_variants", "baseline_for", "summarize", "display_table", "mean_std", "plot_dice_vs_fraction", "plot_mask_grid",
    "choose_grid_models", "pick_cases", "RUN_COLUMNS", "DATA_TAG_FILE", "BASELINE",
]
