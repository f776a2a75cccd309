"""``mosl export``: a mosl segmentation weight file → ONNX, TorchScript or an smp model folder.

ONNX and TorchScript files hold the model *with its normalisation inside the graph*: the input
``image`` is float32 ``[B, C, H, W]`` of raw pixel values 0-255 (C = the model's channels; H and W any
multiple of 32, the batch any size), the output ``logits`` is ``[B, 1, H, W]``; the lesion probability
is ``sigmoid(logits)`` and the mask ``probability > 0.5``. The model was trained at ``size``×``size``:
resize scans to it for the results ``mosl predict`` gives. The same description, and the weight
file's mosl metadata, are in the file (ONNX ``metadata_props``, TorchScript extra file ``mosl.json``).

Every export is checked: the exported model and PyTorch run on random inputs of two batch sizes and
two image sizes, and the largest absolute difference of the logits must be ≤ :data:`TOLERANCE`.

``smp`` writes a folder that ``segmentation_models_pytorch.from_pretrained(folder)`` loads
(``config.json`` + ``model.safetensors``, smp's hub format) with ``mosl.json`` (normalisation, size)
and a model card ``README.md`` (data, label fraction, pre-training, measured metrics when known).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mosl_cli.errors import MoslError
from mosl_cli.fsutil import atomic_path, write_json, write_text
from mosl_cli.models import (
    PER_IMAGE_STD_FLOOR,
    model_from_file,
    mosl_metadata,
    normalisation_formula,
    normalise,
    split_outputs,
)
from mosl_cli.names import WEIGHTS_FILE

FORMATS: tuple[str, ...] = ("onnx", "torchscript", "smp")
TOLERANCE = 1e-3  # max |logit difference| between the exported model and PyTorch (float32, CPU)
CHECK_SHAPES: tuple[tuple[int, int, int], ...] = ((1, 64, 64), (3, 96, 160))  # (batch, H, W) checked
ONNX_OPSET = 17
INPUT_DOC = (
    "image: float32 [batch, channels, height, width], raw pixel values 0-255 (height, width: multiples of 32; "
    "resize to size x size as mosl does); normalisation (x/255 - mean)/std is inside the model"
)
OUTPUT_DOC = "logits: float32 [batch, 1, height, width]; lesion probability = sigmoid(logits), mask = probability > 0.5"


@dataclass
class ExportResult:
    """What :func:`run_export` wrote and how closely the export matches PyTorch."""

    out: Path
    format: str
    max_abs_diff: float | None
    tolerance: float
    files: list[Path] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "format": self.format,
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "files": [str(f) for f in self.files],
        }


class NormalisedModel(nn.Module):
    """Raw 0-255 pixels in, logits out: ``model(normalise(x, norm))`` as one graph (``norm``: the weight
    file's ``normalisation``, fixed or per image). A model with the lesion-present head and a ``gate``
    gives logits of -1e4 (an empty mask) to the images whose lesion-present probability is below the
    gate, as ``mosl predict`` does."""

    def __init__(self, model: nn.Module, norm: dict[str, Any], gate: float | None = None) -> None:
        super().__init__()
        self.model, self.norm = model, dict(norm)
        self.register_buffer("gate", torch.tensor(-1.0 if gate is None else float(gate)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits, present = split_outputs(self.model(normalise(image / 255.0, self.norm)))
        if present is None:
            return logits
        keep = (torch.sigmoid(present) >= self.gate)[:, :, None, None]
        return torch.where(keep, logits, torch.full_like(logits, -1e4))


def describe(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata stored with an export: how to feed it, and the weight file's own metadata."""
    return {
        "input": INPUT_DOC,
        "output": OUTPUT_DOC,
        "size": meta["size"],
        "channels": meta["in_channels"],
        "normalisation": meta["normalisation"],
        "mosl": meta,
    }


def _inputs(channels: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(b, channels, h, w, generator=g) * 255 for b, h, w in CHECK_SHAPES]


def _max_diff(reference: nn.Module, run: Any, channels: int) -> float:
    worst = 0.0
    with torch.inference_mode():
        for x in _inputs(channels):
            got = torch.as_tensor(run(x))
            want = reference(x)
            if got.shape != want.shape:
                raise MoslError(
                    f"exported model gave shape {tuple(got.shape)} for input {tuple(x.shape)}, "
                    f"PyTorch {tuple(want.shape)}"
                )
            worst = max(worst, float((got - want).abs().max()))
    return worst


def _check(diff: float, out: Path) -> float:
    if not diff <= TOLERANCE:
        raise MoslError(
            f"{out}: exported model differs from PyTorch by {diff:.2e} > {TOLERANCE:g}; report this with --debug output"
        )
    return diff


def export_onnx(wrapped: nn.Module, meta: dict[str, Any], out: Path) -> float:
    """Write ONNX (dynamic batch, height, width) with metadata; check it with onnxruntime."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise MoslError(
            f"--format onnx needs onnx and onnxruntime ({exc.name} is missing); pip install 'mosl-cli[export]'"
        ) from exc
    channels = int(meta["in_channels"])
    axes = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter: no onnxscript needed
        torch.onnx.export(
            wrapped,
            (torch.zeros(1, channels, 64, 64),),
            str(tmp),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
        graph = onnx.load(str(tmp))
        for key, value in {
            "mosl": json.dumps(describe(meta)),
            "input": INPUT_DOC,
            "output": OUTPUT_DOC,
            "normalisation": json.dumps(meta["normalisation"]),
            "size": str(meta["size"]),
        }.items():
            graph.metadata_props.add(key=key, value=value)
        graph.doc_string = f"mosl segmentation model ({meta['arch']}/{meta['encoder']}). {INPUT_DOC}. {OUTPUT_DOC}."
        onnx.save(graph, str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        diff = _check(_max_diff(wrapped, lambda x: session.run(None, {"image": x.numpy()})[0], channels), out)
    return diff


def export_torchscript(wrapped: nn.Module, meta: dict[str, Any], out: Path) -> float:
    """Write TorchScript (traced; any batch and size that are multiples of 32) with ``mosl.json`` inside."""
    channels = int(meta["in_channels"])
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", FutureWarning
        )  # torch.jit is deprecated upstream but still what C++/mobile load
        with torch.no_grad():
            traced = torch.jit.trace(wrapped, torch.zeros(2, channels, 64, 64), check_trace=False)
        return _save_torchscript(traced, wrapped, meta, out)


def _save_torchscript(traced: Any, wrapped: nn.Module, meta: dict[str, Any], out: Path) -> float:
    channels = int(meta["in_channels"])
    with atomic_path(out) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={"mosl.json": json.dumps(describe(meta))})
        loaded = torch.jit.load(str(tmp), map_location="cpu")
        diff = _check(_max_diff(wrapped, loaded, channels), out)
    return diff


def read_torchscript_metadata(path: str | Path) -> dict[str, Any]:
    """The ``mosl.json`` stored in an exported TorchScript file."""
    extra = {"mosl.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra["mosl.json"])


def _evaluation(model_path: Path, metrics: str | None) -> dict[str, Any] | None:
    """An evaluate ``metrics.json`` of this weight file: ``metrics`` when given, else ``mosl_eval/``'s if it matches."""
    from mosl_cli.config import DEFAULT_EVAL_DIR
    from mosl_cli.evaluate import METRICS_FILE

    path = Path(metrics) if metrics else Path(DEFAULT_EVAL_DIR) / METRICS_FILE
    if not path.is_file():
        if metrics:
            raise MoslError(f"--metrics {path}: no such file; pass the metrics.json written by `mosl evaluate`")
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MoslError(
            f"{path}: not a readable metrics.json ({exc}); pass the file written by `mosl evaluate`"
        ) from exc
    if not metrics and Path(str(doc.get("model", ""))).resolve() != model_path.resolve():
        return None  # another model's evaluation
    return doc


def _usage_inputs(meta: dict[str, Any]) -> list[str]:
    """The model card's Python lines that turn ``image_uint8`` into the model's input ``x``."""
    shape = f"# [B, {meta['in_channels']}, {meta['size']}, {meta['size']}]"
    norm = meta["normalisation"]
    if norm.get("per_image"):
        return [
            f"x = image_uint8.float() / 255  {shape}",
            "x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True)"
            f".clamp_min({PER_IMAGE_STD_FLOOR})",
        ]
    return [f"x = (image_uint8.float() / 255 - {norm['mean']}) / {norm['std']}  {shape}"]


def model_card(meta: dict[str, Any], run_config: dict[str, Any] | None, evaluation: dict[str, Any] | None) -> str:
    """A Hugging Face style README.md: what the model is, what it was trained on, how well it does."""
    resolved = (run_config or {}).get("resolved", {})
    init = resolved.get("init", {}) if isinstance(resolved.get("init"), dict) else {}
    data = meta.get("data") or {}
    pretraining = (
        "none (supervised from random weights)"
        if meta.get("init") in (None, "none")
        else (
            f"`{meta.get('init')}`"
            + (
                f" ({init.get('method') or meta.get('method')}, scope {init.get('scope')})"
                if init.get("method") or meta.get("method")
                else ""
            )
        )
    )
    lines = [
        "---",
        "library_name: segmentation-models-pytorch",
        "license: mit",
        "pipeline_tag: image-segmentation",
        "tags: [segmentation-models-pytorch, semantic-segmentation, ultrasound, breast-lesion, mosl]",
        "---",
        "",
        f"# Breast-lesion segmentation: {meta['arch']} / {meta['encoder']} (mosl)",
        "",
        "Binary lesion segmentation of grey ultrasound scans, trained with `mosl finetune`.",
        "",
        "## Usage",
        "",
        "```python",
        "import segmentation_models_pytorch as smp, torch",
        "model = smp.from_pretrained('THIS_FOLDER').eval()",
        *_usage_inputs(meta),
        "mask = torch.sigmoid(model(x)) > 0.5",
        "```",
        "",
        "## Training",
        "",
        f"- data: `{data.get('path', '?')}` (fingerprint `{data.get('fingerprint', '?')}`)",
        f"- label fraction: {meta.get('label_fraction', '?')}"
        + (f" ({resolved['labelled_train']} labelled train images)" if "labelled_train" in resolved else ""),
        f"- pre-training / initialisation: {pretraining}",
        f"- input: {meta['in_channels']} channel(s) at {meta['size']}×{meta['size']} px, "
        f"normalisation {normalisation_formula(meta['normalisation'])}",
        f"- seed: {meta.get('seed')}, mosl {meta.get('mosl_version')}",
        "",
        "## Metrics",
        "",
    ]
    if evaluation:
        s = evaluation.get("summary", {})
        lines += [
            f"Measured by `mosl evaluate` on split `{evaluation.get('split')}` of `{evaluation.get('data')}` "
            f"(threshold {evaluation.get('threshold')}, TTA {evaluation.get('tta')}):",
            "",
            "| group | n | Dice | IoU |",
            "| --- | --- | --- | --- |",
        ]
        groups = [
            ("all", s),
            ("lesion (benign + malignant)", evaluation.get("lesion")),
            *evaluation.get("per_class", {}).items(),
        ]
        for name, g in groups:
            if isinstance(g, dict):
                lines.append(f"| {name} | {g.get('n', '')} | {_fmt(g.get('dice'))} | {_fmt(g.get('iou'))} |")
    else:
        lines.append("Not measured yet: run `mosl evaluate` and export again (or pass `--metrics`).")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("mean")
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value or "")


