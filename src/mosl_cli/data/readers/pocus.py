"""POCUS lung ultrasound (Born et al., Applied Sciences 11(2), 2021): still images and short videos.

Layout: ``pocus_images/{convex,linear}/`` and ``pocus_videos/{convex,linear}/`` (mp4, avi, mov, mpeg,
gif, ...; sub-folders such as ``label_uncertain/`` are read too). The class comes from the file-name
prefix: ``Cov`` covid, ``Pne``/``pneu`` pneumonia, ``Reg`` regular, ``Vir`` viral; a file under
``label_uncertain/`` or named ``X_or_Y`` is ``uncertain``. Each video gives ``frames_per_video`` evenly
spaced frames that form one group, so a video's frames never straddle splits; the videos of one
patient (``Reg_pat1Image_*``) share a group too. Organ ``lung``;
unlabelled. The root may be ``pocus``, ``pocus/data`` or any folder up to two levels above them.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image, ImageSequence

from mosl_cli.config import PrepareConfig
from mosl_cli.data.readers.base import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    Frame,
    Item,
    SkipSample,
    as_image,
    evenly_spaced,
    load_image_with_masks,
    sorted_files,
    subdirs,
)

NAME = "pocus"
ORGAN = "lung"
IMAGES, VIDEOS = "pocus_images", "pocus_videos"
_PATIENT = re.compile(r"^([A-Za-z]+_pat\d+)Image")  # "Reg_pat1Image_132943.mpeg": videos of one patient
_PREFIXES = (("cov", "covid"), ("pneu", "pneumonia"), ("pne", "pneumonia"), ("reg", "regular"), ("vir", "viral"))


def resolve(root: Path) -> Path:
    """The folder holding ``pocus_images`` / ``pocus_videos`` (searched up to two levels down)."""
    if root.name in (IMAGES, VIDEOS):
        return root.parent
    levels = [[root]]
    levels.append([c for d in levels[0] for c in subdirs(d)])
    levels.append([c for d in levels[1] for c in subdirs(d)])
    for d in (d for level in levels for d in level):
        if (d / IMAGES).is_dir() or (d / VIDEOS).is_dir():
            return d
    return root


def detect(root: Path) -> bool:
    """A ``pocus_images`` or ``pocus_videos`` folder at ``root`` or up to two levels below."""
    base = resolve(root)
    return (base / IMAGES).is_dir() or (base / VIDEOS).is_dir()


def label(path: Path) -> str:
    """Class from the file-name prefix (see the module docstring); ``unknown`` when none matches."""
    name = path.name.lower()
    if "label_uncertain" in (p.lower() for p in path.parts) or re.match(r"^[a-z]+_or_[a-z]+", name):
        return "uncertain"
    return next((cls for prefix, cls in _PREFIXES if name.startswith(prefix)), "unknown")


def load_video(item: Item) -> list[Frame]:
    """``item.args[0]`` evenly spaced frames of a video (PyAV) or animated GIF (Pillow), as RGB frames."""
    k = item.args[0]  # None: every frame
    path = item.paths[0]
    frames = _gif_frames(path, k) if path.lower().endswith(".gif") else _av_frames(path, k)
    if not frames:
        raise SkipSample("no decodable video frames")
    return [Frame(img, suffix=f"#f{i:05d}") for i, img in frames]


def _gif_frames(path: str, k: int | None) -> list[tuple[int, Image.Image]]:
    """``k`` evenly spaced frames of an animated GIF, with their indices."""
    with Image.open(path) as im:
        wanted = set(evenly_spaced(getattr(im, "n_frames", 1), k))
        return [(i, as_image(f.convert("RGB"))) for i, f in enumerate(ImageSequence.Iterator(im)) if i in wanted]


def _av_frames(path: str, k: int | None) -> list[tuple[int, Image.Image]]:
    """Decode with PyAV; the frame count comes from the stream header or, failing that, a packet count."""
    import av

    try:
        with av.open(path) as box:
            stream = box.streams.video[0]
            total = stream.frames or sum(1 for p in box.demux(stream) if p.size)
        wanted = set(evenly_spaced(total, k))
        out: list[tuple[int, Image.Image]] = []
        with av.open(path) as box:
            for i, frame in enumerate(box.decode(video=0)):
                if i in wanted:
                    out.append((i, frame.to_image()))
                if i >= max(wanted, default=-1):
                    break
        return out
    except (av.FFmpegError, IndexError) as exc:
        raise SkipSample(f"unreadable video ({type(exc).__name__}: {exc})") from exc


def items(root: Path, cfg: PrepareConfig) -> list[Item]:
    """Images: one item each. Videos: one item each that decodes to ``cfg.frames_per_video`` frames."""
    base = resolve(root)
    out: list[Item] = []
    if (base / IMAGES).is_dir():
        for p in sorted_files(base / IMAGES, IMAGE_EXTS, recursive=True):
            key = p.relative_to(base).with_suffix("").as_posix()
            out.append(Item(key=key, paths=(str(p),), cls=label(p), organ=ORGAN, load=load_image_with_masks))
    if (base / VIDEOS).is_dir():
        for p in sorted_files(base / VIDEOS, VIDEO_EXTS, recursive=True):
            key = p.relative_to(base).with_suffix("").as_posix()
            patient = _PATIENT.match(p.name)
            out.append(
                Item(
                    key=key,
                    paths=(str(p),),
                    cls=label(p),
                    organ=ORGAN,
                    load=load_video,
                    args=(cfg.frames_per_video,),
                    frames_grouped=True,
                    group=patient[1] if patient else None,
                )
            )
    return out
