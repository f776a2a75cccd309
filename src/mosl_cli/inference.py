"""Models for inference: one weight file or an ensemble of them (a folder of cross-validation folds,
or several files), their averaged probabilities, and the post-processing rule they carry.

``evaluate`` and ``predict`` load a model spec with :func:`load_ensemble` and get lesion
probabilities with :meth:`Ensemble.probabilities`: each member resizes the uint8 images to its own
training size, runs (with left-right mirroring when ``tta``), and its sigmoid probabilities are
resized back to the input's H×W and averaged over members, as nnU-Net averages its folds.

A *detector* (``--detector``: another model or ensemble, e.g. one trained with ``--lesion-head
--empty-masks`` to leave normal scans empty) decides which scans show a lesion: where its own mask
(its gate, threshold :data:`DETECTOR_THRESHOLD`, its post-processing rule) is empty, the scan is called
normal and its probabilities are set to 0; elsewhere the segmenter's probabilities stand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mosl_cli.device import autocast, memory_format
from mosl_cli.errors import MoslError
from mosl_cli.models import model_from_file, model_inputs, split_outputs
from mosl_cli.names import CONFIG_FILE, FOLD_PREFIX, WEIGHTS_FILE
from mosl_cli.postprocess import PostProcess, combine

DETECTOR_THRESHOLD = 0.5  # the detector's masks are thresholded as it was tuned: at 0.5


def _check_folds_complete(path: Path) -> None:
    """Refuse a ``finetune --folds K`` folder that lacks a fold's weights (a fold still training, killed,
    or not started with ``--fold k``): its ensemble would silently average fewer than K models."""
    folds = 0
    for config in sorted(path.glob(f"{FOLD_PREFIX}*/{CONFIG_FILE}")):
        try:
            folds = max(folds, int(json.loads(config.read_text())["config"]["folds"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a mosl fold run: nothing to check
    missing = [f"{FOLD_PREFIX}{k}" for k in range(folds) if not (path / f"{FOLD_PREFIX}{k}" / WEIGHTS_FILE).is_file()]
    if missing:
        raise MoslError(
            f"{path}: {', '.join(missing)} of its {folds} folds {'has' if len(missing) == 1 else 'have'} no "
            f"{WEIGHTS_FILE} yet; finish {'it' if len(missing) == 1 else 'them'} "
            f"(mosl finetune --folds {folds} --fold k --out {path}, with --resume for a killed fold) "
            "or pass the finished fold folders to --model one by one"
        )


def model_paths(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """Weight files named by ``spec``: a file, a run folder (its ``model.safetensors``), a folder of
    runs (``*/model.safetensors``, e.g. ``finetune --folds`` output, which must hold every fold), or a
    list of any of these."""
    items = [spec] if isinstance(spec, (str, Path)) else list(spec)
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            if (path / WEIGHTS_FILE).is_file():
                found = [path / WEIGHTS_FILE]
            else:
                _check_folds_complete(path)
                found = sorted(path.glob(f"*/{WEIGHTS_FILE}"))
            if not found:
                raise MoslError(
                    f"{path}: no {WEIGHTS_FILE} in this folder or its sub-folders; pass a weight file or a run folder"
                )
            paths += found
        else:
            paths.append(path)
    if not paths:
        raise MoslError("no model given; pass --model FILE or a folder of runs")
    return paths


def prepare_model(model: nn.Module, meta: dict[str, Any], path: str | Path, device: torch.device) -> nn.Module:
    """Check the model is a one-class segmenter and put it in its inference memory format."""
    if int(meta.get("classes", 1)) != 1:
        raise MoslError(f"{path}: a {meta.get('classes')}-class model; mosl evaluates binary (1-class) models")
    return model.to(memory_format=memory_format(device)).eval()


@torch.inference_mode()
def forward_outputs(
    model: nn.Module, x: torch.Tensor, tta: bool = False, amp: bool = True, channels_last: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sigmoid probabilities of model inputs float32 ``[B, C, s, s]``: lesion pixels float32 ``[B, 1, s, s]``
    and, for a model with the lesion-present head, the image-level probability float32 ``[B, 1]`` (else None).

    Runs in channels_last and under bf16 autocast (CUDA, CPUs with native bf16) unless ``channels_last`` /
    ``amp`` is False. ``tta`` averages with the prediction on the horizontally flipped inputs (flipped back).
    """
    device = x.device
    x = x.contiguous(memory_format=memory_format(device, channels_last))
    with autocast(device, amp):
        logits, present = split_outputs(model(x))
        prob = torch.sigmoid(logits.float())
        present = None if present is None else torch.sigmoid(present.float())
        if tta:
            logits, flipped_present = split_outputs(model(x.flip(-1)))
            prob = (prob + torch.sigmoid(logits.float()).flip(-1)) / 2
            if present is not None and flipped_present is not None:
                present = (present + torch.sigmoid(flipped_present.float())) / 2
    return prob, present


