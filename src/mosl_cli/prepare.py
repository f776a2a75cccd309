"""``mosl prepare``: raw dataset folders in, one split, device-ready dataset directory out.

Steps: choose a reader per source (:mod:`mosl_cli.data.readers`) → list items → decode, resize and
hash them in a process pool → group duplicates and reader groups, split by class
(:mod:`mosl_cli.data.splits`; strata are the classes within each source and organ) → write
``data.safetensors`` + ``manifest.json`` atomically (:func:`mosl_cli.data.store.write_dataset`).

Each image becomes ``S×S`` by a plain square resize (bilinear with antialiasing; masks nearest);
the original height and width are recorded. ``--channels 1`` stores luminance (ITU-R 601-2, Pillow's
``L``), ``--channels 3`` stores RGB with grey images replicated. torch is imported only to write.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from mosl_cli.config import PrepareConfig, to_dict
from mosl_cli.data import hashing
from mosl_cli.data.readers import READERS, check_format, choose
from mosl_cli.data.readers.base import DECODE_ERRORS, Item, SkipSample
from mosl_cli.data.readers.tree import group_regex
from mosl_cli.data.splits import SPLITS, assign_splits, check_fractions, group_samples
from mosl_cli.data.store import check_target
from mosl_cli.errors import MoslError, UsageError
from mosl_cli.fsutil import remove_stale_temps

Progress = Callable[[str, int, int], None]
MIN_SIZE, MAX_SIZE = 16, 4096
SERIAL_BELOW = 24  # fewer items than this are decoded in-process: a pool would cost more than it saves


@dataclass
class PrepareSummary:
    """What ``prepare`` wrote: the dataset folder, one row per source × organ, and what was dropped.

    ``rows``: dicts with source, reader, organ, images, masks (non-empty), classes {name: n},
    splits {train/val/test: n}, skipped. ``skipped``: {path, reason, source, organ} per unusable file.
    ``dedup``: duplicate statistics (see :class:`mosl_cli.data.splits.Grouping`).
    """

    out: Path
    rows: list[dict[str, Any]]
    groups_merged: int
    skipped: list[dict[str, Any]]
    total: int
    dedup: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decoded:
    """One sample after decoding: ``image`` uint8 ``[C, S, S]``, ``mask`` uint8 ``[S, S]`` 0/1 or ``None``."""

    suffix: str
    cls: str | None
    organ: str | None
    image: np.ndarray
    mask: np.ndarray | None
    mask_pixels: int | None
    height: int
    width: int
    phash: int
    digest: str
    meta: dict[str, Any] | None = None  # extra manifest fields from the reader (a DICOM's crop, spacing)


@dataclass
class _Source:
    name: str
    reader: ModuleType
    root: Path
    items: list[Item]


# --------------------------------------------------------------------------- decoding (runs in workers)


def decode_item(item: Item, size: int, channels: int) -> tuple[list[Decoded], str | None]:
    """Decode one item to ``S×S`` samples; ``([], reason)`` when the file is unusable."""
    try:
        frames = item.load(item)
        out = []
        for f in frames:
            if f.mask is not None and f.mask.shape != (f.image.height, f.image.width):
                raise SkipSample(
                    f"mask is {f.mask.shape[1]}x{f.mask.shape[0]} but the image is {f.image.width}x{f.image.height}"
                )
            out.append(_resize(f.image, f.mask, f.suffix, f.cls, f.organ, size, channels, f.meta))
    except DECODE_ERRORS as exc:
        return [], _reason(exc)
    if not out:
        return [], "no image in the file"
    return out, None


def _reason(exc: BaseException) -> str:
    """One line for the manifest: the reader's own reason, or the decoder's error."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, SkipSample):
        return text
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    return f"unreadable ({type(exc).__name__}: {text})"


