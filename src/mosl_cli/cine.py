"""``predict`` on DICOM files and videos: frames in, one mask per frame out, at the frame's own size.

- A single-frame DICOM is named like a still scan: ``<stem>_mask.png`` (``--out`` may name that file),
  with ``--dicom-seg`` also ``<stem>_seg.dcm`` (:mod:`mosl_cli.dicom_seg`).
- A multi-frame DICOM (a cine loop) or a video (what ``prepare`` reads: mp4, avi, mov, mpeg, mkv …
  decoded with PyAV; GIF with Pillow) gives ``<stem>_mask/00000.png``, one PNG per frame numbered by
  frame index, and with ``--overlay`` ``<stem>_overlay.mp4`` (MPEG-4) at the source's frame rate.
- DICOM frames are cropped to the ultrasound imaging region (:mod:`mosl_cli.dicom`) before the model
  sees them, as ``prepare`` does, unless ``region_crop`` is off; the mask is pasted back into the
  full frame (zero outside the region). The DICOM's spacing goes with each result (for ``--measurements``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageSequence

from mosl_cli import dicom
from mosl_cli.data.readers.base import VIDEO_EXTS
from mosl_cli.dicom_seg import write_seg
from mosl_cli.errors import MoslError
from mosl_cli.fsutil import atomic_path
from mosl_cli.imageio import IMAGE_SUFFIXES, has_image_suffix
from mosl_cli.names import MASK_TAG, OVERLAY_TAG

MASK_VALUES = ("0-255", "0-1")
DEFAULT_RATE = 10.0


def is_clip(path: Path) -> bool:
    """A DICOM file (suffix or ``DICM`` magic) or a video, i.e. not a still image for Pillow."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return False
    return suffix in VIDEO_EXTS or dicom.looks_like_dicom(path)


@dataclass
class Clip:
    """A DICOM file or video to predict: its frame count (``None``: a video, counted while decoding),
    frame rate, spacing (mm per row, col), imaging-region crop box, and output paths."""

    path: Path
    kind: str  # "dicom" or "video"
    frames: int | None
    rate: float
    spacing: tuple[float, float] | None = None
    box: tuple[int, int, int, int] | None = None
    mask: Path = Path()
    overlay: Path | None = None
    probabilities: Path | None = None  # --probabilities: a file, or a folder for a sequence
    seg: Path | None = None  # --dicom-seg: the DICOM SEG of a single-frame DICOM

    @property
    def sequence(self) -> bool:
        """One mask per frame in a folder (a cine or a video), rather than one mask file."""
        return self.kind == "video" or (self.frames or 0) > 1


def _video_info(path: Path) -> tuple[int | None, float]:
    """``(frames or None, frames per second)`` of a video; :class:`MoslError` when it cannot be opened."""
    if path.suffix.lower() == ".gif":
        try:
            with Image.open(path) as im:
                return getattr(im, "n_frames", 1), 1000.0 / max(1, im.info.get("duration", 100) or 100)
        except OSError as exc:
            raise MoslError(f"{path}: not a readable GIF ({exc}); pass a video or DICOM file") from exc
    import av

    try:
        with av.open(str(path)) as box:
            stream = box.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or DEFAULT_RATE)
            return (stream.frames or None), rate
    except (av.FFmpegError, IndexError) as exc:
        raise MoslError(
            f"{path}: not a readable video ({type(exc).__name__}); pass mp4/avi/mov or DICOM files"
        ) from exc


def open_clip(path: Path, region_crop: bool) -> Clip:
    """Check one DICOM file or video (header, pixel data, decoder) and describe it."""
    if path.suffix.lower() in VIDEO_EXTS:
        frames, rate = _video_info(path)
        return Clip(path, "video", frames, rate)
    try:
        ds = dicom.read(path, lazy=True)  # the pixel data stays on disk
        dicom.check_pixels(ds)
    except dicom.DicomError as exc:
        raise MoslError(f"{path}: {exc}") from None
    region = dicom.imaging_region(ds)
    return Clip(
        path,
        "dicom",
        dicom.frame_count(ds),
        dicom.frame_rate(ds, DEFAULT_RATE),
        dicom.spacing_mm(ds, region),
        region.box if region_crop and region else None,
    )


