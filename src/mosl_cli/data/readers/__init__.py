"""Readers: one module per native dataset layout, and the registry ``--format`` names.

Each reader module provides::

    NAME: str                                        # its --format name
    detect(root: Path) -> bool                       # does root look like this layout?
    resolve(root: Path) -> Path                      # the folder the layout hangs from
    items(root: Path, cfg: PrepareConfig) -> list[Item]   # what to decode (file names only)

``--format auto`` asks the readers in :data:`READERS` order (most specific first, ``folder`` last).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from mosl_cli.data.readers import busi, camus, cifar10, dicom, folder, hc18, miniimagenet, pocus, synthetic, udiat
from mosl_cli.errors import MoslError, UsageError

READERS: dict[str, ModuleType] = {
    m.NAME: m for m in (busi, udiat, hc18, pocus, camus, cifar10, miniimagenet, dicom, folder, synthetic)
}
FORMATS = ("auto", *READERS)


def check_format(fmt: str) -> None:
    """Raise :class:`MoslError` for a ``--format`` that names no reader."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is unknown; use one of: {', '.join(FORMATS)}")


def choose(source: str, fmt: str = "auto") -> tuple[ModuleType, Path]:
    """The reader for ``source`` (a folder, or the string ``synthetic``) and its resolved root.

    Raises :class:`MoslError` naming the source when it is missing or no reader recognises it.
    """
    check_format(fmt)
    if source == synthetic.SOURCE:
        if fmt not in ("auto", synthetic.NAME):
            raise UsageError(f"source 'synthetic' is generated, not read: drop --format {fmt} or give a folder")
        return synthetic, Path(source)
    if fmt == synthetic.NAME:
        raise UsageError(f"--format synthetic takes the source 'synthetic', not {source!r}")
    root = Path(source).expanduser()
    if not root.exists():
        raise MoslError(f"{source}: no such folder; give a dataset folder (e.g. Dataset_BUSI_with_GT) or `synthetic`")
    if not root.is_dir():
        raise MoslError(f"{source}: not a folder; give the dataset's folder, not a file inside it")
    root = root.resolve()
    if fmt != "auto":
        reader = READERS[fmt]
        if not reader.detect(root):
            raise MoslError(f"{source}: does not look like the {fmt} layout; check the folder or use --format auto")
        return reader, reader.resolve(root)
    for reader in READERS.values():
        if reader is not synthetic and reader.detect(root):
            return reader, reader.resolve(root)
    raise MoslError(
        f"{source}: no images and no known dataset layout found; point at the dataset folder or force one "
        f"with --format ({', '.join(READERS)})"
    )


__all__ = ["READERS", "FORMATS", "check_format", "choose"]