def _resize(
    image: Image.Image,
    mask: np.ndarray | None,
    suffix: str,
    cls: str | None,
    organ: str | None,
    size: int,
    channels: int,
    meta: dict[str, Any] | None = None,
) -> Decoded:
    """Square-resize one frame to ``size`` (bilinear, antialiased; mask nearest) and fingerprint it."""
    grey = image if image.mode == "L" else image.convert("L")
    src = grey if channels == 1 else image.convert("RGB")
    arr = np.asarray(src.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    small = None
    if mask is not None:
        m = Image.fromarray(mask.astype(np.uint8)).resize((size, size), Image.NEAREST)
        small = np.asarray(m, dtype=np.uint8)
    return Decoded(
        suffix=suffix,
        cls=cls,
        organ=organ,
        image=np.ascontiguousarray(arr),
        mask=small,
        mask_pixels=None if mask is None else int(mask.sum()),
        height=image.height,
        width=image.width,
        phash=hashing.phash(grey),
        digest=hashing.digest(grey),
        meta=meta,
    )


def _spawn_ok() -> bool:
    """Whether spawned workers can start: they re-import ``__main__``, impossible for a script on stdin."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or os.path.exists(main_file)


def _leave_signals_to_parent() -> None:
    """Decode workers ignore Ctrl-C and SIGTERM sent to the whole process group: the parent stops them
    and reports the interruption in one line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _decode_all(
    items: list[Item], cfg: PrepareConfig, progress: Progress
) -> Iterator[tuple[list[Decoded], str | None]]:
    """Decoded items in order, in a spawn process pool of ``cfg.workers`` (0: one per core).

    Spawned workers import the calling script again, so a script that calls :func:`run_prepare`
    needs the ``if __name__ == "__main__":`` guard (or ``workers=1``).
    """
    fn = partial(decode_item, size=cfg.size, channels=cfg.channels)
    workers = min(cfg.workers or os.cpu_count() or 1, len(items))
    progress("decode", 0, len(items))
    results: Iterable[tuple[list[Decoded], str | None]]
    if workers <= 1 or len(items) < SERIAL_BELOW or not _spawn_ok():
        results = map(fn, items)
        pool = None
    else:
        pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_leave_signals_to_parent
        )
        results = pool.map(fn, items, chunksize=max(1, min(16, len(items) // (workers * 8))))
    try:
        for done, result in enumerate(results, 1):
            progress("decode", done, len(items))
            yield result
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


# --------------------------------------------------------------------------- the step


def _check(cfg: PrepareConfig) -> tuple[float, float, float]:
    """Validate the options (one-line :class:`UsageError` each) and ``--out``; return the split fractions."""
    check_format(cfg.format)
    if not cfg.sources:
        raise MoslError("no source given; name at least one dataset folder, or `synthetic`")
    if not MIN_SIZE <= cfg.size <= MAX_SIZE:
        raise UsageError(f"--size {cfg.size}: use {MIN_SIZE} to {MAX_SIZE} pixels (e.g. 256)")
    if cfg.channels not in (1, 3):
        raise UsageError(f"--channels {cfg.channels}: use 1 (luminance) or 3 (RGB)")
    if cfg.frames_per_video is not None and cfg.frames_per_video < 1:
        raise UsageError(f"--frames-per-video {cfg.frames_per_video}: use 1 or more, or all")
    if cfg.synthetic_count < 1:
        raise UsageError(f"--synthetic-count {cfg.synthetic_count}: use 1 or more")
    if cfg.workers < 0:
        raise UsageError(f"--workers {cfg.workers}: use 0 (one per core) or more")
    if not -1 <= cfg.dedup_distance <= 64:
        raise UsageError(
            f"--dedup-distance {cfg.dedup_distance}: use 0 to 64 bits, or -1 to group identical images only"
        )
    group_regex(cfg.group_pattern)  # before any decoding, whichever readers the sources pick
    fractions = check_fractions(tuple(cfg.splits))
    check_target(Path(cfg.out), cfg.overwrite)
    return fractions


def _sources(cfg: PrepareConfig, progress: Progress) -> list[_Source]:
    """Choose a reader for each source and list its items; unique source names (``busi``, ``busi-2``)."""
    out: list[_Source] = []
    names: Counter[str] = Counter()
    roots: set[Path] = set()
    for i, source in enumerate(cfg.sources):
        reader, root = choose(source, cfg.format)
        if root in roots and reader.NAME != "synthetic":
            raise MoslError(f"{source}: given twice; list each source once")
        roots.add(root)
        names[reader.NAME] += 1
        name = reader.NAME if names[reader.NAME] == 1 else f"{reader.NAME}-{names[reader.NAME]}"
        items = reader.items(root, cfg)
        if not items:
            raise MoslError(f"{source}: no images found in the {reader.NAME} layout; check the folder or --format")
        out.append(_Source(name, reader, root, items))
        progress("scan", i + 1, len(cfg.sources))
    return out


def run_prepare(cfg: PrepareConfig, progress: Progress | None = None) -> PrepareSummary:
    """Decode ``cfg.sources`` into the dataset directory ``cfg.out``; see the module docstring."""
    report: Progress = progress or (lambda stage, done, total: None)
    fractions = _check(cfg)
    out = Path(os.path.abspath(cfg.out))
    remove_stale_temps(out.parent, out.name)  # left by a killed earlier prepare of this folder
    # torch takes seconds to import and is needed only to write: import it while the workers decode
    threading.Thread(target=importlib.import_module, args=("torch",), daemon=True).start()
    sources = _sources(cfg, report)
    work = [(s, it) for s in sources for it in s.items]

    samples: list[dict[str, Any]] = []
    decoded: list[Decoded] = []
    reader_groups: list[str | None] = []
    searchable: list[bool] = []  # one key frame per video enters the near-duplicate search
    skipped: list[dict[str, Any]] = []
    ids: set[str] = set()
    for (src, item), (frames, reason) in zip(work, _decode_all([it for _, it in work], cfg, report)):
        if reason is not None:
            path = item.paths[0] if item.paths else f"{src.name}/{item.key}"
            skipped.append({"path": path, "reason": reason, "source": src.name, "organ": item.organ})
            continue
        group = item.group or (item.key if item.frames_grouped else None)
        for k, d in enumerate(frames):
            searchable.append(not item.frames_grouped or k == len(frames) // 2)
            sid = _unique(f"{src.name}/{item.key}{d.suffix}", ids)
            samples.append(
                {
                    "id": sid,
                    "source": src.name,
                    "organ": d.organ or item.organ,
                    "class": d.cls or item.cls,
                    "paths": list(item.paths),
                    "height": d.height,
                    "width": d.width,
                    "has_mask": d.mask is not None,
                    "mask_pixels": d.mask_pixels,
                    **(d.meta or {}),
                }
            )
            decoded.append(d)
            reader_groups.append(None if group is None else f"{src.name}/{group}")
    if not samples:
        first = f" (first: {skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
        raise MoslError(f"no usable image in {', '.join(cfg.sources)}: all {len(skipped)} files were skipped{first}")

    report("group", 0, 1)
    grouping = group_samples(
        [d.phash for d in decoded], [d.digest for d in decoded], reader_groups, cfg.dedup_distance, searchable
    )
    strata = [f"{s['source']}/{s['organ']}/{s['class']}" for s in samples]  # class, within each source and organ
    splits = assign_splits(strata, grouping.group, fractions, cfg.seed)
    leader: dict[int, str] = {}
    for s, g, split in zip(samples, grouping.group, splits):
        s["group"] = leader.setdefault(g, s["id"])
        s["split"] = split
    report("group", 1, 1)

    dedup = {
        "hash": "dct-phash-64",
        "max_distance": cfg.dedup_distance,
        "identical_hash_pairs": grouping.identical_hash_pairs,
        "identical_pixel_pairs": grouping.identical_pixel_pairs,
        "near_pairs": grouping.near_pairs,
        "largest_group": grouping.largest,
    }
    manifest = {
        "size": cfg.size,
        "channels": cfg.channels,
        "seed": cfg.seed,
        "splits": list(fractions),
        "sources": _source_entries(sources, samples, skipped),
        "groups_merged": grouping.merged,
        "dedup": dedup,
        "config": to_dict(cfg),
        "skipped": skipped,
        "samples": samples,
    }
    out = _write(cfg, decoded, manifest, report)
    return PrepareSummary(
        out=out,
        rows=summarize(manifest),
        groups_merged=grouping.merged,
        skipped=skipped,
        total=len(samples),
        dedup=dedup,
    )


def _unique(sid: str, seen: set[str]) -> str:
    """``sid``, or ``sid~2``, ``sid~3`` … when already taken."""
    out, k = sid, 1
    while out in seen:
        k += 1
        out = f"{sid}~{k}"
    seen.add(out)
    return out


def _source_entries(
    sources: list[_Source], samples: list[dict[str, Any]], skipped: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One entry per source and organ: name, reader, root, organ, count."""
    counts = Counter((s["source"], s["organ"]) for s in samples)
    out: list[dict[str, Any]] = []
    for src in sources:
        organs = [o for (n, o) in counts if n == src.name]
        organs += sorted({k["organ"] for k in skipped if k["source"] == src.name} - set(organs))
        for organ in organs:
            out.append(
                {
                    "name": src.name,
                    "reader": src.reader.NAME,
                    "root": str(src.root),
                    "organ": organ,
                    "count": counts[(src.name, organ)],
                }
            )
    return out


def _write(cfg: PrepareConfig, decoded: list[Decoded], manifest: dict[str, Any], report: Progress) -> Path:
    """Stack the samples (freeing each as it is copied) and write the dataset directory."""
    import torch

    from mosl_cli.data.store import write_dataset

    report("write", 0, 1)
    n, s = len(decoded), cfg.size
    images = np.empty((n, cfg.channels, s, s), dtype=np.uint8)
    labelled = any(d.mask is not None for d in decoded)
    masks = np.zeros((n, 1, s, s), dtype=np.uint8) if labelled else None
    for i in range(n):
        d = decoded[i]
        images[i] = d.image
        if masks is not None and d.mask is not None:
            masks[i, 0] = d.mask
        decoded[i] = None  # type: ignore[call-overload]  # free the copy as we go
    write_dataset(cfg.out, torch.from_numpy(images), None if masks is None else torch.from_numpy(masks), manifest)
    report("write", 1, 1)
    return Path(cfg.out)


def summarize(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per source × organ, recomputed from a manifest (what ``mosl info`` prints).

    Row keys: source, reader, organ, images, masks (non-empty masks), classes {name: n},
    splits {train, val, test: n}, skipped.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for src in manifest.get("sources", []):
        rows.setdefault((src["name"], src["organ"]), _row(src["name"], src.get("reader", ""), src["organ"]))
    for s in manifest.get("samples", []):
        row = rows.setdefault((s["source"], s["organ"]), _row(s["source"], "", s["organ"]))
        row["images"] += 1
        row["masks"] += int(bool(s.get("has_mask")) and (s.get("mask_pixels") or 0) > 0)
        row["classes"][s["class"]] = row["classes"].get(s["class"], 0) + 1
        row["splits"][s["split"]] = row["splits"].get(s["split"], 0) + 1
    for k in manifest.get("skipped", []):
        key = (k.get("source", ""), k.get("organ", ""))
        if key in rows:
            rows[key]["skipped"] += 1
    return list(rows.values())


def _row(source: str, reader: str, organ: str) -> dict[str, Any]:
    return {
        "source": source,
        "reader": reader,
        "organ": organ,
        "images": 0,
        "masks": 0,
        "classes": {},
        "splits": {s: 0 for s in SPLITS},
        "skipped": 0,
    }


__all__ = ["PrepareSummary", "run_prepare", "summarize", "decode_item", "READERS"]
