"""Variants: short names for the arms of one setting that differ in other options (``pretrain epochs=30``)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mosl_cli.config import FinetuneConfig, PretrainConfig
from mosl_cli.report.runs import _init_of, pretrain_config

SETTING_KEYS: tuple[str, ...] = ("arch", "encoder", "size", "label_fraction", "method", "data", "scope")
REFERENCE = "reference"  # the variant name of the arm that keeps every varying option at its most common value
SERIES_KEYS: tuple[str, ...] = tuple(k for k in SETTING_KEYS if k != "label_fraction")  # one plot line per series
PRETRAIN_PREFIX = "pretrain "  # variant options of the pre-training read "pretrain epochs=30"
# Options that never make a variant: the setting itself, seeds, files and speed-only switches.
PRETRAIN_IGNORED = frozenset(
    {"method", "data", "scope", "device", "amp", "channels_last", "out", "resume", "overwrite"}
)
FINETUNE_IGNORED = frozenset(
    {*SETTING_KEYS, "seed", "data", "init", "device", "amp", "channels_last", "out", "resume", "overwrite"}
)


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