def export_smp(model: nn.Module, meta: dict[str, Any], out: Path, model_path: Path, metrics: str | None) -> list[Path]:
    """Write smp's hub folder (config.json + model.safetensors), mosl.json and the model card README.md."""
    if out.exists() and not out.is_dir():
        raise MoslError(f"--out {out}: exists and is not a folder; --format smp writes a folder")
    model.save_pretrained(str(out))
    config_path = model_path.parent / "config.json"
    run_config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None
    write_json(out / "mosl.json", describe(meta))
    write_text(out / "README.md", model_card(meta, run_config, _evaluation(model_path, metrics)))
    return [out / name for name in ("config.json", "model.safetensors", "mosl.json", "README.md")]


def _is_mosl_weights(path: Path) -> bool:
    """Whether ``path`` is a mosl weight file (a run's ``model.safetensors``, which an export must not replace)."""
    try:
        return mosl_metadata(path) is not None
    except MoslError:
        return False


def run_export(
    model_path: str | Path, fmt: str, out: str | Path | None = None, metrics: str | None = None
) -> ExportResult:
    """Export a mosl segmentation weight file to ``fmt`` (:data:`FORMATS`) at ``out`` and check it."""
    if fmt not in FORMATS:
        raise MoslError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    model_path = Path(model_path)
    model, meta = model_from_file(model_path, "cpu")
    model = model.float().eval()
    default = {"onnx": ".onnx", "torchscript": ".pt", "smp": "_smp"}[fmt]
    target = Path(out) if out else model_path.with_name(model_path.stem + default)
    replaced = target / WEIGHTS_FILE if fmt == "smp" else target
    if replaced.is_file() and _is_mosl_weights(replaced):
        raise MoslError(f"--out {target}: the export would replace the mosl weight file {replaced}; pass another --out")
    if fmt == "smp":
        files = export_smp(model, meta, target, model_path, metrics)
        return ExportResult(target, fmt, None, TOLERANCE, files)
    wrapped = NormalisedModel(model, meta["normalisation"], meta.get("lesion_gate")).eval()
    diff = (export_onnx if fmt == "onnx" else export_torchscript)(wrapped, meta, target)
    return ExportResult(target, fmt, diff, TOLERANCE, [target])


__all__ = [
    "FORMATS",
    "TOLERANCE",
    "ExportResult",
    "NormalisedModel",
    "run_export",
    "read_torchscript_metadata",
    "model_card",
]
