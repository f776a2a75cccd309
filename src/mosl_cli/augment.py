"""Augmentation on the device with kornia: two SSL views per image, image + mask for fine-tuning,
and the weak and strong views of an unlabelled scan for ``--semi``.

Batches arrive as uint8 ``[B, C, S, S]`` already on the training device; they become float32 there,
are augmented with per-sample random parameters in one batched call, and leave normalised with
:func:`mosl_cli.models.normalise`. kornia draws its parameters from torch's global RNG, so
:func:`seeded` (a forked RNG) makes a call reproducible without disturbing the training RNG.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.augmentation import IntensityAugmentationBase2D
from kornia.constants import DataKey, Resample
from torch import Tensor, nn

from mosl_cli.errors import UsageError
from mosl_cli.models import normalise

PRESETS: tuple[str, ...] = ("ultrasound", "simclr")
# Default RandomResizedCrop area range per preset: ours, and SimCLR's (Chen et al. 2020, App. A).
CROP_SCALES: dict[str, tuple[float, float]] = {"ultrasound": (0.2, 1.0), "simclr": (0.08, 1.0)}
# Colour-jitter strength: brightness and contrast factors drawn from [1 - J, 1 + J] (SimCLR's 0.8·s, s = 0.5).
JITTER = 0.4
UNSURE_PIXEL = 255  # mask value of a pixel without a label (a teacher's unsure pixel): no loss there
CUTMIX_P = 0.5  # UniMatch's CutMix: probability per scan, box area 2-40 % of the image, aspect 0.3-3.3
CUTMIX_AREA = (0.02, 0.4)
CUTMIX_ASPECT = (0.3, 1 / 0.3)


def check_jitter(jitter: float) -> None:
    """``--jitter`` must lie in [0, 1): brightness and contrast factors are drawn from [1 - J, 1 + J]."""
    if not 0.0 <= jitter < 1.0:
        raise UsageError(
            f"--jitter {jitter} must be in [0, 1): brightness and contrast factors are drawn from [1 - J, 1 + J]"
        )


@contextmanager
def seeded(seed: int, device: torch.device | str) -> Iterator[None]:
    """Run the body with torch's RNG (CPU, and ``device`` when it is a GPU) seeded, then restore it."""
    device = torch.device(device)
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class RandomSpeckle(IntensityAugmentationBase2D):
    """Multiplicative, speckle-like noise: ``x · (1 + s·n)``, ``n ~ N(0, 1)`` per pixel (shared by the
    channels), ``s ~ U(strength)`` per sample; the result is clamped to ``[0, 1]``.

    Ultrasound speckle is multiplicative (it scales with the echo amplitude), unlike kornia's additive
    :class:`~kornia.augmentation.RandomGaussianNoise`. Masks pass through unchanged.
    """

    def __init__(self, strength: tuple[float, float] = (0.0, 0.3), p: float = 0.5) -> None:
        super().__init__(p=p)
        self.strength = (float(strength[0]), float(strength[1]))

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, Tensor]:
        low, high = self.strength
        return {"strength": torch.empty(batch_shape[0]).uniform_(low, high)}

    def apply_transform(
        self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any], transform: Tensor | None = None
    ) -> Tensor:
        # non_blocking: a blocking copy from (pageable) host memory would wait for the whole CUDA queue.
        strength = params["strength"].to(device=input.device, dtype=input.dtype, non_blocking=True).view(-1, 1, 1, 1)
        noise = torch.randn(input.shape[0], 1, *input.shape[2:], device=input.device, dtype=input.dtype)
        return (input * (1.0 + strength * noise)).clamp(0.0, 1.0)


class Correspondence(NamedTuple):
    """``K`` points per image that both views show.

    ``grid1``, ``grid2``: float ``[B, K, 2]``, each point's ``(x, y)`` in view 1 and view 2, in
    ``[-1, 1]`` as ``grid_sample(..., align_corners=True)`` reads them; ``valid``: bool ``[B]``,
    False where the two crops do not overlap (those points are not used).
    """

    grid1: Tensor
    grid2: Tensor
    valid: Tensor