def plan_clips(
    clips: Sequence[Clip],
    out: str | None,
    overlay: bool,
    taken: set[Path],
    inputs: int,
    default_dir: str,
    probabilities: bool = False,
    dicom_seg: bool = False,
) -> None:
    """Set each clip's mask (file or folder), overlay, probability and SEG paths following the
    module's naming rules.

    ``taken``: output paths already planned for still scans; ``inputs``: all inputs, stills included.
    Raises :class:`MoslError` when ``out`` names one file for several inputs or a cine, or when two
    inputs would write the same output.
    """
    from mosl_cli.predict import probability_path, seg_path  # predict imports this module

    target = Path(out) if out else None
    single_file = target is not None and has_image_suffix(target)
    for clip in clips:
        if single_file:
            assert target is not None
            if inputs != 1 or clip.sequence:
                what = "a cine or video gives one mask per frame" if clip.sequence else f"{inputs} scans were given"
                raise MoslError(f"--out {target}: names one file but {what}; pass a folder")
            clip.mask = target
            clip.overlay = target.with_name(f"{target.stem}{OVERLAY_TAG}.png") if overlay else None
        else:
            folder = target or Path(default_dir)
            stem = clip.path.stem
            clip.mask = folder / (f"{stem}{MASK_TAG}" if clip.sequence else f"{stem}{MASK_TAG}.png")
            clip.overlay = (folder / f"{stem}{OVERLAY_TAG}{'.mp4' if clip.sequence else '.png'}") if overlay else None
        clip.probabilities = probability_path(clip.mask) if probabilities else None
        clip.seg = seg_path(clip.mask) if dicom_seg and not clip.sequence else None
        for dest in (clip.mask, clip.overlay, clip.probabilities, clip.seg):
            if dest is None:
                continue
            key = dest.resolve()
            if key in taken or key == clip.path.resolve():
                raise MoslError(
                    f"{clip.path}: its output {dest} is taken by another input; "
                    "predict them into separate --out folders"
                )
            taken.add(key)


# --------------------------------------------------------------------------- frames


def _video_frames(path: Path) -> Iterator[Image.Image]:
    if path.suffix.lower() == ".gif":
        with Image.open(path) as im:
            for f in ImageSequence.Iterator(im):
                yield f.convert("RGB")
        return
    import av

    try:
        with av.open(str(path)) as box:
            for frame in box.decode(video=0):
                yield frame.to_image()
    except av.FFmpegError as exc:
        raise MoslError(
            f"{path}: video decoding failed ({type(exc).__name__}: {exc}); re-encode it (e.g. ffmpeg -i IN OUT.mp4)"
        ) from exc


def frames(clip: Clip) -> Iterator[tuple[int, Image.Image]]:
    """``(frame index, full frame)`` of a clip, in order; PIL ``L`` or ``RGB``."""
    if clip.kind == "video":
        yield from enumerate(_video_frames(clip.path))
        return
    try:
        ds = dicom.read(clip.path)
        for i in range(dicom.frame_count(ds)):
            yield i, dicom.frame_image(ds, i)
    except dicom.DicomError as exc:
        raise MoslError(f"{clip.path}: {exc}") from None


def _model_input(img: Image.Image, channels: int) -> np.ndarray:
    arr = np.array(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _paste(part: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int] | None) -> np.ndarray:
    """``part`` (the crop's ``[h, w]``) placed at ``box`` in zeros of the full frame ``size`` (H, W)."""
    if box is None:
        return part
    full = np.zeros(size, dtype=part.dtype)
    x0, y0, x1, y1 = box
    full[y0:y1, x0:x1] = part
    return full


