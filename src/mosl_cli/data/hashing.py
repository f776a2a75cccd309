"""Image fingerprints for leakage-safe splits: a 64-bit perceptual hash and an exact content digest.

The perceptual hash is the DCT hash ("pHash") of Zauner, *Implementation and Benchmarking of
Perceptual Image Hash Functions* (2010): a 32×32 grey thumbnail, its 2-D DCT-II, the 8×8 lowest
frequencies, one bit per coefficient above their median. Near-duplicates (re-saved, re-scaled,
lightly annotated copies) differ in a few bits; the Hamming distance compares them.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from PIL import Image

THUMB = 32  # thumbnail side (pixels) the DCT runs on (Zauner 2010)
LOW = 8  # keep the LOW×LOW lowest frequencies: 64 bits


@lru_cache(maxsize=1)
def _dct_matrix(n: int = THUMB) -> np.ndarray:
    """Orthonormal DCT-II matrix, float64 ``[n, n]``: ``D @ x`` transforms a column vector."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


def phash(grey: Image.Image) -> int:
    """64-bit DCT perceptual hash of a grey (mode ``L``) image, as a Python int."""
    thumb = grey.convert("L").resize((THUMB, THUMB), Image.BILINEAR)
    x = np.asarray(thumb, dtype=np.float64)
    d = _dct_matrix()
    low = (d @ x @ d.T)[:LOW, :LOW].ravel()
    bits = low > np.median(low)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def digest(grey: Image.Image) -> str:
    """Exact content id of a grey image: identical pixels (and size) give identical digests."""
    h = hashlib.blake2b(grey.tobytes(), digest_size=16)
    h.update(f"{grey.width}x{grey.height}".encode())
    return h.hexdigest()


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return (a ^ b).bit_count()


def near_pairs(hashes: np.ndarray, max_distance: int, budget: int = 1 << 23) -> np.ndarray:
    """All index pairs ``(i, j)``, ``i < j``, whose hashes differ in at most ``max_distance`` bits.

    ``hashes``: uint64 ``[N]``. Returns int64 ``[P, 2]``. Brute force over row blocks of about
    ``budget`` comparisons each: O(N²/2) popcounts, seconds for 60,000 hashes, bounded memory.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    block = max(1, budget // max(n, 1))
    out: list[np.ndarray] = []
    for start in range(0, n, block):
        rows = hashes[start : start + block]
        cols = hashes[start:]
        dist = np.bitwise_count(rows[:, None] ^ cols[None, :])
        i, j = np.nonzero(dist <= max_distance)
        keep = j > i  # columns start at `start`: j is offset by the same amount, keep the upper triangle
        out.append(np.stack([i[keep] + start, j[keep] + start], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)
