"""Published encoder weights for ``mosl finetune --init imagenet`` (and smp's other names: ssl, swsl, …).

The weight file is fetched the way smp itself does (``hf_hub_download`` of the encoder's pinned
``smp-hub/<encoder>.<name>`` revision), so it lands in, and is read from, the Hugging Face cache
(``$HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``); nothing is downloaded when it is there.
It is loaded into the encoder by name like any external checkpoint (:func:`models.load_into`): the
first convolution's RGB filters are summed for grey scans, and the key report says what was loaded.
Offline (or ``HF_HUB_OFFLINE=1``) with an empty cache the result is one :class:`MoslError` line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from mosl_cli.errors import MoslError

WEIGHT_FILE = "model.safetensors"


def _settings() -> dict[str, dict[str, Any]]:
    import segmentation_models_pytorch.encoders as encoders

    return {name: entry.get("pretrained_settings", {}) for name, entry in encoders.encoders.items()}


def weight_names(encoder: str) -> list[str]:
    """The published weight names smp knows for ``encoder`` (``[]`` for none or an unknown encoder)."""
    return sorted(_settings().get(encoder, {}))


def is_weight_name(init: str) -> bool:
    """Whether ``init`` names published weights of some smp encoder (imagenet, ssl, swsl, …)."""
    return any(init in names for names in _settings().values())


def check_weight_name(init: str, encoder: str) -> None:
    """:class:`MoslError` when ``encoder`` has no published weights called ``init``."""
    names = weight_names(encoder)
    if init not in names:
        have = ", ".join(names) if names else "none"
        raise MoslError(
            f"--init {init}: smp publishes no such weights for --encoder {encoder} (it has: {have}); "
            "pick one of those, another encoder, or pass a weight file"
        )


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """Silence huggingface_hub's retry warnings: the failure is reported once, by us."""
    log = logging.getLogger("huggingface_hub")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def fetch(encoder: str, name: str) -> Path:
    """The cached (or freshly downloaded) weight file of ``encoder``'s published ``name`` weights."""
    from huggingface_hub import constants, hf_hub_download

    check_weight_name(name, encoder)
    settings = _settings()[encoder][name]
    repo, revision = settings["repo_id"], settings["revision"]
    try:
        with _quiet_hub():
            return Path(hf_hub_download(repo, filename=WEIGHT_FILE, revision=revision))
    except Exception as exc:  # noqa: BLE001 - offline, DNS, HTTP and cache errors are the same user error
        where = (
            Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots" / revision / WEIGHT_FILE
        )
        raise MoslError(
            f"--init {name}: cannot download {repo} ({type(exc).__name__}: offline?); run once with "
            f"internet access, or place its {WEIGHT_FILE} at {where}"
        ) from None


def load_published(model: nn.Module, encoder: str, name: str) -> dict[str, Any]:
    """Load ``encoder``'s published ``name`` weights into ``model.encoder``; the init description."""
    from mosl_cli.models import load_into

    path = fetch(encoder, name)
    report = load_into(model, path)
    return {"init": name, "source": _settings()[encoder][name]["repo_id"], "file": str(path), "load": report.summary()}


__all__ = ["weight_names", "is_weight_name", "check_weight_name", "fetch", "load_published"]