def sample_correspondence(
    boxes1: Tensor, flips1: Tensor, boxes2: Tensor, flips2: Tensor, points: int
) -> Correspondence:
    """``points`` random points in the overlap of two crops of each image, located in both views.

    ``boxes*``: float ``[B, 4]`` crop boxes ``(x0, y0, x1, y1)`` in input pixels, corners inclusive
    (the corner pixels become the view's corner pixels); ``flips*``: ``[B]``, non-zero where the view
    was flipped left-right after the crop. Draws from torch's global RNG.
    """
    low = torch.maximum(boxes1[:, :2], boxes2[:, :2])  # [B, 2] overlap's top-left (x, y)
    high = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    valid = (high > low).all(dim=1)
    u = torch.rand(boxes1.shape[0], points, 2, device=boxes1.device, dtype=boxes1.dtype)
    xy = low[:, None] + u * (high - low).clamp(min=0)[:, None]  # [B, K, 2] input pixels

    def to_view(boxes: Tensor, flips: Tensor) -> Tensor:
        rel = (xy - boxes[:, None, :2]) / (boxes[:, None, 2:] - boxes[:, None, :2]).clamp(min=1e-6)  # [0, 1]
        x = torch.where(flips.bool()[:, None], 1.0 - rel[..., 0], rel[..., 0])
        return (torch.stack([x, rel[..., 1]], dim=-1) * 2 - 1).clamp(-1, 1)

    return Correspondence(to_view(boxes1, flips1), to_view(boxes2, flips2), valid)


