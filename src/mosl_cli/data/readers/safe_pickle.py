"""Load the pickles that CIFAR-10 and mini-ImageNet ship without executing code.

A pickle may name any importable callable; loading one from the internet with :func:`pickle.load` runs
whatever it names. :class:`RestrictedUnpickler` resolves only the few numpy names an ndarray needs
(``_reconstruct`` / ``_frombuffer``, ``ndarray``, ``dtype``) and refuses every other global, so a pickle
can only build dicts, lists, strings, bytes, numbers and numpy arrays.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` resolves only the numpy array names in ``_ALLOWED``."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only plain data and numpy arrays are read"
            ) from None


def load(path: str | Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; Python 2 strings decode as latin-1
    (numpy's advice for Python 2 array pickles such as CIFAR-10's)."""
    with open(path, "rb") as fh:
        return RestrictedUnpickler(fh, encoding="latin1").load()
