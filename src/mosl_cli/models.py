"""The smp model factory and mosl's self-describing weight files.

A weight file is a ``.safetensors`` file whose tensor names are smp's module paths
(``encoder.*``, ``decoder.*``, ``segmentation_head.*``) and whose header metadata holds one JSON
document under the key ``"mosl"`` (format tag and version, kind, arch, encoder, in_channels, classes,
size, normalisation, scope, method, data, seed, mosl version). Nothing is ever downloaded
(``encoder_weights=None``) and no pickle is written; external checkpoints are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mosl_cli import __version__
from mosl_cli.errors import MoslError
from mosl_cli.fsutil import atomic_path
from mosl_cli.names import WEIGHTS_FORMAT  # re-exported from here too

WEIGHTS_VERSION = 1
METADATA_KEY = "mosl"
# Fixed intensity normalisation applied after scaling uint8 to [0, 1]; stored in every weight file.
NORMALISATION: dict[str, Any] = {"mean": 0.5, "std": 0.25}
# `mosl finetune --normalisation`: the fixed one, or each image standardised to mean 0, sd 1 (nnU-Net's
# z-score for non-CT images), its std floored at PER_IMAGE_STD_FLOOR (a blank image stays finite)
NORMALISATIONS: dict[str, dict[str, Any]] = {"fixed": NORMALISATION, "image": {"per_image": True}}
PER_IMAGE_STD_FLOOR = 1e-3
LESION_HEAD_DROPOUT = 0.2  # before the lesion-present head's linear layer
DECODER_ATTENTIONS: tuple[str, ...] = ("none", "scse")  # build_model's decoder_attention values
DECODER_ATTENTION_ARCHS: tuple[str, ...] = ("unet", "unetplusplus")  # smp's decoders with ``decoder_attention_type``


def decoder_attention_conflict(arch: str, decoder_attention: str) -> str | None:
    """Why ``arch`` cannot take ``decoder_attention`` (a one-line message), or None when it can."""
    if decoder_attention == "none" or arch in DECODER_ATTENTION_ARCHS:
        return None
    archs = " or ".join(DECODER_ATTENTION_ARCHS)
    return f"--decoder-attention works with --arch {archs}, not {arch!r}; drop one of them"


def build_model(
    arch: str,
    encoder: str,
    in_channels: int,
    classes: int = 1,
    lesion_head: bool = False,
    decoder_attention: str = "none",
) -> nn.Module:
    """An smp segmentation model with random weights (``encoder_weights=None``: no download).

    ``lesion_head`` adds smp's image-level head on the deepest encoder features (``classification_head``:
    average pooling, dropout, linear): the model then returns ``(mask logits [B, classes, H, W],
    lesion-present logit [B, 1])``; :func:`split_outputs` takes either form apart.
    ``decoder_attention="scse"`` adds concurrent spatial and channel squeeze-and-excitation to each
    decoder block (U-Net and UNet++ only).
    """
    import segmentation_models_pytorch as smp

    aux = {"classes": 1, "dropout": LESION_HEAD_DROPOUT} if lesion_head else None
    extra: dict[str, Any] = {}
    if conflict := decoder_attention_conflict(arch, decoder_attention):
        raise MoslError(conflict)
    if decoder_attention != "none":
        extra["decoder_attention_type"] = decoder_attention
    try:
        return smp.create_model(
            arch,
            encoder_name=encoder,
            encoder_weights=None,
            in_channels=in_channels,
            classes=classes,
            aux_params=aux,
            **extra,
        )
    except KeyError as exc:
        raise MoslError(
            f"unknown architecture or encoder ({arch!r}, {encoder!r}): {exc}; see smp's model list"
        ) from exc
    except ValueError as exc:
        raise MoslError(f"cannot build {arch!r} with encoder {encoder!r}: {exc}") from exc


def split_outputs(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A model's output → ``(mask logits [B, 1, H, W], lesion-present logit [B, 1] or None)``."""
    if isinstance(out, (tuple, list)):
        return out[0], out[1]
    return out, None


def has_lesion_head(meta: dict[str, Any]) -> bool:
    """Whether a weight file's model has the image-level lesion-present head."""
    return bool(meta.get("lesion_head", False))