def _blur(size: int, p: float) -> K.RandomGaussianBlur:
    """SimCLR's blur (App. A): kernel ≈ 10% of the side (odd), σ ∈ [0.1, 2.0] at 224 px, scaled to ``size``."""
    kernel = max(3, int(0.1 * size) // 2 * 2 + 1)
    sigma_max = max(0.1, 2.0 * size / 224)
    return K.RandomGaussianBlur((kernel, kernel), (0.1, sigma_max), p=p)


def _view_ops(
    preset: str, size: int, channels: int, crop_scale: tuple[float, float], jitter: float = JITTER
) -> list[nn.Module]:
    """The kornia ops of one SSL view, float ``[B, C, H, W]`` in ``[0, 1]`` → ``[B, C, size, size]``.

    The crop resamples the whole batch in one warp (``cropping_mode="resample"``): the same bilinear
    crop-and-resize as kornia's default per-sample slicing (equal to float rounding), without a loop of
    one resize per image.
    """
    crop = K.RandomResizedCrop((size, size), scale=crop_scale, cropping_mode="resample")
    if preset == "ultrasound":
        # Grey images: no hue, saturation or greyscale ops; intensity jitter, blur and speckle instead.
        return [
            crop,
            K.RandomHorizontalFlip(),
            *([K.ColorJitter(brightness=jitter, contrast=jitter, p=0.8)] if jitter > 0 else []),
            _blur(size, p=0.5),
            RandomSpeckle((0.0, 0.3), p=0.5),
        ]
    # SimCLR (Chen et al. 2020, App. A): crop, flip, colour jitter (strength 0.5) with p 0.8,
    # greyscale with p 0.2, blur with p 0.5. Saturation, hue and greyscale need three channels.
    colour = channels == 3
    ops: list[nn.Module] = [crop, K.RandomHorizontalFlip()]
    if jitter > 0:
        ops.append(K.ColorJitter(jitter, jitter, jitter if colour else 0.0, jitter / 4 if colour else 0.0, p=0.8))
    if colour:
        ops.append(K.RandomGrayscale(p=0.2))
    ops.append(_blur(size, p=0.5))
    return ops


def _resize(x: Tensor, size: int) -> Tensor:
    """float ``[B, C, H, W]`` → ``[B, C, size, size]``, bilinear with antialiasing, exactly as
    :func:`mosl_cli.models.model_inputs` resizes at evaluation time (no train/test mismatch)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _to_unit(images: Tensor) -> Tensor:
    """uint8 ``[B, C, H, W]`` → float32 in ``[0, 1]`` on the same device (float input is taken as is)."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


class SSLViews(nn.Module):
    """uint8 ``[B, C, S, S]`` on the device → two independently augmented, normalised float32 views
    ``[B, C, size, size]``.

    ``preset``: ``ultrasound`` (default; grey-image ops plus speckle) or ``simclr`` (the paper's).
    ``crop_scale``: RandomResizedCrop's area range; ``None`` takes the preset's (``CROP_SCALES``).
    ``jitter``: brightness/contrast jitter strength (saturation too, hue a quarter, for colour
    images under ``simclr``); 0 drops the op, so the features may keep echogenicity.
    Batches larger than twice ``size`` are first shrunk to ``2·size`` with antialiasing, so crops are
    resampled by at most about 2× (no aliasing of fine speckle).

    Both views come from one pass of the ops over the batch stacked twice (``[2B, ...]``; every op draws
    its parameters per sample, so the views are as independent as from two passes), through a plain
    ``nn.Sequential`` (no image+mask bookkeeping): a third of the kernel launches and Python work of two
    ``AugmentationSequential`` calls, which on a GPU is most of the augmentation's cost.
    """

    def __init__(
        self,
        size: int,
        channels: int,
        preset: str = "ultrasound",
        crop_scale: tuple[float, float] | None = None,
        jitter: float = JITTER,
    ) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise UsageError(f"--preset {preset!r} is not one of {', '.join(PRESETS)}; pick one of them")
        crop_scale = tuple(crop_scale) if crop_scale is not None else CROP_SCALES[preset]  # type: ignore[assignment]
        if not (len(crop_scale) == 2 and 0.0 < crop_scale[0] <= crop_scale[1] <= 1.0):
            raise UsageError(f"--crop-scale {crop_scale} must be two numbers with 0 < low <= high <= 1, e.g. 0.2 1.0")
        self.size, self.channels, self.preset = size, channels, preset
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        check_jitter(jitter)
        self.jitter = float(jitter)
        self.pipeline = nn.Sequential(*_view_ops(preset, size, channels, self.crop_scale, self.jitter))

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> SSLViews:
        # ``.to(device)`` would move kornia's samplers too; random parameters drawn on a GPU are read
        # back by kornia (a host sync per read, a dozen per batch). Drawn on the CPU, kornia sends
        # them without waiting, and the host keeps queueing kernels while the GPU works.
        out = super()._apply(fn, *args, **kwargs)
        for op in self.pipeline:
            if isinstance(op, K.AugmentationBase2D):
                op.set_rng_device_and_dtype(torch.device("cpu"), torch.get_default_dtype())
        return out

    def _prescale(self, x: Tensor) -> Tensor:
        return _resize(x, 2 * self.size) if max(x.shape[-2:]) > 2 * self.size else x

    def forward(self, images: Tensor, partners: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Two views of ``images``, or a view of each image and one of its partner (``--positives group``)."""
        x = self._prescale(_to_unit(images))
        y = x if partners is None else self._prescale(_to_unit(partners))
        views = normalise(self.pipeline(torch.cat([x, y])).clamp_(0.0, 1.0))
        view1, view2 = views.chunk(2)
        return view1, view2

    def correspondence(self, points: int, device: torch.device) -> Correspondence:
        """``points`` points per image that both views of the last :meth:`forward` show (from the
        crop boxes and flips its ops drew), for a pixel-level loss (``methods/dense.py``)."""
        crop = next(op for op in self.pipeline if isinstance(op, K.RandomResizedCrop))
        flip = next(op for op in self.pipeline if isinstance(op, K.RandomHorizontalFlip))
        src = crop._params["src"]  # noqa: SLF001 - kornia's record of the last call: [2B, 4, 2] corners (x, y) tl, tr, br, bl
        boxes = torch.cat([src[:, 0], src[:, 2]], dim=1).to(device, non_blocking=True)
        flips = flip._params["batch_prob"].to(device, non_blocking=True)  # noqa: SLF001 - [2B], 1 where flipped
        (b1, b2), (f1, f2) = boxes.chunk(2), flips.chunk(2)
        return sample_correspondence(b1, f1, b2, f2, points)


class RandomLowResolution(IntensityAugmentationBase2D):
    """nnU-Net's low-resolution simulation: shrink by a factor ``z ~ U(zoom)`` (nearest), enlarge back
    (bilinear). Imitates scans acquired or exported at a coarser grid. Masks pass through unchanged."""

    def __init__(self, zoom: tuple[float, float] = (0.5, 1.0), p: float = 0.25) -> None:
        super().__init__(p=p)
        self.zoom = (float(zoom[0]), float(zoom[1]))

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, Tensor]:
        return {"zoom": torch.empty(batch_shape[0]).uniform_(*self.zoom)}

    def apply_transform(
        self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any], transform: Tensor | None = None
    ) -> Tensor:
        h, w = input.shape[-2:]
        out = []
        for image, zoom in zip(input, params["zoom"].tolist()):
            small = F.interpolate(image[None], size=(max(1, round(h * zoom)), max(1, round(w * zoom))), mode="nearest")
            out.append(F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False))
        return torch.cat(out) if out else input


SEG_AUGMENTS: tuple[str, ...] = ("strong", "mild")
ELASTIC_SIGMA = 1 / 16  # smoothing of the displacement field, as a fraction of the side (8 px at 128 px)
ELASTIC_ALPHA = 1 / 64  # field strength per pixel of side: 2 at 128 px, displacements about 2 % of the side


def elastic(size: int, p: float) -> K.RandomElasticTransform:
    """An elastic deformation drawn per scan with probability ``p``: a random displacement field smoothed
    by a Gaussian of σ = side / 16, scaled so that it moves pixels by about 2 % of the side at any
    size (mean about 2 px, 1 % of pixels 7 px or more at 128 px); pixels pulled in from outside are 0."""
    sigma = max(1.0, size * ELASTIC_SIGMA)
    kernel = 2 * round(2 * sigma) + 1
    alpha = size * ELASTIC_ALPHA
    return K.RandomElasticTransform(
        kernel_size=(kernel, kernel), sigma=(sigma, sigma), alpha=(alpha, alpha), align_corners=False, p=p
    )


def _seg_ops(size: int, intensity: bool, strength: str = "strong", elastic_p: float = 0.0) -> list[nn.Module]:
    """Geometry for image and mask, then image-only intensity ops.

    ``strong`` follows nnU-Net's 2D pipeline (Isensee et al. 2021; rotation, scaling, mirroring, noise,
    blur, brightness, contrast, low resolution, gamma), adapted to ultrasound: left-right mirroring only
    (depth runs downwards and acoustic shadows with it), rotations within ±20°, multiplicative speckle
    next to additive noise. ``mild``: flip, a small affine and light intensity jitter. ``elastic_p`` > 0
    adds :func:`elastic` after the affine, on that share of the scans.
    """
    if strength not in SEG_AUGMENTS:
        raise UsageError(f"--augment-strength {strength!r} is not one of {', '.join(SEG_AUGMENTS)}")
    mild = strength == "mild"
    ops: list[nn.Module] = [
        K.RandomHorizontalFlip(),
        K.RandomAffine(
            degrees=15.0 if mild else 20.0,
            translate=(0.1, 0.1),
            scale=(0.85, 1.15) if mild else (0.7, 1.4),
            p=0.5,
        ),
    ]
    if elastic_p > 0:
        ops.append(elastic(size, elastic_p))
    if not intensity:
        return ops
    if mild:
        return [
            *ops,
            K.ColorJitter(brightness=0.2, contrast=0.2, p=0.5),
            _blur(size, p=0.2),
            RandomSpeckle((0.0, 0.2), p=0.3),
        ]
    return [
        *ops,
        K.RandomGaussianNoise(std=0.03, p=0.1),
        RandomSpeckle((0.0, 0.2), p=0.2),
        K.RandomGaussianBlur((5, 5), (0.5, 1.0), p=0.2),
        K.RandomBrightness((0.75, 1.25), p=0.15),
        K.RandomContrast((0.75, 1.25), p=0.15),
        RandomLowResolution((0.5, 1.0), p=0.25),
        K.RandomGamma((0.7, 1.5), p=0.3),
    ]


class SegAugment(nn.Module):
    """Image + mask for segmentation: uint8 ``[B, C, S, S]`` and uint8 0/1 ``[B, 1, S, S]`` on the device
    → normalised float32 ``[B, C, size, size]`` and float32 0/1 ``[B, 1, size, size]``. With
    ``unsure``, mask pixels :data:`UNSURE_PIXEL` (a teacher's unsure pixels, ``pseudo_labels.py``) are
    warped as a second mask channel and come out as -1.

    Both are first resized to ``size`` (the image as :func:`mosl_cli.models.model_inputs` does, the
    mask by antialiased bilinear resampling thresholded at 0.5). Then one
    ``AugmentationSequential(data_keys=["input", "mask"])`` draws each sample's geometry once and
    applies it to both (the mask resampled nearest-neighbour); intensity ops touch the image only.
    ``augment=False`` only resizes (validation); ``intensity=False`` keeps only the geometric ops;
    ``strength``: ``strong`` (default, nnU-Net-like) or ``mild`` (see :func:`_seg_ops`); ``elastic_p``:
    the share of scans given an elastic deformation (:func:`elastic`; 0 for none); ``norm``: the
    model's normalisation (:data:`mosl_cli.models.NORMALISATIONS`; default the fixed one), applied last.
    """

    def __init__(
        self,
        size: int,
        augment: bool = True,
        *,
        intensity: bool = True,
        strength: str = "strong",
        unsure: bool = False,
        elastic_p: float = 0.0,
        norm: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.size, self.augment, self.unsure, self.norm = size, augment, unsure, norm
        ops = _seg_ops(size, intensity, strength, elastic_p)
        # Masks: nearest resampling (kornia's default) on the grid of the image (align_corners as the ops'
        # own False; kornia's None would reach the elastic op's sampler unresolved).
        mask_args = {DataKey.MASK: {"resample": Resample.NEAREST, "align_corners": False}}
        self.pipeline = K.AugmentationSequential(*ops, data_keys=["input", "mask"], extra_args=mask_args)

    def forward(self, images: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        x = _resize(_to_unit(images), self.size)
        m = torch.cat([masks == 1, masks == UNSURE_PIXEL], dim=1) if self.unsure else masks
        m = (_resize(m.float(), self.size) > 0.5).float()
        if self.augment:
            x, m = self.pipeline(x, m)
        m = (m > 0.5).float()
        if self.unsure:  # the unsure channel, warped with the mask, becomes -1 (:func:`finetune.dice_bce_loss`)
            m = torch.where(m[:, 1:] > 0, -1.0, m[:, :1])
        return normalise(x.clamp_(0.0, 1.0), self.norm), m


class WeakStrongViews(nn.Module):
    """Views for ``mosl finetune --semi`` (``consistency.py``): uint8 ``[B, C, S, S]`` on the device →
    the weak and the strong view, both normalised float32 ``[B, C, size, size]``, pixel-aligned: the
    weak view is :func:`_seg_ops`' geometry alone, the strong view the weak one with intensity
    perturbations (brightness and contrast jitter, blur, speckle), so the weak view's pseudo-labels
    fit it. ``norm``: as :class:`SegAugment`'s."""

    def __init__(self, size: int, norm: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.size, self.norm = size, norm
        self.geometry = K.AugmentationSequential(*_seg_ops(size, intensity=False), data_keys=["input"])
        self.intensity = nn.Sequential(
            K.ColorJitter(brightness=0.5, contrast=0.5, p=0.8), _blur(size, p=0.5), RandomSpeckle((0.0, 0.3), p=0.5)
        )

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        weak = self.geometry(_resize(_to_unit(images), self.size)).clamp_(0.0, 1.0)
        strong = self.intensity(weak).clamp_(0.0, 1.0)
        return normalise(weak, self.norm), normalise(strong, self.norm)


def cutmix_boxes(batch: int, size: int, device: torch.device, p: float = CUTMIX_P) -> Tensor:
    """bool ``[B, 1, size, size]``: a random box per scan (none with probability 1 − ``p``), area and
    aspect drawn from ``CUTMIX_AREA`` and ``CUTMIX_ASPECT``; torch's global RNG."""
    area = torch.empty(batch).uniform_(*CUTMIX_AREA) * size * size
    aspect = torch.empty(batch).uniform_(*CUTMIX_ASPECT)
    h = (area * aspect).sqrt().clamp(1, size).long()
    w = (area / aspect).sqrt().clamp(1, size).long()
    y0 = (torch.rand(batch) * (size - h + 1)).long()
    x0 = (torch.rand(batch) * (size - w + 1)).long()
    on = torch.rand(batch) < p
    grid = torch.arange(size)
    rows = (grid[None] >= y0[:, None]) & (grid[None] < (y0 + h)[:, None])  # [B, size]
    cols = (grid[None] >= x0[:, None]) & (grid[None] < (x0 + w)[:, None])
    boxes = rows[:, :, None] & cols[:, None, :] & on[:, None, None]
    return boxes[:, None].to(device, non_blocking=True)


def cutmix(images: Tensor, *maps: Tensor, p: float = CUTMIX_P) -> tuple[Tensor, ...]:
    """Paste a box (:func:`cutmix_boxes`, on a scan with probability ``p``) of the next scan in the batch
    into each scan: ``images`` ``[B, C, H, W]`` and each of ``maps`` ``[B, 1, H, W]`` (masks, pseudo-labels,
    where they are sure) move together. Returns ``(images, *maps)`` mixed."""
    boxes = cutmix_boxes(images.shape[0], images.shape[-1], images.device, p)
    partner = torch.roll(torch.arange(images.shape[0], device=images.device), 1)
    return tuple(torch.where(boxes, t[partner], t) for t in (images, *maps))
