"""Finding finetune runs and evaluate outputs under the folders given, and what each run is: one row of runs.csv."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosl_cli.errors import MoslError
from mosl_cli.names import CONFIG_FILE, DATA_TAG_FILE, METRICS_FILE, WEIGHTS_FILE
from mosl_cli.names import METRICS_FORMAT as EVAL_FORMAT

BASELINE = "supervised"
LESION_CLASSES = ("benign", "malignant")  # metrics.LESION_CLASSES: the paper's lesion score pools these
RUN_COLUMNS: tuple[str, ...] = (
    "run",
    "method",
    "data",
    "scope",
    "variant",
    "init",
    "arch",
    "encoder",
    "size",
    "label_fraction",
    "seed",
    "labelled",
    "epochs_run",
    "best_epoch",
    "val_dice",
    "eval",
    "split",
    "tta",
    "n_test",
    "dice_group",
    "dice",
    "iou",
    "hd95",
    "dice_all",
    "iou_all",
)


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
            raise MoslError(
                f"{root}: no such folder; "
                "pass finetune run folders or a folder holding them (e.g. a paper_grid.sh workdir)"
            )
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
                problems.append(
                    f"{cfg_path.parent}: {exc}; "
                    "run left out (an unfinished run continues with `mosl finetune --resume`)"
                )
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
            if doc.get("format") != EVAL_FORMAT or ("pred" in doc and "model" not in doc):
                continue  # not an evaluation, or mask folders scored by `evaluate --pred` (no run to attach)
            if not isinstance(doc.get("model"), str) or not isinstance(doc.get("summary"), dict):
                problems.append(
                    f"{metrics_path.parent}: metrics.json lacks `model` or `summary`; "
                    "evaluation left out (run `mosl evaluate` again)"
                )
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
            problems.append(
                f"{folder}: evaluates {doc['model']}, which belongs to no finetune run found; evaluation left out"
            )
            continue
        candidates.setdefault(run, []).append((folder, doc))
    chosen = {
        run: min(docs, key=lambda fd: (fd[1].get("split") != "test", bool(fd[1].get("tta")), str(fd[0])))
        for run, docs in candidates.items()
    }
    for run in found.finetunes:
        if run not in chosen:
            problems.append(
                f"{run}: no evaluation found; run `mosl evaluate --model {run / WEIGHTS_FILE} --out {run / 'eval'}`"
            )
        elif chosen[run][1].get("split") != "test":
            problems.append(
                f"{run}: evaluated on the {chosen[run][1].get('split')} split only, not test; "
                "its test columns come from that split"
            )
    return chosen, problems


# --------------------------------------------------------------------------- what each run is


def data_name(run_dir: Path | None, data_paths: Iterable[Any]) -> str:
    """The pre-training data's name: ``data_tag.txt`` in the pre-train run folder, else the folder names
    joined by ``+``."""
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
    info = {
        "init": init,
        "method": str(resolved_init.get("method") or "external"),
        "data": "unknown",
        "scope": str(resolved_init.get("scope") or "unknown"),
    }
    c = pretrain_config(weights)
    if c is not None:
        info.update(
            method=str(c.get("method")), scope=str(c.get("scope")), data=data_name(weights.parent, c.get("data") or ())
        )
    elif weights.is_file():
        from mosl_cli.models import read_metadata  # imports torch; only reached for bare weight files

        try:
            meta = read_metadata(weights)
        except MoslError:  # another project's checkpoint: named by its file
            info["data"] = weights.name
        else:
            data = meta.get("data") or ()
            info.update(
                method=str(meta.get("method") or info["method"]),
                scope=str(meta.get("scope") or info["scope"]),
                data=data_name(weights.parent, data if isinstance(data, list) else [data]),
            )
    if cache is not None:
        cache[init] = info
    return info


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


def run_row(
    run: Path,
    cfg_doc: dict[str, Any],
    metrics: dict[str, Any],
    evaluation: tuple[Path, dict[str, Any]] | None,
    pretraining: dict[str, str],
    options: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One runs.csv row: the setting, training figures and test figures of a finetune run.

    ``options`` (see :func:`options_of`) are kept for :func:`assign_variants`, which sets ``variant``.

    ``dice``/``iou``/``hd95`` are the lesion group's (benign + malignant) means, or all cases' where the
    evaluation has no lesion group (``dice_group`` says which); ``dice_<class>``/``iou_<class>`` per class.
    """
    c, resolved = cfg_doc["config"], cfg_doc.get("resolved") or {}
    row: dict[str, Any] = {
        "run": str(run),
        **{k: pretraining[k] for k in ("method", "data", "scope", "init")},
        "variant": "",
        "options": dict(options or {}),
        "arch": str(resolved.get("arch") or c.get("arch")),
        "encoder": str(resolved.get("encoder") or c.get("encoder")),
        "size": int(c.get("size", 0)),
        "label_fraction": float(c.get("label_fraction", 1.0)),
        "seed": int(c.get("seed", 0)),
        "labelled": metrics.get("labelled_train"),
        "epochs_run": metrics.get("epochs_run"),
        "best_epoch": metrics.get("best_epoch"),
        "val_dice": _number(metrics.get("best_val_dice")),
        "eval": "",
        "split": "",
        "tta": "",
        "n_test": None,
        "dice_group": "",
        "dice": None,
        "iou": None,
        "hd95": None,
        "dice_all": None,
        "iou_all": None,
        "data_path": str(c.get("data", "")),
        "threshold": 0.5,
    }
    if evaluation is None:
        return row
    folder, doc = evaluation
    headline = doc.get("lesion") if isinstance(doc.get("lesion"), dict) else doc["summary"]
    row.update(
        eval=str(folder),
        split=str(doc.get("split", "")),
        tta=bool(doc.get("tta")),
        n_test=headline.get("n"),
        dice_group="lesion" if headline is doc.get("lesion") else "all",
        dice=_mean_of(headline, "dice"),
        iou=_mean_of(headline, "iou"),
        hd95=_mean_of(headline, "hd95"),
        dice_all=_mean_of(doc["summary"], "dice"),
        iou_all=_mean_of(doc["summary"], "iou"),
        data_path=str(doc.get("data") or row["data_path"]),
        threshold=float(doc.get("threshold", 0.5)),
    )
    for name, group in (doc.get("per_class") or {}).items():
        row[f"dice_{name}"] = _mean_of(group, "dice")
        row[f"iou_{name}"] = _mean_of(group, "iou")
    return row


def class_names(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Classes with per-class columns: benign and malignant first, then the others by name."""
    seen = {k[5:] for r in rows for k in r if k.startswith("dice_") and k != "dice_all" and k != "dice_group"}
    return [c for c in LESION_CLASSES if c in seen] + sorted(seen - set(LESION_CLASSES))