class _OverlayVideo:
    """An MPEG-4 file written frame by frame (RGB uint8 ``[H, W, 3]``, padded to even sizes), atomically."""

    def __init__(self, path: Path, rate: float) -> None:
        from fractions import Fraction

        import av

        self._atomic = atomic_path(path)
        self._tmp = self._atomic.__enter__()
        self._box = av.open(str(self._tmp), "w", format="mp4")
        self._rate = Fraction(rate).limit_denominator(1000) if rate > 0 else Fraction(10)
        self._stream: Any = None

    def write(self, rgb: np.ndarray) -> None:
        import av

        h, w = rgb.shape[:2]
        padded = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._stream is None:
            self._stream = self._box.add_stream("mpeg4", rate=self._rate)
            self._stream.width, self._stream.height = padded.shape[1], padded.shape[0]
            self._stream.pix_fmt = "yuv420p"
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format="rgb24")):
            self._box.mux(packet)

    def close(self, ok: bool = True) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():
                self._box.mux(packet)
        self._box.close()
        if ok:
            self._atomic.__exit__(None, None, None)
        else:
            self._atomic.__exit__(RuntimeError, RuntimeError(), None)


# --------------------------------------------------------------------------- prediction


def predict_clip(
    ensemble: Any,
    clip: Clip,
    *,
    channels: int,
    threshold: float,
    batch_size: int,
    mask_values: str,
    pool: ThreadPoolExecutor,
    tta: bool = False,
    postprocess: Any = None,
    probabilities: bool = False,
) -> list[Any]:
    """Predict every frame of ``clip`` with ``ensemble`` (``inference.Ensemble``); write its masks (and
    overlay); return one ``PredictedFile`` per frame."""
    import torch

    from mosl_cli.imageio import write_image
    from mosl_cli.predict import OVERLAY_COLOUR, PredictedFile, predict_masks

    video = _OverlayVideo(clip.overlay, clip.rate) if clip.overlay is not None and clip.sequence else None
    results: list[Any] = []
    writes: list[Future[None]] = []
    scale = np.uint8(1 if mask_values == "0-1" else 255)

    def run(batch: list[tuple[int, Image.Image]]) -> None:
        crops = [img.crop(clip.box) if clip.box else img for _, img in batch]
        scans = [torch.from_numpy(_model_input(c, channels)) for c in crops]
        for (i, img), (mask, edge, prob) in zip(
            batch,
            predict_masks(ensemble, scans, threshold, clip.overlay is not None, tta, postprocess, probabilities),
        ):
            size = (img.height, img.width)
            full = _paste(mask, size, clip.box) // np.uint8(255) * scale
            dest = clip.mask / f"{i:05d}.png" if clip.sequence else clip.mask
            writes.append(pool.submit(write_image, dest, full))
            if clip.seg is not None:
                writes.append(pool.submit(write_seg, clip.path, full, clip.seg))
            prob_dest = None
            if prob is not None and clip.probabilities is not None:  # outside the imaging region: 0
                prob_dest = clip.probabilities / f"{i:05d}.png" if clip.sequence else clip.probabilities
                writes.append(pool.submit(write_image, prob_dest, _paste(prob, size, clip.box)))
            if edge is not None:
                picture = np.array(img.convert("RGB"))
                picture[_paste(edge, size, clip.box)] = OVERLAY_COLOUR
                if video is not None:
                    video.write(picture)
                else:
                    assert clip.overlay is not None
                    writes.append(pool.submit(write_image, clip.overlay, picture))
            results.append(
                PredictedFile(
                    clip.path,
                    dest,
                    clip.overlay,
                    img.height,
                    img.width,
                    int(np.count_nonzero(full)),
                    frame=i if clip.sequence else None,
                    spacing_mm=clip.spacing,
                    probabilities=prob_dest,
                    dicom_seg=clip.seg,
                )
            )

    ok = False
    try:
        batch: list[tuple[int, Image.Image]] = []
        for item in frames(clip):
            batch.append(item)
            if len(batch) == batch_size:
                run(batch)
                batch = []
        if batch:
            run(batch)
        if not results:
            raise MoslError(f"{clip.path}: no decodable frame; pass a DICOM image or a playable video")
        for w in writes:
            w.result()
        ok = True
    finally:
        if video is not None:
            video.close(ok)
    return results


__all__ = ["MASK_VALUES", "Clip", "is_clip", "open_clip", "plan_clips", "frames", "predict_clip"]
