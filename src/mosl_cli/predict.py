"""``mosl predict``: scans in, 0/255 lesion masks at each scan's own size out (and optional overlays).

Inputs are files, folders (their PNG/JPEG/BMP/TIFF/GIF, DICOM and video files, not recursive, sorted
by name, masks, overlays and probability maps left out: :data:`NOT_A_SCAN`) or glob patterns (matches treated like a
folder's content). DICOM files and videos are read
frame by frame, a cine or video giving one mask per frame (:mod:`mosl_cli.cine`). ``mask_values``
``0-1`` writes 0/1 masks instead; ``measurements`` writes lesion area and diameter per mask
(:mod:`mosl_cli.measure`). Output names:

- one input and ``--out`` ending in an image suffix: the mask is that file (PNG, BMP or TIFF);
- otherwise ``--out`` is a folder (default ``mosl_predict/``) holding ``<stem>_mask.png`` and, with
  ``--overlay``, ``<stem>_overlay.png``;
- ``--probabilities`` adds the probability map beside each mask (:func:`probability_path`);
- ``--dicom-seg`` adds a DICOM SEG beside the mask of each single-frame DICOM scan (:func:`seg_path`,
  :mod:`mosl_cli.dicom_seg`).

Everything is checked before anything is written (a file that is not an image, two inputs with one
output name, a weight file that is not a mosl segmentation model). Then scans are decoded in a thread
pool while the model runs; each is resized to the model's size on the device, the batch goes through
the model, and each probability map is upsampled (bilinear) to its scan's H×W and thresholded.
"""

from __future__ import annotations

import glob
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mosl_cli import cine, dicom
from mosl_cli.config import PredictConfig
from mosl_cli.data.readers.base import VIDEO_EXTS
from mosl_cli.device import resolve_device
from mosl_cli.errors import MoslError
from mosl_cli.evaluate import check_thresholds
from mosl_cli.fastio import read_scan
from mosl_cli.imageio import IMAGE_SUFFIXES, MASK_SUFFIXES, check_image, has_image_suffix, write_image
from mosl_cli.inference import Ensemble, load_ensemble
from mosl_cli.names import MANIFEST_FILE, MASK_TAG, OVERLAY_TAG, PROB_TAG, SEG_TAG
from mosl_cli.postprocess import PostProcess

DEFAULT_PREDICT_DIR = "mosl_predict"
OVERLAY_COLOUR: tuple[int, int, int] = (255, 0, 0)
_GLOB_CHARS = frozenset("*?[")
# A folder's files that are not scans: masks beside their scans (BUSI's x_mask.png, x_mask_1.png) and
# what predict writes (x_mask.png, x_overlay.png, x_prob.png, x_seg.dcm). A file named on the command line is
# predicted anyway.
NOT_A_SCAN = re.compile(rf"(?:{MASK_TAG}(?:_\d+)?|{OVERLAY_TAG}|{PROB_TAG}|{SEG_TAG})$", re.IGNORECASE)
# Decode/write threads: one per core. PNG/JPEG decode in torchvision's ops, outside the GIL (fastio.py);
# with Pillow alone 4 was best on a 16-core host, its chunk parsing holding the GIL.
MAX_IO_WORKERS = 256
_INPUT_SUFFIXES = frozenset(IMAGE_SUFFIXES) | dicom.DICOM_EXTS | (VIDEO_EXTS - {".gif"})


@dataclass
class PredictedFile:
    """One predicted scan: where its mask (and overlay) went, its size, and the lesion's pixel count."""

    input: Path
    mask: Path
    overlay: Path | None
    height: int
    width: int
    lesion_pixels: int
    frame: int | None = None  # the frame index of a cine or video
    spacing_mm: tuple[float, float] | None = None  # mm per (row, col), from a DICOM
    probabilities: Path | None = None  # the probability map (--probabilities)
    dicom_seg: Path | None = None  # the DICOM SEG (--dicom-seg)


# --------------------------------------------------------------------------- inputs and outputs