def apply_gate(prob: torch.Tensor, present: torch.Tensor | None, gate: float | None) -> torch.Tensor:
    """``prob`` ``[B, 1, H, W]`` with the images whose lesion-present probability ``present`` ``[B, 1]`` is
    below ``gate`` set to 0 (an empty mask); unchanged without a head or a gate."""
    if present is None or gate is None:
        return prob
    return prob * (present >= gate).to(prob.dtype)[:, :, None, None]


@torch.inference_mode()
def forward_probabilities(
    model: nn.Module,
    x: torch.Tensor,
    tta: bool = False,
    amp: bool = True,
    channels_last: bool = True,
    gate: float | None = None,
) -> torch.Tensor:
    """Lesion probabilities float32 ``[B, 1, s, s]`` of model inputs float32 ``[B, C, s, s]``
    (:func:`forward_outputs`), gated by the lesion-present head at ``gate`` (:func:`apply_gate`)."""
    prob, present = forward_outputs(model, x, tta=tta, amp=amp, channels_last=channels_last)
    return apply_gate(prob, present, gate)


@torch.inference_mode()
def model_outputs(
    model: nn.Module, images: torch.Tensor, meta: dict[str, Any], tta: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ungated :func:`forward_outputs` of uint8 images ``[B, C, H, W]`` (on the model's device): lesion
    probabilities float32 ``[B, 1, H, W]`` and the lesion-present probability ``[B, 1]`` (or None).

    The images are resized to the model's ``size`` and normalised as it was trained
    (:func:`mosl_cli.models.model_inputs`); the probabilities come back at the input's H×W (bilinear).
    """
    x = model_inputs(images, int(meta["size"]), meta.get("normalisation"))
    prob, present = forward_outputs(model, x, tta=tta)
    if prob.shape[-2:] != images.shape[-2:]:
        prob = F.interpolate(prob, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)
    return prob, present


@torch.inference_mode()
def model_probabilities(
    model: nn.Module, images: torch.Tensor, meta: dict[str, Any], tta: bool = False
) -> torch.Tensor:
    """Lesion probabilities float32 ``[B, 1, H, W]`` of uint8 images ``[B, C, H, W]`` (:func:`model_outputs`);
    a model with a lesion-present head and a stored ``lesion_gate`` gives empty maps to the images it
    calls lesion-free."""
    prob, present = model_outputs(model, images, meta, tta=tta)
    return apply_gate(prob, present, meta.get("lesion_gate"))


@dataclass
class Ensemble:
    """Segmentation models whose probabilities are averaged; ``meta`` is the first member's metadata."""

    paths: list[Path]
    models: list[nn.Module]
    metas: list[dict[str, Any]]
    detector: Ensemble | None = None  # scans whose mask it leaves empty get probability 0 (module docstring)

    @property
    def meta(self) -> dict[str, Any]:
        return self.metas[0]

    @property
    def in_channels(self) -> int:
        return int(self.meta["in_channels"])

    @property
    def device(self) -> torch.device:
        return next(self.models[0].parameters()).device

    def postprocess(self, enabled: bool = True) -> PostProcess:
        """The members' stored rules combined (:func:`mosl_cli.postprocess.combine`); identity when off."""
        if not enabled:
            return PostProcess()
        return combine([PostProcess.from_dict(m.get("postprocess")) for m in self.metas])

    @torch.inference_mode()
    def probabilities(self, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """float32 ``[B, 1, H, W]`` lesion probabilities of uint8 ``[B, C, H, W]`` images (on the models' device)."""
        total = None
        for model, meta in zip(self.models, self.metas):
            prob = model_probabilities(model, images, meta, tta=tta)
            total = prob if total is None else total + prob
        assert total is not None
        prob = total / len(self.models)
        if self.detector is not None:
            prob = prob * self.detector.finds_lesion(self.detector.probabilities(images, tta=tta))[:, None, None, None]
        return prob

    def finds_lesion(self, prob: torch.Tensor) -> torch.Tensor:
        """Whether this model's mask, from its probabilities ``prob`` float ``[B, 1, H, W]``, thresholded
        at :data:`DETECTOR_THRESHOLD` and post-processed by its own rule, keeps a pixel: float 0/1 ``[B]``."""
        mask = self.postprocess()(prob > DETECTOR_THRESHOLD)
        return mask.flatten(1).any(dim=1).to(prob.dtype)

    @torch.inference_mode()
    def scan_probabilities(self, scans: Sequence[torch.Tensor], tta: bool = False) -> list[torch.Tensor]:
        """Per scan uint8 ``[1, C, H, W]`` (sizes may differ) its float32 ``[1, 1, H, W]`` probabilities:
        one batched forward pass per member at its own size, each map upsampled to its scan's H×W."""
        totals: list[torch.Tensor | None] = [None] * len(scans)
        for model, meta in zip(self.models, self.metas):
            x = torch.cat([model_inputs(t, int(meta["size"]), meta.get("normalisation")) for t in scans])
            prob = forward_probabilities(model, x, tta=tta, gate=meta.get("lesion_gate"))
            for j, t in enumerate(scans):
                full = F.interpolate(prob[j : j + 1], size=tuple(t.shape[-2:]), mode="bilinear", align_corners=False)
                totals[j] = full if totals[j] is None else totals[j] + full
        probs = [t / len(self.models) for t in totals if t is not None]
        if self.detector is not None:
            found = [self.detector.finds_lesion(p) for p in self.detector.scan_probabilities(scans, tta=tta)]
            probs = [p * f[:, None, None, None] for p, f in zip(probs, found, strict=True)]
        return probs

    def describe(self) -> str:
        return (
            str(self.paths[0]) if len(self.paths) == 1 else f"{len(self.paths)} models ({self.paths[0].parent.parent})"
        )

    def with_detector(self, spec: str | Path | Sequence[str | Path] | None) -> Ensemble:
        """This ensemble with the models of ``spec`` (see :func:`model_paths`) as its detector; itself
        when ``spec`` is None. The detector must read as many channels."""
        if spec is None:
            return self
        detector = load_ensemble(spec, self.device)
        if detector.in_channels != self.in_channels:
            raise MoslError(
                f"--detector {detector.describe()}: a {detector.in_channels}-channel model beside a "
                f"{self.in_channels}-channel segmenter; pass a detector trained on the same kind of scans"
            )
        return Ensemble(self.paths, self.models, self.metas, detector)


def load_ensemble(spec: str | Path | Sequence[str | Path], device: torch.device) -> Ensemble:
    """Load every weight file of ``spec`` (see :func:`model_paths`) for inference on ``device``.

    Members must be one-class segmentation models for the same number of input channels.
    """
    paths = model_paths(spec)
    models, metas = [], []
    for path in paths:
        model, meta = model_from_file(path, device)
        models.append(prepare_model(model, meta, path, device))
        metas.append(meta)
    channels = {int(m["in_channels"]) for m in metas}
    if len(channels) > 1:
        raise MoslError(
            f"{paths[0].parent}: the models take different channel counts {sorted(channels)}; "
            "ensemble models of one kind"
        )
    return Ensemble(paths, models, metas)