def normalise(images: torch.Tensor, norm: dict[str, Any] | None = None) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` → float32 ``[B, C, H, W]``: scaled to [0, 1], then ``(x - mean) / std``,
    with ``norm["per_image"]`` each image's own mean and std over its channels and pixels."""
    norm = norm or NORMALISATION
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if norm.get("per_image"):
        mean, std = x.mean(dim=(1, 2, 3), keepdim=True), x.std(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / std.clamp_min(PER_IMAGE_STD_FLOOR)
    return (x - norm["mean"]) / norm["std"]


def normalisation_formula(norm: dict[str, Any]) -> str:
    """How ``norm`` maps a uint8 pixel x to the model's input, for model cards: ``(x/255 − 0.5) / 0.25``."""
    if norm.get("per_image"):
        return "y = x/255, then (y − mean(y)) / std(y) over each image's channels and pixels"
    return f"(x/255 − {norm['mean']}) / {norm['std']}"


def weights_metadata(
    *,
    kind: str,
    arch: str,
    encoder: str,
    in_channels: int,
    size: int,
    scope: str,
    classes: int = 1,
    method: str | None = None,
    data: Any = None,
    seed: int | None = None,
    extra: dict[str, Any] | None = None,
    normalisation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document stored in a weight file's header (``kind``: pretrained | segmentation);
    ``normalisation``: one of ``NORMALISATIONS`` (default: the fixed one)."""
    meta: dict[str, Any] = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "kind": kind,
        "arch": arch,
        "encoder": encoder,
        "in_channels": in_channels,
        "classes": classes,
        "size": size,
        "normalisation": dict(normalisation or NORMALISATION),
        "scope": scope,
        "method": method,
        "data": data,
        "seed": seed,
        "mosl_version": __version__,
    }
    meta.update(extra or {})
    return meta


def save_weights(path: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``state`` (smp tensor names) with ``meta`` in the header, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})


# Keys every mosl weight file holds and the steps read, with their JSON types.
REQUIRED_METADATA: dict[str, type] = {"arch": str, "encoder": str, "in_channels": int, "size": int}


def _bad_file(path: Path, exc: BaseException) -> MoslError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return MoslError(f"{path}: not a readable safetensors weight file ({reason}); pass a file written by mosl")


def read_header(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file's header; :class:`MoslError` for a missing, empty,
    truncated or foreign (e.g. pickled) file. The one place that opens weight files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MoslError(
            f"{path}: no such weight file; run `mosl finetune` (or `mosl pretrain`) first or pass another file"
        )
    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - whatever the parser rejects is the same user error
        raise _bad_file(path, exc) from exc


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The checked mosl JSON document of a weight file; :class:`MoslError` when there is none."""
    meta = mosl_metadata(path)
    if meta is None:
        raise MoslError(f"{path}: a safetensors file without mosl metadata; pass a file written by mosl")
    return meta


def mosl_metadata(path: str | Path) -> dict[str, Any] | None:
    """The checked mosl JSON document of a weight file, or ``None`` for a safetensors file without one
    (another project's weights). Metadata that is not a JSON object or lacks a key of
    :data:`REQUIRED_METADATA` is a :class:`MoslError`."""
    path = Path(path)
    header = read_header(path)
    if METADATA_KEY not in header:
        return None
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise MoslError(
            f"{path}: its mosl metadata is not valid JSON; the file is damaged, write it again with mosl"
        ) from exc
    if not isinstance(meta, dict):
        raise MoslError(
            f"{path}: its mosl metadata is a JSON {type(meta).__name__}, not an object; "
            "the file is damaged, write it again with mosl"
        )
    if meta.get("format") != WEIGHTS_FORMAT:
        raise MoslError(f"{path}: not a mosl weight file; pass a file written by mosl")
    for key, kind in REQUIRED_METADATA.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            what = "lacks" if key not in meta else f"has a bad {key!r} ({meta[key]!r}) instead of"
            raise MoslError(f"{path}: its mosl metadata {what} {key!r}; the file is damaged, write it again with mosl")
    return meta


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (on the CPU); :class:`MoslError` when its data is damaged."""
    from safetensors.torch import load_file

    read_header(path)
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - as in read_header
        raise _bad_file(Path(path), exc) from exc


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, metadata)`` of a mosl weight file."""
    meta = read_metadata(path)
    return read_tensors(path), meta


def model_from_file(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a segmentation model from a mosl weight file (kind ``segmentation``), in eval mode."""
    state, meta = load_weights(path)
    if meta.get("kind") != "segmentation":
        raise MoslError(
            f"{path}: a {meta.get('kind')} weight file, not a segmentation model; "
            f"run `mosl finetune --init {path}` first"
        )
    # Built on the meta device and filled by assignment: no random init that the file overwrites.
    with torch.device("meta"):
        model = build_model(
            meta["arch"],
            meta["encoder"],
            int(meta["in_channels"]),
            int(meta.get("classes", 1)),
            lesion_head=has_lesion_head(meta),
            decoder_attention=str(meta.get("decoder_attention", "none")),
        )
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise MoslError(
            f"{path}: weights do not fit {meta['arch']}/{meta['encoder']} ({first}); the file is damaged"
        ) from exc
    return model.to(device).eval(), meta


# --------------------------------------------------------------------------- external checkpoints

# lightly builds a ResNet backbone as nn.Sequential(*children()[:-1]): child index → torchvision name.
ENCODER_PREFIX = "encoder."  # smp's name for the encoder's tensors in a U-Net's state dict (the rest: decoder, head)
_SEQUENTIAL_RESNET = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
# Known prefixes of backbone weights in other projects' checkpoints, most specific first.
_EXTERNAL_PREFIXES = (
    "module.encoder_q.",  # official MoCo v1/v2 .pth.tar
    "module.encoder.",  # official SimSiam .pth.tar
    "model.backbone.",
    "backbone.",  # lightly / solo-learn Lightning .ckpt
    "encoder_q.",
    "encoder.",
    "module.",
    "model.",
)
_HEAD_NAMES = ("fc.", "classifier.", "head.", "projector.", "predictor.", "prediction_head.", "projection_head.")


@dataclass
class LoadReport:
    """What :func:`load_into` did: tensors loaded, model tensors missing, file tensors unused."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    meta: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "loaded": len(self.loaded),
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "adapted": self.adapted,
            "missing_names": self.missing[:20],
            "unexpected_names": self.unexpected[:20],
        }


def _read_external(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the same user error
        raise MoslError(
            f"{path}: cannot read as a weights-only checkpoint ({type(exc).__name__}); save a plain state_dict"
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise MoslError(f"{path}: holds no state dict; save model.state_dict()")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def map_external_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map another project's ResNet backbone names onto smp's ``encoder.*`` names; drop heads."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        key = name
        for prefix in _EXTERNAL_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        if key.startswith(_HEAD_NAMES) or key.startswith("encoder_k."):
            continue
        head, _, rest = key.partition(".")
        if head in _SEQUENTIAL_RESNET and rest:
            key = f"{_SEQUENTIAL_RESNET[head]}.{rest}"
        out[f"encoder.{key}"] = tensor
    return out


def _adapt_channels(name: str, tensor: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Fit a first conv's input channels (3 → 1 by summing, 1 → C by repeating), as smp does."""
    if (
        tensor.ndim != 4
        or target.ndim != 4
        or tensor.shape[0] != target.shape[0]
        or tensor.shape[2:] != target.shape[2:]
    ):
        return None
    have, want = tensor.shape[1], target.shape[1]
    if want == 1:
        return tensor.sum(dim=1, keepdim=True)
    if have == 1:
        return tensor.repeat(1, want, 1, 1) / want
    return None


def load_into(model: nn.Module, path: str | Path, prefix: str = "") -> LoadReport:
    """Load a mosl weight file or an external checkpoint into ``model`` by name (non-strict); with
    ``prefix`` (e.g. ``"encoder."``) only the file's tensors whose names start with it.

    Raises :class:`MoslError` when no tensor matched (the file is not for this architecture).
    """
    path = Path(path)
    if not path.is_file():
        raise MoslError(f"{path}: no such weight file; pass --init none for random init or an existing file")
    meta: dict[str, Any] | None = None
    if path.suffix == ".safetensors":
        meta = mosl_metadata(path)
        state = read_tensors(path)
        if meta is None:  # another project's safetensors state dict
            state = map_external_names(state)
    else:
        state = map_external_names(_read_external(path))
    state = {name: tensor for name, tensor in state.items() if name.startswith(prefix)}
    target = model.state_dict()
    report = LoadReport(source=str(path), meta=meta)
    fitting: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name not in target:
            report.unexpected.append(name)
            continue
        if tensor.shape != target[name].shape:
            adapted = _adapt_channels(name, tensor, target[name])
            if adapted is None:
                report.unexpected.append(name)
                continue
            tensor = adapted
            report.adapted.append(name)
        fitting[name] = tensor.to(target[name].dtype)
    if not fitting:
        raise MoslError(
            f"{path}: no tensor matches a {type(model).__name__} with this encoder; check --arch/--encoder or the file"
        )
    model.load_state_dict(fitting, strict=False)
    report.loaded = sorted(fitting)
    report.missing = sorted(set(target) - set(fitting))
    return report


def model_inputs(images: torch.Tensor, size: int, norm: dict[str, Any] | None = None) -> torch.Tensor:
    """uint8 ``[B, C, S, S]`` (any device) → normalised float32 ``[B, C, size, size]`` for a forward pass.

    Bilinear resize with antialiasing when shrinking; no augmentation (evaluation and prediction).
    """
    import torch.nn.functional as F

    x = images.float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return normalise(x / 255.0 if images.dtype == torch.uint8 else x, norm)