def _images_in(folder: Path) -> list[Path]:
    """The scans of a folder: its image, DICOM and video files, not masks, overlays or maps (:data:`NOT_A_SCAN`)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in _INPUT_SUFFIXES and not NOT_A_SCAN.search(p.stem)
    )


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders and globs → the scans, in the given order (folders and globs sorted), no repeats.

    Raises :class:`MoslError` for a path that does not exist, a folder without images or a glob that
    matches none.
    """
    if not inputs:
        raise MoslError("no INPUT given; pass scan files, folders or glob patterns")
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = _images_in(path)
            if not files and (path / MANIFEST_FILE).is_file():
                raise MoslError(
                    f"{path}: a dataset prepared by `mosl prepare`, not a folder of scans; score it with "
                    f"`mosl evaluate --data {path}`, or give predict the original scans"
                )
            if not files:
                kinds = "/".join(s[1:].upper() for s in IMAGE_SUFFIXES)
                raise MoslError(f"{path}: no {kinds} scans here (*_mask, *_overlay, *_prob files are not scans)")
        elif path.exists():
            files = [path]
        elif _GLOB_CHARS & set(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            files = [
                f
                for m in matches
                for f in (_images_in(m) if m.is_dir() else [m])
                if (has_image_suffix(f) or f.suffix.lower() in _INPUT_SUFFIXES) and not NOT_A_SCAN.search(f.stem)
            ]
            if not files:
                raise MoslError(f"{item}: the pattern matches no PNG/JPEG/BMP/TIFF/GIF file")
        else:
            raise MoslError(f"{path}: no such file or folder; check the path")
        found.extend(files)
    seen: set[Path] = set()
    unique = []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


Plan = tuple[Path, Path | None, Path | None]  # mask, overlay, probability map


def probability_path(mask: Path) -> Path:
    """Where ``--probabilities`` writes the map of the scan whose mask is ``mask``: ``x_mask.png`` →
    ``x_prob.png``, ``mask.png`` → ``mask_prob.png`` (a cine's folder ``x_mask`` → ``x_prob``)."""
    stem = mask.stem if mask.suffix else mask.name
    return mask.with_name(f"{stem.removesuffix(MASK_TAG)}{PROB_TAG}{mask.suffix and '.png'}")


def seg_path(mask: Path) -> Path:
    """Where ``--dicom-seg`` writes the SEG of the scan whose mask is ``mask``: ``x_mask.png`` →
    ``x_seg.dcm``, ``mask.png`` → ``mask_seg.dcm``."""
    return mask.with_name(f"{mask.stem.removesuffix(MASK_TAG)}{SEG_TAG}.dcm")


def plan_outputs(files: Sequence[Path], out: str | None, overlay: bool, probabilities: bool = False) -> list[Plan]:
    """``(mask path, overlay path or None, probability map path or None)`` per input, following the
    module's naming rules.

    Raises :class:`MoslError` when ``out`` names a file but several inputs were given, names a lossy
    format, or when two inputs would write the same output.
    """
    target = Path(out) if out else None
    if target is not None and has_image_suffix(target):
        if target.is_dir():
            raise MoslError(f"--out {target}: is a folder; pass a new .png name, or a folder name without a suffix")
        if len(files) != 1:
            raise MoslError(f"--out {target}: names one file but {len(files)} scans were given; pass a folder")
        if target.suffix.lower() not in MASK_SUFFIXES:
            raise MoslError(f"--out {target}: masks are written losslessly; use a .png (or .bmp/.tif) name")
        over = target.with_name(f"{target.stem}{OVERLAY_TAG}.png") if overlay else None
        plans: list[Plan] = [(target, over, probability_path(target) if probabilities else None)]
    else:
        folder = target or Path(DEFAULT_PREDICT_DIR)
        if folder.exists() and not folder.is_dir():
            raise MoslError(f"--out {folder}: exists and is not a folder; pass a folder or a .png name")
        masks = [folder / f"{f.stem}{MASK_TAG}.png" for f in files]
        plans = [
            (
                mask,
                folder / f"{f.stem}{OVERLAY_TAG}.png" if overlay else None,
                probability_path(mask) if probabilities else None,
            )
            for f, mask in zip(files, masks)
        ]
    owner: dict[Path, Path] = {f.resolve(): f for f in files}
    for f, plan in zip(files, plans):
        for dest in plan:
            if dest is None:
                continue
            key = dest.resolve()
            if key in owner:
                raise MoslError(
                    f"{f} and {owner[key]} would both write {dest}; predict them into separate --out folders"
                    if owner[key] != f
                    else f"{dest}: the output would overwrite the input; pass another --out"
                )
            owner[key] = f
    return plans


def check_measurements(path: Path, taken: set[Path]) -> None:
    """:class:`MoslError` when ``--measurements`` is a folder or an input or output of this prediction."""
    if path.is_dir():
        raise MoslError(f"--measurements {path}: is a folder; pass a CSV file name, e.g. {path / 'measurements.csv'}")
    if path.resolve() in taken:
        raise MoslError(f"--measurements {path}: is an input or a mask of this prediction; pass another CSV name")


def validate_scans(files: Sequence[Path], pool: ThreadPoolExecutor) -> None:
    """Check every file is a readable image (in parallel); :class:`MoslError` names the first bad one."""
    for future in [pool.submit(check_image, f) for f in files]:
        future.result()


# --------------------------------------------------------------------------- the prediction pipeline


def outline(mask: torch.Tensor) -> torch.Tensor:
    """Bool ``[..., H, W]``: the 2-px lesion contour of bool ``mask`` (dilation minus erosion, 3×3)."""
    m = mask.float().reshape(-1, 1, *mask.shape[-2:])
    dilated = F.max_pool2d(m, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-m, 3, stride=1, padding=1)
    return (dilated > eroded).reshape(mask.shape)


Decoded = tuple[torch.Tensor, np.ndarray | None]


def _decode(path: Path, channels: int, with_rgb: bool, pin: bool) -> Decoded:
    """Worker-thread decode: uint8 ``[H, W, C]`` tensor (pinned for an async copy to CUDA) and the RGB copy."""
    arr, rgb = read_scan(path, channels, with_rgb)
    scan = torch.from_numpy(arr)
    return (scan.pin_memory() if pin else scan), rgb


def _decoded(
    files: Sequence[Path], channels: int, with_rgb: bool, pin: bool, pool: ThreadPoolExecutor, ahead: int
) -> Iterator[Decoded]:
    """Decoded scans in order, at most ``ahead`` decodes in flight (bounded memory)."""
    pending: deque[Future[Decoded]] = deque()
    queue = iter(files)
    for f in queue:
        pending.append(pool.submit(_decode, f, channels, with_rgb, pin))
        if len(pending) >= ahead:
            break
    while pending:
        yield pending.popleft().result()
        nxt = next(queue, None)
        if nxt is not None:
            pending.append(pool.submit(_decode, nxt, channels, with_rgb, pin))


def _save(
    mask: np.ndarray,
    plan: Plan,
    rgb: np.ndarray | None,
    edge: np.ndarray | None,
    prob: np.ndarray | None,
) -> None:
    """Write a mask (uint8 ``[H, W]``) to ``plan[0]``, and where planned the overlay (RGB with ``edge``
    coloured) and the probability map (uint8 ``[H, W]``)."""
    mask_path, overlay_path, prob_path = plan
    write_image(mask_path, mask)
    if overlay_path is not None and rgb is not None and edge is not None:
        picture = rgb.copy()
        picture[edge] = OVERLAY_COLOUR
        write_image(overlay_path, picture)
    if prob_path is not None and prob is not None:
        write_image(prob_path, prob)


@torch.inference_mode()
def predict_masks(
    ensemble: Ensemble,
    scans: Sequence[torch.Tensor],
    threshold: float,
    want_outline: bool = False,
    tta: bool = False,
    postprocess: PostProcess | None = None,
    want_probabilities: bool = False,
) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """uint8 ``[H, W, C]`` scans of any sizes → per scan ``(mask uint8 [H, W] 0/255, outline bool [H, W]
    | None, probability uint8 [H, W] | None)``.

    Each scan is resized on the device to each member model's size, the batch is stacked and run
    once per member (mirrored too with ``tta``), and the averaged probability map is upsampled
    (bilinear) to its scan's H×W, thresholded and post-processed there. ``want_probabilities``: that
    map too, as round(255 · p), before the threshold and post-processing. On CUDA the results come
    back with one synchronisation per batch.
    """
    device = ensemble.device
    on_device = [s.to(device, non_blocking=True).permute(2, 0, 1)[None] for s in scans]
    pending = []
    for prob in ensemble.scan_probabilities(on_device, tta=tta):
        mask = prob[0] > threshold
        if postprocess is not None:
            mask = postprocess(mask[None])[0]
        mask = mask[0]
        edge = outline(mask).to("cpu", non_blocking=True) if want_outline else None
        soft = (
            (prob[0, 0].float() * 255).round().to(torch.uint8).to("cpu", non_blocking=True)
            if want_probabilities
            else None
        )
        pending.append((mask.to("cpu", non_blocking=True), edge, soft))
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()  # the non-blocking copies above have landed
    return [
        (m.numpy().view(np.uint8) * np.uint8(255), None if e is None else e.numpy(), None if p is None else p.numpy())
        for m, e, p in pending
    ]


def io_workers() -> int:
    """Threads that decode scans and write masks: one per core, at least 2 (at most :data:`MAX_IO_WORKERS`)."""
    return max(2, min(MAX_IO_WORKERS, os.cpu_count() or 2))


def run_predict(cfg: PredictConfig, on_image: Callable[[int, int], None] | None = None) -> list[PredictedFile]:
    """Predict a lesion mask for every scan of ``cfg.inputs``; return what was written: still scans in
    input order, then every frame of each DICOM file and video.

    ``on_image(done, total)`` is called after every batch. Raises :class:`MoslError` before writing
    anything when an input, the output path or the weight file is unusable.
    """
    check_thresholds(cfg.threshold, cfg.batch_size)
    if cfg.mask_values not in cine.MASK_VALUES:
        raise MoslError(f"--mask-values {cfg.mask_values}: use 0-255 (default) or 0-1")
    device = resolve_device(cfg.device)
    ensemble = load_ensemble(cfg.model, device).with_detector(cfg.detector)
    channels = ensemble.in_channels
    if channels not in (1, 3):
        raise MoslError(f"{ensemble.describe()}: a {channels}-channel model; predict reads grey (1) or RGB (3) scans")
    rule = ensemble.postprocess(cfg.postprocess)
    files = expand_inputs(cfg.inputs)
    clips = [cine.open_clip(f, cfg.region_crop) for f in files if cine.is_clip(f)]  # DICOM and videos
    n_inputs, files = len(files), [f for f in files if not cine.is_clip(f)]
    if cfg.dicom_seg:
        from mosl_cli import dicom_seg

        dicom_seg.highdicom_module()
        dicom_seg.check_sources(files, clips)
    plans = plan_outputs(files, cfg.out, cfg.overlay, cfg.probabilities) if files else []
    taken = {p.resolve() for plan in plans for p in plan if p is not None} | {f.resolve() for f in files}
    cine.plan_clips(clips, cfg.out, cfg.overlay, taken, n_inputs, DEFAULT_PREDICT_DIR, cfg.probabilities, cfg.dicom_seg)
    if cfg.measurements:
        check_measurements(Path(cfg.measurements), taken | {c.path.resolve() for c in clips})
    results: list[PredictedFile] = []
    pin = device.type == "cuda"
    with ThreadPoolExecutor(max_workers=io_workers(), thread_name_prefix="mosl-io") as pool:
        validate_scans(files, pool)
        scans = _decoded(files, channels, cfg.overlay, pin, pool, ahead=2 * cfg.batch_size)
        writes: list[Future[None]] = []
        for start in range(0, len(files), cfg.batch_size):
            batch = [next(scans) for _ in files[start : start + cfg.batch_size]]
            masks = predict_masks(
                ensemble, [s for s, _ in batch], cfg.threshold, cfg.overlay, cfg.tta, rule, cfg.probabilities
            )
            for j, ((_, rgb), (mask, edge, prob)) in enumerate(zip(batch, masks)):
                mask = mask // np.uint8(255) if cfg.mask_values == "0-1" else mask
                plan = plans[start + j]
                writes.append(pool.submit(_save, mask, plan, rgb, edge, prob))
                results.append(
                    PredictedFile(
                        files[start + j],
                        plan[0],
                        plan[1],
                        mask.shape[0],
                        mask.shape[1],
                        int(np.count_nonzero(mask)),
                        probabilities=plan[2],
                    )
                )
            if on_image is not None:
                on_image(len(results), len(files))
        for w in writes:
            w.result()
        for clip in clips:
            results += cine.predict_clip(
                ensemble,
                clip,
                channels=channels,
                threshold=cfg.threshold,
                batch_size=cfg.batch_size,
                mask_values=cfg.mask_values,
                pool=pool,
                tta=cfg.tta,
                postprocess=rule,
                probabilities=cfg.probabilities,
            )
            if on_image is not None:
                on_image(len(results), len(results))
    if cfg.measurements:
        from mosl_cli.measure import write_measurements

        write_measurements(cfg.measurements, results)
    return results


__all__ = [
    "PredictedFile",
    "run_predict",
    "predict_masks",
    "expand_inputs",
    "plan_outputs",
    "probability_path",
    "seg_path",
    "validate_scans",
    "outline",
    "DEFAULT_PREDICT_DIR",
    "OVERLAY_COLOUR",
]
