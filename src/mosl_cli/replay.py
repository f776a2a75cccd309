"""``--config RUN/config.json``: a run's settings as the defaults of a new ``pretrain`` / ``finetune``.

The settings dataclass saved in ``config.json`` is translated back into command-line parameter names
(``amp`` → ``--no-amp``, ``crop_scale`` → ``--crop-min`` …) and handed to click as its default map,
so any option given on the command line overrides the file. Not replayed: ``--out``, ``--resume``,
``--overwrite`` (where and how this run writes). ``--init auto`` replays what it resolved to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mosl_cli.errors import MoslError

NOT_REPLAYED = frozenset({"out", "resume", "overwrite", "channels_last"})
NEGATED = {
    "amp": "no_amp",
    "augment": "no_augment",
    "postprocess": "no_postprocess",
}  # config field → the CLI flag that switches it off


def read_run_config(path: str | Path, command: str) -> dict[str, Any]:
    """The ``config.json`` document of a ``command`` run; :class:`MoslError` naming the file otherwise."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MoslError(f"{path}: not a readable config.json ({exc}); pass the config.json of a mosl run") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise MoslError(f"{path}: no run settings in it; pass the config.json a mosl {command} run wrote")
    if doc.get("command") != command:
        raise MoslError(
            f"{path}: written by `mosl {doc.get('command')}`, not `mosl {command}`; pass a {command} run's config.json"
        )
    return doc


def cli_defaults(doc: dict[str, Any], params: set[str]) -> dict[str, Any]:
    """Parameter name → value for the command's parameters ``params`` (those it has)."""
    cfg, out = dict(doc["config"]), {}
    if cfg.get("init") == "auto":  # replay what auto found, not a new search
        resolved = (doc.get("resolved") or {}).get("init")
        cfg["init"] = resolved.get("init", "auto") if isinstance(resolved, dict) else "auto"
    for key, value in cfg.items():
        if key in NOT_REPLAYED or value is None:
            continue
        if key in NEGATED:
            key, value = NEGATED[key], not value
        elif key == "crop_scale":
            key, value = "crop_min", value[0]
        elif key == "data_weights":
            value = ",".join(f"{w:g}" for w in value)
        if key in params:
            out[key] = value
    return out


__all__ = ["read_run_config", "cli_defaults", "NOT_REPLAYED"]
