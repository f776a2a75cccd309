"""Synthetic B-mode ultrasound scans: the embedded default dataset (no download needed).

``generate(index, count, seed, size)`` renders one scan as a pure function of its arguments. About
35 % of a set are benign breast lesions, 20 % malignant, 10 % normal breast (all labelled, BUSI-like:
Al-Dhabyani et al., Data in Brief 28, 2020) and 35 % unlabelled scans of other organs (liver, heart,
lung, fetal head, thyroid), the multi-organ mix that self-supervised pre-training learns from
(Figueiras et al., arXiv 2402.14114).

Each scan follows the B-mode chain with cheap approximations (numpy only, a few ms per 256 px scan):

1. anatomy paints an echogenicity map (dB relative to glandular tissue) and a map of extra loss
   deposited by strong absorbers or reflectors (dB), on a coarse grid in beam space (depth x beam);
2. the loss accumulates along each beam (acoustic shadowing below malignant lesions, bone and air;
   enhancement below cysts), and depth attenuation is only partly undone by time-gain compensation;
3. scan conversion to a linear rectangle (breast, thyroid, some lung) or a convex / phased-array fan
   with black outside (liver, fetal head, lung, heart), then upsampling to the output size;
4. fully developed speckle: the envelope of circular complex Gaussian scatterers seen through a
   Gaussian point-spread function that is longer laterally than axially (Rayleigh amplitude);
5. log compression with a random gain, dynamic range and grey map to uint8, then overlays as
   scanners and BUSI print them: calipers, a probe marker, annotation text, depth ticks.

Lesion margins follow the BI-RADS ultrasound lexicon (ACR BI-RADS Atlas, 5th ed., 2013): benign masses
are oval, circumscribed and parallel to the skin (wider than tall), anechoic cysts show posterior
enhancement; malignant masses are irregular with spiculated or microlobulated margins, often taller
than wide, heterogeneous and hypoechoic, often with posterior shadowing and an echogenic halo.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

LABELS = ("benign", "malignant", "normal", "unlabelled")
OTHER_ORGANS = ("liver", "heart", "lung", "fetal-head", "thyroid")
ORGANS = ("breast", *OTHER_ORGANS)

# (label, organ, share of a set): 35 % benign, 20 % malignant, 10 % normal breast, 35 % other organs
QUOTAS: tuple[tuple[str, str, float], ...] = (
    ("benign", "breast", 0.35),
    ("malignant", "breast", 0.20),
    ("normal", "breast", 0.10),
    *(("unlabelled", organ, 0.35 / len(OTHER_ORGANS)) for organ in OTHER_ORGANS),
)
MIN_SIZE = 16
_COMPOSITION_STREAM = 0x636F6D70  # keeps the composition's random stream apart from the scans'
_SCAN_STREAM = 0x7363616E


@dataclass(frozen=True)
class SyntheticScan:
    """One synthetic scan.

    ``image``: uint8 ``[size, size]`` grey. ``mask``: uint8 ``[size, size]`` with 0/1 values for breast
    scans (all zero for ``normal``), ``None`` for unlabelled organ scans. ``label``: benign, malignant,
    normal or unlabelled. ``organ``: breast, liver, heart, lung, fetal-head or thyroid.
    """

    image: np.ndarray
    mask: np.ndarray | None
    label: str
    organ: str


def composition(count: int, seed: int) -> list[tuple[str, str]]:
    """``(label, organ)`` of each index of a set of ``count`` scans.

    The quotas of ``QUOTAS`` are met exactly (largest remainder) and each class is spread evenly
    over the indices (seeded offsets), so any prefix of the set has nearly the same mix.
    """
    return list(_composition(int(count), int(seed)))


def generate(index: int, count: int, seed: int, size: int) -> SyntheticScan:
    """Render scan ``index`` of a set of ``count`` at ``size`` x ``size`` pixels.

    A pure function of its arguments: the same arguments give identical arrays.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if not 0 <= index < count:
        raise ValueError(f"index must be in [0, {count}), got {index}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE}, got {size}")
    label, organ = _composition(int(count), int(seed))[index]
    rng = np.random.default_rng([int(seed) % 2**64, int(index), _SCAN_STREAM])
    probe = _PROBES[organ](rng)
    scene = _Scene.create(rng, probe, _coarse_size(size))
    lesions = _PAINTERS[organ](scene, label)
    image = _render(scene, probe, size)
    mask = None
    if label != "unlabelled":
        mask = _lesion_mask(lesions, size)
        _breast_overlays(rng, image, mask)
    else:
        _fan_overlays(rng, image)
    return SyntheticScan(image=image, mask=mask, label=label, organ=organ)


# --------------------------------------------------------------------------------------------------
# composition


@lru_cache(maxsize=16)
def _composition(count: int, seed: int) -> tuple[tuple[str, str], ...]:
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    shares = np.array([q[2] for q in QUOTAS])
    exact = shares / shares.sum() * count
    quotas = np.floor(exact).astype(int)
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[: count - int(quotas.sum())]] += 1
    rng = np.random.default_rng([int(seed) % 2**64, count, _COMPOSITION_STREAM])
    keys: list[float] = []
    kinds: list[tuple[str, str]] = []
    for (label, organ, _), n in zip(QUOTAS, quotas):
        offset = rng.random()
        jitter = rng.uniform(-0.25, 0.25, size=int(n))
        keys.extend(((np.arange(n) + offset + jitter) / max(n, 1)).tolist())
        kinds.extend([(label, organ)] * int(n))
    return tuple(kinds[i] for i in np.argsort(keys, kind="stable"))


# --------------------------------------------------------------------------------------------------
# probe geometry and the coarse anatomy grid


@dataclass(frozen=True)
class _Probe:
    """Imaging geometry in image heights: a linear array, or a fan from a virtual apex.

    ``apex``: distance from the apex to the probe face (0 for linear); ``depth``: imaged depth along
    the beam; ``half_angle``: half the fan's opening in radians (0 for linear).
    """

    kind: str
    apex: float = 0.0
    depth: float = 1.0
    half_angle: float = 0.0


def _linear(rng: np.random.Generator) -> _Probe:
    return _Probe("linear")


def _convex(rng: np.random.Generator) -> _Probe:
    apex = rng.uniform(0.1, 0.35)
    depth = rng.uniform(0.78, 0.95)
    half = min(rng.uniform(math.radians(32), math.radians(42)), math.asin(0.6 / (apex + depth)))
    return _Probe("convex", apex, depth, half)


def _sector(rng: np.random.Generator) -> _Probe:
    return _Probe("sector", rng.uniform(0.0, 0.03), rng.uniform(0.86, 0.97), math.radians(rng.uniform(36, 46)))


def _lung_probe(rng: np.random.Generator) -> _Probe:
    return _convex(rng) if rng.random() < 0.6 else _linear(rng)


_PROBES: dict[str, Callable[[np.random.Generator], _Probe]] = {
    "breast": _linear,
    "thyroid": _linear,
    "liver": _convex,
    "fetal-head": _convex,
    "lung": _lung_probe,
    "heart": _sector,
}


def _coarse_size(size: int) -> int:
    """Side of the anatomy grid: full resolution up to 96 px, half above (the PSF blurs finer detail)."""
    return size if size <= 96 else (size + 1) // 2


def _beam_coordinates(probe: _Probe, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Depth ``d`` [n, 1], lateral beam position ``u`` [1, n] (0..1) and Cartesian ``x``, ``z`` (image
    units, broadcastable to [n, n]) of the centres of an n x n beam-space grid."""
    d = ((np.arange(n, dtype=np.float32) + 0.5) / n * probe.depth)[:, None]
    u = ((np.arange(n, dtype=np.float32) + 0.5) / n)[None, :]
    if probe.kind == "linear":
        return d, u, u, d
    theta = (2 * u - 1) * probe.half_angle
    radius = probe.apex + d
    return d, u, 0.5 + radius * np.sin(theta), radius * np.cos(theta) - probe.apex


@dataclass
class _Scene:
    """Anatomy on the coarse beam grid: ``echo`` (dB re. glandular tissue) and ``absorb`` (extra
    round-trip loss deposited at each sample, dB), both float32 [m, m]; rows are depth."""

    rng: np.random.Generator
    m: int
    d: np.ndarray
    u: np.ndarray
    x: np.ndarray
    z: np.ndarray
    echo: np.ndarray
    absorb: np.ndarray
    probe: _Probe

    @classmethod
    def create(cls, rng: np.random.Generator, probe: _Probe, m: int) -> _Scene:
        d, u, x, z = _beam_coordinates(probe, m)
        zeros = np.zeros((m, m), np.float32)
        return cls(rng, m, d, u, x, z, zeros, zeros.copy(), probe)

    def field(self, sx: float, sz: float, n: int = 1) -> np.ndarray:
        """Smooth Gaussian random field(s), zero mean and unit std, float32 [m, m] (or [n, m, m])."""
        f = _random_field(self.rng, self.m, sx, sz, n)
        return f[0] if n == 1 else f

    def curve(self, scale: float, amp: float) -> np.ndarray:
        """A smooth random function of the lateral position, float32 [1, m], peak |value| = amp."""
        return _curve(self.rng, self.u, scale, amp)

    def paint(self, weight: np.ndarray | float, level: np.ndarray | float) -> None:
        """Blend ``level`` (dB) into the echo map with ``weight`` in [0, 1]."""
        self.echo += (level - self.echo) * weight

    def shadow(self, weight: np.ndarray, db: float, fade: float | None = None, soften: float = 0.0) -> None:
        """Deposit ``db`` of extra loss behind the region ``weight`` (negative: enhancement), scaled by
        each beam's path length through it relative to the longest. With ``fade`` (image heights) the
        effect ends that far below the region; ``soften`` blurs its edges across beams (grid widths)."""
        thickest = float(weight.sum(axis=0).max())
        if thickest <= 0:
            return
        deposit = weight * np.float32(db / thickest)
        if soften > 0:
            deposit = _blur_columns(deposit, soften * self.m)
        self.absorb += deposit
        rows = int(round(fade * self.m)) if fade is not None else self.m
        if rows < self.m:
            self.absorb[rows:] -= deposit[: self.m - rows]


def _blur_columns(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur along axis 1 (across beams) of a float32 [rows, cols] array; sigma in columns."""
    radius = max(1, int(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / max(sigma, 1e-3)) ** 2).astype(np.float32)
    kernel /= kernel.sum()
    padded = np.pad(a, ((0, 0), (radius, radius)), mode="edge")
    out = np.zeros_like(a)
    for k, w in enumerate(kernel):
        out += w * padded[:, k : k + a.shape[1]]
    return out


def _random_field(rng: np.random.Generator, m: int, sx: float, sz: float, n: int) -> np.ndarray:
    """``n`` Gaussian random fields [n, m, m] by spectral synthesis (float32, zero mean, unit std).

    ``sx``, ``sz`` are Gaussian correlation lengths in grid widths / heights. The noise is drawn per
    spatial frequency (cycles per grid), so the same draw gives the same texture at every size.
    """
    kx, kz = math.ceil(0.5 / sx), math.ceil(0.5 / sz)
    rows = np.arange(-kz, kz + 1)
    cols = np.arange(0, kx + 1)
    gain = np.exp(-2 * math.pi**2 * ((sz * rows[:, None]) ** 2 + (sx * cols[None, :]) ** 2))
    noise = rng.standard_normal((n, rows.size, cols.size, 2), dtype=np.float32).view(np.complex64)[..., 0]
    spectrum = np.zeros((n, m, m // 2 + 1), np.complex64)
    keep_rows = np.abs(rows) < m / 2
    keep_cols = min(cols.size, m // 2 + 1)
    spectrum[:, rows[keep_rows] % m, :keep_cols] = (noise * gain.astype(np.float32))[:, keep_rows, :keep_cols]
    fields = np.fft.irfft2(spectrum, s=(m, m)).astype(np.float32)
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    fields /= fields.std(axis=(1, 2), keepdims=True) + np.float32(1e-12)
    return fields


def _curve(rng: np.random.Generator, u: np.ndarray, scale: float, amp: float) -> np.ndarray:
    """A smooth 1-D Gaussian random function of ``u`` (correlation length ``scale`` in grid widths),
    float32 [1, m], scaled so that its peak |value| is ``amp``."""
    k = np.arange(1, math.ceil(0.5 / scale) + 1)
    gain = np.exp(-2 * math.pi**2 * (scale * k) ** 2)
    coef = rng.standard_normal((2, k.size)) * gain
    phase = 2 * math.pi * k[:, None] * u.ravel()[None, :]
    c = coef[0] @ np.cos(phase) + coef[1] @ np.sin(phase)
    c -= c.mean()
    peak = float(np.abs(c).max()) or 1.0
    return (c * (amp / peak)).astype(np.float32)[None, :]


def _ridge(dist: np.ndarray, width: float) -> np.ndarray:
    """A bright line profile exp(-(dist / width)^2) in [0, 1]."""
    return np.exp(-np.square(dist / np.float32(width)))


def _step(dist: np.ndarray, width: float) -> np.ndarray:
    """A soft 0 -> 1 step where ``dist`` crosses 0 (logistic over ``width``)."""
    return 0.5 + 0.5 * np.tanh(dist / np.float32(width))


# --------------------------------------------------------------------------------------------------
# blobs: lesions, chambers, vessels in cross-section


@dataclass(frozen=True)
class _Blob:
    """A star-shaped region: an ellipse (centre, semi-axes ``a`` lateral / ``b`` axial, rotation)
    whose radius is scaled by ``radius[k]`` at polar angle 2*pi*k/len(radius) - pi (image units)."""

    cx: float
    cz: float
    a: float
    b: float
    angle: float
    radius: np.ndarray

    def q(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Normalised radius, float32: < 1 inside, 1 on the margin, (q - 1) * size ~ distance outside."""
        dx, dz = x - np.float32(self.cx), z - np.float32(self.cz)
        c, s = np.float32(math.cos(self.angle)), np.float32(math.sin(self.angle))
        p = (dx * c + dz * s) * np.float32(1 / self.a)
        t = (dz * c - dx * s) * np.float32(1 / self.b)
        table = _diamond_table(self.radius)
        k = (_diamond_angle(p, t) * np.float32(table.size / 4)).astype(np.intp)
        return np.sqrt(p * p + t * t) / table[np.minimum(k, table.size - 1)]

    @property
    def extent(self) -> float:
        """Radius of a circle around the centre that holds the whole blob."""
        return float(self.radius.max()) * max(self.a, self.b)


def _diamond_angle(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A cheap monotone stand-in for the polar angle of (p, t), in [0, 4) (arctan2 is 10x slower)."""
    v = t / (np.abs(p) + np.abs(t) + np.float32(1e-12))
    return np.where(p >= 0, v + np.float32(2), np.where(t >= 0, np.float32(4), np.float32(0)) - v)


_DIAMOND_SAMPLES = 2048


@lru_cache(maxsize=4)
def _diamond_to_angle(n: int) -> np.ndarray:
    """Polar angle in [-pi, pi) at ``n`` evenly spaced diamond angles in [0, 4)."""
    s = (np.arange(n) + 0.5) * (4 / n)
    front = (s >= 1) & (s < 3)  # p >= 0
    v = np.where(front, s - 2, np.where(s >= 3, 4 - s, -s))
    return np.arctan2(v, np.where(front, 1 - np.abs(v), np.abs(v) - 1))


def _diamond_table(radius: np.ndarray) -> np.ndarray:
    """A radius table over polar angle resampled over the diamond angle, float32 [_DIAMOND_SAMPLES]."""
    theta = _diamond_to_angle(_DIAMOND_SAMPLES)
    k = ((theta + math.pi) * (radius.size / (2 * math.pi))).astype(np.intp) % radius.size
    return radius[k]


def _radius_table(
    rng: np.random.Generator, smooth: float, micro: float = 0.0, spicules: int = 0, n: int = 720
) -> np.ndarray:
    """Radial perturbation of an ellipse, float32 [n] over polar angles -pi..pi: low harmonics of
    amplitude ``smooth``, high harmonics (microlobulation) of amplitude ``micro`` and ``spicules``
    narrow radial spikes."""
    theta = np.linspace(-math.pi, math.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 6):
        r += smooth * rng.uniform(0, 1) / k**0.6 * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    if micro > 0:
        for k in rng.integers(7, 22, size=6):
            r += micro * rng.uniform(0.4, 1) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    for _ in range(spicules):
        centre, width = rng.uniform(-math.pi, math.pi), rng.uniform(0.035, 0.09)
        gap = np.angle(np.exp(1j * (theta - centre)))
        r += rng.uniform(0.15, 0.45) * np.exp(-np.square(gap / width))
    return np.maximum(r, 0.3).astype(np.float32)


def _smooth_blob(
    rng: np.random.Generator, cx: float, cz: float, a: float, b: float, angle: float, wobble: float = 0.06
) -> _Blob:
    return _Blob(cx, cz, a, b, angle, _radius_table(rng, wobble))


def _tube(
    x: np.ndarray, z: np.ndarray, x0: float, z0: float, angle: float, length: float, bend: float, r0: float, r1: float
) -> np.ndarray:
    """Normalised distance to a bent, tapering tube with rounded ends (a vessel), float32: < 1 inside.

    It starts at (x0, z0) heading ``angle``, bends by ``bend`` (offset per unit length squared) and its
    radius tapers from ``r0`` to ``r1`` (image units).
    """
    c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    dx, dz = x - np.float32(x0), z - np.float32(z0)
    along = dx * c + dz * s
    on_axis = np.clip(along, 0, np.float32(length))
    across = dz * c - dx * s - np.float32(bend) * on_axis * on_axis
    radius = np.float32(r0) + np.float32((r1 - r0) / length) * on_axis
    return (np.sqrt(np.square(along - on_axis) + np.square(across)) / radius).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# breast (linear probe): skin, fat lobules, Cooper's ligaments, fibroglandular layer, pectoralis


def _breast(s: _Scene, label: str) -> list[_Blob]:
    rng, d, u = s.rng, s.d, s.u
    zoom = rng.uniform(0.75, 1.45)  # > 1: a shallower depth setting, so structures look bigger
    top = rng.uniform(0.0, 0.02)
    skin = top + rng.uniform(0.02, 0.04) * zoom + s.curve(0.3, 0.006)
    fat = rng.uniform(0.05, 0.26) * zoom
    fat_end = skin + fat + s.curve(0.08, 0.04 * zoom)  # an irregular fat-gland interface
    gland_end = np.maximum(skin + fat + rng.uniform(0.18, 0.4) * zoom + s.curve(0.15, 0.04 * zoom), fat_end + 0.04)
    rm_end = gland_end + rng.uniform(0.02, 0.07) * zoom + s.curve(0.15, 0.015)
    muscle_end = rm_end + rng.uniform(0.08, 0.18) * zoom + s.curve(0.2, 0.02)

    streaks, lobules, islands, ligaments = s.field(0.06 / zoom, 0.012 / zoom, 4)
    fibres = s.field(0.2, 0.1)
    fat_level = rng.uniform(-15, -10)
    s.echo[:] = fat_level + 2.5 * lobules
    s.paint(_step(d - fat_end, 0.012), rng.uniform(-2, 1) + rng.uniform(2, 4) * streaks)  # gland
    s.paint(_step(d - fat_end, 0.01) * (islands > rng.uniform(0.5, 1.3)), fat_level + 2 * lobules)
    s.paint(_step(d - gland_end, 0.01), fat_level + 2 * lobules)  # retromammary fat
    # pectoralis: hypoechoic muscle with oblique bright fibres, fascia lines at both surfaces
    tilt, pitch = rng.uniform(-0.35, 0.35), rng.uniform(25, 45) / zoom
    striation = _ridge(np.sin(2 * math.pi * pitch * (d + tilt * u) + 0.6 * fibres), 0.35)
    s.paint(_step(d - rm_end, 0.006), rng.uniform(-11, -7) + 5 * striation)
    deep = _step(d - muscle_end, 0.01)
    s.paint(deep, rng.uniform(-14, -8) + 3 * lobules)
    # Cooper's ligaments: thin bright curves that tent up through the fat into the skin
    lig = _ridge(ligaments, 0.15) * (1 - deep)
    s.echo += lig * rng.uniform(6, 11) * _step(d - skin, 0.01)
    for line, db, width in ((rm_end, 8, 0.006), (muscle_end, 9, 0.007), (gland_end, 3, 0.008)):
        s.echo += db * _ridge(d - line, width)
    # skin: bright entry echo, dermis, bright inner line; coupling gel above
    s.paint(_step(skin - d, 0.004), -4 + lobules)
    s.echo += 9 * _ridge(d - top - 0.004, 0.005) + 5 * _ridge(d - skin, 0.005)
    s.paint(_step(top - d, 0.002), -50)
    _chest_wall(s, muscle_end)
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.3 else 0):  # ducts: lesion look-alikes
        r0 = rng.uniform(0.008, 0.02) * zoom
        duct = _tube(
            s.x,
            s.z,
            rng.uniform(0.1, 0.9),
            float(rng.uniform(np.mean(fat_end), np.mean(gland_end))),
            rng.uniform(-0.4, 0.4) + rng.choice([0.0, math.pi]),
            rng.uniform(0.1, 0.3),
            rng.uniform(-3, 3),
            r0,
            r0 * rng.uniform(0.5, 1),
        )
        s.paint(_step(1 - duct, 0.3), fat_level - rng.uniform(3, 12))

    if label == "normal":
        return []
    malignant = label == "malignant"
    n_lesions = 1 if malignant or rng.random() > 0.12 else 2
    lo, hi = float(np.min(fat_end)) + 0.02, min(float(np.max(gland_end)) + 0.06, 0.78)
    blobs = []
    for _ in range(n_lesions):
        blob = _lesion_shape(rng, malignant, zoom, lo, max(hi, lo + 0.1))
        _paint_lesion(s, blob, malignant, fat_level)
        blobs.append(blob)
    return blobs


def _chest_wall(s: _Scene, muscle_end: np.ndarray) -> None:
    """Below the pectoralis: a rib with its shadow, the pleura with reverberation, or deep tissue."""
    rng, d = s.rng, s.d
    choice = rng.random()
    depth = muscle_end + rng.uniform(0.02, 0.06)
    if choice < 0.2:  # rib in cross-section: a bright curved surface that stops the beam
        rib = _smooth_blob(
            rng,
            rng.uniform(0.1, 0.9),
            float(np.mean(depth)) + 0.06,
            rng.uniform(0.08, 0.15),
            rng.uniform(0.05, 0.08),
            rng.uniform(-0.15, 0.15),
        )
        q = rib.q(s.x, s.z)
        facing = np.square(np.clip((rib.cz - s.z) / np.float32(rib.b), 0, 1))
        surface = _ridge(q - 1, 0.2) * facing
        s.paint(surface, rng.uniform(4, 10))
        s.shadow(_step(1 - q, 0.1), rng.uniform(30, 40))
    elif choice < 0.5:  # pleura: bright line, dark air below with a faint reverberation
        s.paint(_ridge(d - depth, 0.006), rng.uniform(6, 10))
        below = _step(d - depth - 0.01, 0.01)
        s.paint(below, -22 + 2 * s.field(0.2, 0.02))
        s.echo += rng.uniform(2, 6) * _ridge(d - 2 * depth, 0.008) * below


def _lesion_shape(rng: np.random.Generator, malignant: bool, zoom: float, lo: float, hi: float) -> _Blob:
    """A lesion outline: benign oval and parallel, malignant irregular, often taller than wide."""
    a = math.exp(rng.uniform(math.log(0.05), math.log(0.2))) * min(zoom, 1.2)
    if malignant:
        ratio = rng.uniform(1.0, 1.45) if rng.random() < 0.55 else rng.uniform(0.6, 1.0)
        angle = rng.uniform(-0.6, 0.6)
        radius = _radius_table(
            rng, smooth=rng.uniform(0.08, 0.22), micro=rng.uniform(0.015, 0.045), spicules=int(rng.integers(0, 9))
        )
    else:
        ratio = rng.uniform(0.45, 0.85)
        angle = rng.uniform(-0.3, 0.3)
        lobulated = rng.random() < 0.2
        radius = _radius_table(rng, smooth=rng.uniform(0.1, 0.16) if lobulated else rng.uniform(0.0, 0.06))
    b = a * ratio
    extent = max(a, b) * float(radius.max())
    cx = rng.uniform(0.12 + 0.5 * extent, 0.88 - 0.5 * extent) if extent < 0.7 else 0.5
    cz = float(np.clip(rng.uniform(lo, hi), 0.08 + 0.8 * b, 0.9 - b))
    return _Blob(cx, cz, a, b, angle, radius)


def _paint_lesion(s: _Scene, blob: _Blob, malignant: bool, fat_db: float) -> None:
    """Interior echo, margin, halo or capsule, calcifications and the posterior feature of a lesion.

    Solid lesions are hypoechoic: a few dB below the fat (``fat_db``), the darkest tissue around them.
    """
    rng = s.rng
    q = blob.q(s.x, s.z)
    size = 0.5 * (blob.a + blob.b)
    pixel = 1.0 / s.m
    texture = s.field(0.03, 0.02)
    if malignant:
        level = fat_db - rng.uniform(4, 12) + rng.uniform(3, 6) * texture
        inside = _step(1 - q, max(rng.uniform(0.02, 0.07), 0.7 * pixel / size))
        if rng.random() < 0.4:  # echogenic halo
            width = rng.uniform(0.12, 0.3)
            s.echo += rng.uniform(3, 7) * _ridge(q - 1 - width / 2, width / 2)
        s.paint(inside, level)
        if rng.random() < 0.4:  # microcalcifications
            for _ in range(int(rng.integers(2, 9))):
                r, t = rng.uniform(0, 0.75), rng.uniform(-math.pi, math.pi)
                px = blob.cx + r * blob.a * math.cos(t)
                pz = blob.cz + r * blob.b * math.sin(t)
                s.echo += 16 * _ridge(np.hypot(s.x - px, s.z - pz), max(0.004, pixel))
        feature = rng.random()
        if feature < 0.65:  # posterior shadowing, streaky
            streaky = np.clip(1 + 0.5 * s.field(0.015, 0.2), 0.2, None)
            s.shadow(inside * streaky, rng.uniform(8, 20), fade=rng.uniform(0.3, 1.0), soften=rng.uniform(0.005, 0.02))
        elif feature < 0.8:
            s.shadow(inside, -rng.uniform(2, 5), fade=rng.uniform(0.1, 0.3))
        return
    edge = max(0.02, 0.7 * pixel / size)
    inside = _step(1 - q, edge)
    if rng.random() < 0.35:  # simple cyst: anechoic, sometimes debris, enhancement, edge shadows
        debris = rng.random() < 0.2
        s.paint(inside, (-32 + 3 * texture) if debris else -48)
        s.shadow(inside, -rng.uniform(4, 9), fade=rng.uniform(0.1, 0.3), soften=0.005)
        if rng.random() < 0.3:
            for side in (-1, 1):
                ex = blob.cx + side * blob.a * math.cos(blob.angle)
                spot = _ridge(s.x - ex, max(0.012, 1.5 * pixel)) * _ridge(s.z - blob.cz, 0.02)
                s.shadow(spot, rng.uniform(4, 9), fade=rng.uniform(0.15, 0.4))
        return
    s.paint(inside, fat_db - rng.uniform(2, 9) + rng.uniform(1, 3) * texture)
    if rng.random() < 0.4:  # thin echogenic capsule
        s.echo += rng.uniform(3, 6) * _ridge((q - 1) * size, max(0.004, pixel))
    if rng.random() < 0.5:
        s.shadow(inside, -rng.uniform(1, 5), fade=rng.uniform(0.1, 0.3))


def _lesion_mask(blobs: list[_Blob], size: int) -> np.ndarray:
    """Exact lesion mask, uint8 [size, size] (0/1), evaluated at pixel centres (linear probe)."""
    mask = np.zeros((size, size), np.uint8)
    for blob in blobs:
        r = blob.extent
        c0, c1 = max(int((blob.cx - r) * size), 0), min(int(math.ceil((blob.cx + r) * size)) + 1, size)
        r0, r1 = max(int((blob.cz - r) * size), 0), min(int(math.ceil((blob.cz + r) * size)) + 1, size)
        if c1 <= c0 or r1 <= r0:
            continue
        x = ((np.arange(c0, c1, dtype=np.float32) + 0.5) / size)[None, :]
        z = ((np.arange(r0, r1, dtype=np.float32) + 0.5) / size)[:, None]
        mask[r0:r1, c0:c1] |= (blob.q(x, z) < 1).astype(np.uint8)
        if not mask[r0:r1, c0:c1].any():  # a lesion smaller than a pixel still marks its centre
            mask[min(int(blob.cz * size), size - 1), min(int(blob.cx * size), size - 1)] = 1
    return mask


# --------------------------------------------------------------------------------------------------
# other organs (unlabelled)


def _body_wall(s: _Scene, thickness: float) -> np.ndarray:
    """Skin, subcutaneous fat and striated muscle over ``thickness``; returns its deep boundary [1, m]."""
    rng, d, u = s.rng, s.d, s.u
    skin = 0.015 + s.curve(0.3, 0.004)
    fat_end = skin + rng.uniform(0.25, 0.55) * thickness + s.curve(0.3, 0.01)
    wall_end = skin + thickness + s.curve(0.3, 0.015)
    tex, fibres = s.field(0.05, 0.02, 2)
    s.echo[:] = -12 + 2 * tex
    striation = _ridge(np.sin(2 * math.pi * rng.uniform(30, 60) * (d + rng.uniform(-0.2, 0.2) * u) + fibres), 0.4)
    s.paint(_step(d - fat_end, 0.005), -10 + 6 * striation)
    for line, db in ((skin, 8), (fat_end, 6), (wall_end, 8)):
        s.echo += db * _ridge(d - line, 0.006)
    return wall_end


def _near_field(s: _Scene) -> None:
    """Ring-down clutter just below a curved or phased array's face."""
    s.echo += s.rng.uniform(3, 8) * _step(0.03 - s.d, 0.01) * (1 + 0.5 * s.field(0.05, 0.01))


def _liver(s: _Scene, label: str) -> list[_Blob]:
    rng, d = s.rng, s.d
    wall = _body_wall(s, rng.uniform(0.08, 0.2))
    tex = s.field(0.02, 0.015)
    liver = _step(d - wall, 0.005)
    s.paint(liver, rng.uniform(-5, -1) + 1.5 * tex)
    s.echo += 9 * _ridge(d - wall, 0.006)  # Glisson's capsule
    # hepatic veins (no wall) converge towards the cava; portal branches have bright walls
    hub_x, hub_z = rng.uniform(0.2, 0.8), rng.uniform(0.55, 1.0)
    for _k in range(int(rng.integers(2, 8))):
        portal = rng.random() < 0.5
        x0, z0 = (rng.uniform(0.1, 0.9), rng.uniform(0.3, 0.9)) if portal else (hub_x, hub_z)
        angle = rng.uniform(-math.pi, 0) if rng.random() < 0.7 else rng.uniform(0, math.pi)
        r0 = rng.uniform(0.01, 0.03)
        q = _tube(s.x, s.z, x0, z0, angle, rng.uniform(0.15, 0.5), rng.uniform(-2, 2), r0, r0 * rng.uniform(0.3, 0.8))
        s.paint(_step(1 - q, 0.15) * liver, -32)
        if portal:
            s.paint(_ridge(q - 1.3, 0.25) * liver, rng.uniform(4, 9))
    for _ in range(int(rng.integers(2, 7))):  # vessels in cross-section
        r = rng.uniform(0.008, 0.03)
        blob = _smooth_blob(rng, rng.uniform(0.1, 0.9), rng.uniform(0.3, 0.9), r, r * rng.uniform(0.6, 1), 0.0)
        s.paint(_step(1 - blob.q(s.x, s.z), 0.15) * liver, -32)
    if rng.random() < 0.3:  # gallbladder: anechoic pear with posterior enhancement
        gb = _smooth_blob(
            rng,
            rng.uniform(0.3, 0.7),
            rng.uniform(0.35, 0.6),
            rng.uniform(0.1, 0.18),
            rng.uniform(0.04, 0.07),
            rng.uniform(-0.6, 0.6),
            0.1,
        )
        inside = _step(1 - gb.q(s.x, s.z), 0.05)
        s.paint(inside, -48)
        s.echo += 6 * _ridge(gb.q(s.x, s.z) - 1.05, 0.06)
        s.shadow(inside, -rng.uniform(4, 9))
    if rng.random() < 0.35:  # kidney: hypoechoic cortex, bright central sinus
        k = _smooth_blob(
            rng,
            rng.uniform(0.3, 0.7),
            rng.uniform(0.65, 0.85),
            rng.uniform(0.14, 0.22),
            rng.uniform(0.07, 0.1),
            rng.uniform(-0.4, 0.4),
            0.04,
        )
        q = k.q(s.x, s.z)
        s.paint(_step(1 - q, 0.04), -12 + 2 * tex)
        s.paint(_step(0.55 - q, 0.08), 4 + 3 * tex)
        s.echo += 8 * _ridge(q - 1.03, 0.04)
    # diaphragm: a bright arc; beyond it the mirror image of the liver or dark lung
    cx, cz, radius = rng.uniform(0.2, 0.8), rng.uniform(-0.3, 0.2), rng.uniform(0.6, 0.95)
    dist = np.hypot(s.x - cx, s.z - cz) - radius
    s.paint(_step(dist, 0.01), rng.choice([-6.0, -25.0]) + 2 * tex)
    s.echo += rng.uniform(8, 14) * _ridge(dist, 0.012)
    _near_field(s)
    return []


def _heart(s: _Scene, label: str) -> list[_Blob]:
    """Apical four-chamber or parasternal short-axis view (phased-array sector)."""
    rng = s.rng
    tex, smoke, lungs = s.field(0.03, 0.02, 3)
    s.echo[:] = -18 + 5 * lungs
    blood = -36 + 3 * smoke
    muscle = rng.uniform(-11, -5) + 3 * tex
    pericardium = rng.uniform(4, 10) * np.clip(0.6 + 0.6 * lungs, 0, 1)  # patchy bright sac
    if rng.random() < 0.7:
        axis = rng.uniform(-0.3, 0.3)
        length = rng.uniform(0.62, 0.8)
        apex_z = rng.uniform(0.06, 0.14)
        c, sn = math.cos(axis), math.sin(axis)

        def at(along: float, across: float) -> tuple[float, float]:
            return 0.5 + across * c + along * length * sn, apex_z + along * length * c - across * sn

        chambers = [  # (along, across, half-length, half-width) of LV, RV, LA, RA (screen: LV right)
            (0.38, 0.085, 0.27, 0.075),
            (0.42, -0.09, 0.22, 0.06),
            (0.8, 0.085, 0.12, 0.07),
            (0.8, -0.085, 0.11, 0.065),
        ]
        blobs = []
        for along, across, half_len, half_wid in chambers:
            cx, cz = at(along, across * rng.uniform(0.9, 1.1))
            blobs.append(
                _smooth_blob(
                    rng,
                    cx,
                    cz,
                    half_wid * rng.uniform(0.85, 1.15),
                    half_len * length * rng.uniform(0.9, 1.1),
                    -axis,
                    0.08,
                )
            )
        hx, hz = at(0.5, 0.0)
        hull = _smooth_blob(rng, hx, hz, rng.uniform(0.18, 0.21), 0.55 * length, -axis, 0.06)
        q_hull = hull.q(s.x, s.z)
        s.paint(_ridge(q_hull - 1.03, 0.04), pericardium)
        s.paint(_step(1 - q_hull, 0.03), muscle)
        for blob in blobs:
            s.paint(_step(1 - blob.q(s.x, s.z), 0.05), blood)
        for along, across in ((0.63, 0.085), (0.64, -0.085)):  # mitral and tricuspid leaflets
            for tip in (-1, 1):
                hx, hz = at(along, across + tip * 0.06)
                q = _tube(
                    s.x, s.z, hx, hz, math.pi / 2 - axis - tip * rng.uniform(0.6, 1.2), 0.05 * length, 0.0, 0.005, 0.003
                )
                s.paint(_step(1 - q, 0.2), rng.uniform(0, 6))
    else:  # short axis: round LV in a thick ring, RV crescent wrapped round its upper left
        cx, cz, r = rng.uniform(0.45, 0.6), rng.uniform(0.48, 0.6), rng.uniform(0.09, 0.13)
        lv = _smooth_blob(rng, cx, cz, r, r * rng.uniform(0.9, 1.1), 0.0, 0.05)
        wall = _Blob(cx, cz, lv.a * 1.55, lv.b * 1.55, 0.0, lv.radius)
        rv = _smooth_blob(rng, cx - 0.7 * r, cz - 0.45 * r, 2.0 * r, 1.8 * r, rng.uniform(-0.3, 0.3), 0.04)
        q_wall, q_rv = wall.q(s.x, s.z), rv.q(s.x, s.z)
        heart = np.maximum(_step(1 - q_wall, 0.04), _step(1 - q_rv, 0.04))
        s.paint(_ridge(np.minimum(q_wall, q_rv) - 1.06, 0.05), pericardium)
        s.paint(heart, muscle)
        s.paint(_step(0.85 - q_rv, 0.04) * _step(q_wall - 1.08, 0.04), blood)
        s.paint(_step(1 - lv.q(s.x, s.z), 0.05), blood)
        for _ in range(2):  # papillary muscles
            t = rng.uniform(0, 2 * math.pi)
            pm = _smooth_blob(rng, cx + 0.6 * r * math.cos(t), cz + 0.6 * r * math.sin(t), 0.2 * r, 0.25 * r, t)
            s.paint(_step(1 - pm.q(s.x, s.z), 0.1), muscle)
    _near_field(s)
    return []


def _lung(s: _Scene, label: str) -> list[_Blob]:
    """Chest wall, rib shadows, pleural line; below it A-lines, B-lines or a consolidation."""
    rng, d, u = s.rng, s.d, s.u
    pleura = _body_wall(s, rng.uniform(0.12, 0.3)) + 0.01
    p_depth = float(np.mean(pleura))
    for ux in rng.choice([0.1, 0.18, 0.82, 0.9], size=int(rng.integers(0, 3)), replace=False):
        rib = _Blob(
            float(ux), p_depth - 0.02, rng.uniform(0.07, 0.12), rng.uniform(0.03, 0.05), 0.0, _radius_table(rng, 0.03)
        )
        q = rib.q(u, d)
        facing = np.square(np.clip((rib.cz - d) / np.float32(rib.b), 0, 1))
        s.paint(_ridge(q - 1, 0.2) * facing, rng.uniform(6, 10))
        s.shadow(_step(1 - q, 0.06), rng.uniform(30, 45))
    below = _step(d - pleura, 0.004)
    s.paint(below, rng.uniform(-20, -12) + 3 * s.field(0.1, 0.03))
    kind = rng.random()
    sliding = 1 + 0.3 * s.field(0.05, 0.5)
    if kind < 0.45:  # A-lines: reverberations of the pleura at multiples of its depth
        for k in (2, 3, 4):
            s.paint(_ridge(d - k * (pleura - 0.015) - 0.015, 0.008) * np.clip(sliding, 0, 1), 6 - 4 * k)
    elif kind < 0.8:  # B-lines: laser-like vertical comet tails from the pleura to the bottom
        for _ in range(int(rng.integers(1, 6))):
            ub, w = rng.uniform(0.15, 0.85), rng.uniform(0.008, 0.03)
            s.echo += rng.uniform(16, 26) * _ridge(u - ub, w) * below * (1 - 0.4 * d)
    else:  # consolidation: tissue-like lung with air bronchograms, sometimes an effusion
        blob = _smooth_blob(
            rng,
            rng.uniform(0.3, 0.7),
            p_depth + rng.uniform(0.1, 0.25),
            rng.uniform(0.15, 0.3),
            rng.uniform(0.1, 0.2),
            rng.uniform(-0.3, 0.3),
            0.2,
        )
        region = _step(1 - blob.q(u, d), 0.1) * below
        s.paint(region, -8 + 3 * s.field(0.03, 0.02))
        s.echo += 14 * _ridge(s.field(0.04, 0.02), 0.07) * region
        if rng.random() < 0.4:
            s.paint(_step(d - p_depth - 0.01, 0.005) * _step(p_depth + 0.08 - d, 0.01), -45)
    s.echo += rng.uniform(10, 16) * _ridge(d - pleura, 0.006) * (0.8 + 0.2 * sliding)
    s.shadow(_ridge(d - pleura, 0.01), rng.uniform(4, 10))
    if s.probe.kind != "linear":
        _near_field(s)
    return []


def _fetal_head(s: _Scene, label: str) -> list[_Blob]:
    """Maternal wall, uterus, amniotic fluid and an axial fetal head: skull ring, midline, CSP, thalami."""
    rng, d = s.rng, s.d
    wall = _body_wall(s, rng.uniform(0.06, 0.14))
    uterus = wall + rng.uniform(0.03, 0.08) + s.curve(0.3, 0.02)
    tex, brain_tex = s.field(0.03, 0.02, 2)
    s.paint(_step(d - wall, 0.005), -6 + 2 * tex)
    a = rng.uniform(0.13, 0.24)
    head = _smooth_blob(
        rng,
        rng.uniform(0.36, 0.64),
        rng.uniform(max(0.3, float(np.max(uterus)) + a + 0.03), 0.62),
        a,
        a * rng.uniform(0.75, 0.88),
        rng.uniform(-math.pi / 2, math.pi / 2),
        0.02,
    )
    fluid = _step(d - uterus, 0.008)
    s.paint(fluid, -47 + 4 * _step(tex - 1.5, 0.3))
    if rng.random() < 0.4:  # placenta along the anterior wall
        s.paint(fluid * _step(uterus + rng.uniform(0.05, 0.1) + s.curve(0.2, 0.02) - d, 0.01), -3 + 2.5 * tex)
    back = head.cz + head.extent + rng.uniform(0.02, 0.15)
    s.paint(_step(d - back - s.curve(0.3, 0.04), 0.01), -7 + 2 * tex)  # posterior uterine wall
    if rng.random() < 0.5:  # part of the fetal body beside the head
        side = rng.choice([-1.0, 1.0])
        body = _smooth_blob(
            rng,
            head.cx + side * rng.uniform(1.3, 1.8) * a,
            head.cz + rng.uniform(-0.1, 0.15),
            rng.uniform(0.12, 0.2),
            rng.uniform(0.09, 0.13),
            rng.uniform(-1, 1),
            0.08,
        )
        qb = body.q(s.x, s.z)
        s.paint(_step(1 - qb, 0.05), -9 + 2 * tex)
        s.paint(_ridge(qb - 1, 0.05), 4.0)
    q = head.q(s.x, s.z)
    thickness = rng.uniform(0.07, 0.12)
    brain = _step(1 - q, 0.02)
    s.paint(brain, rng.uniform(-13, -6) + 3 * brain_tex)
    # skull: brightest where the beam meets it head-on (top and bottom of the ring)
    facing = np.square((s.z - head.cz) / (np.hypot(s.x - head.cx, s.z - head.cz) + 1e-6))
    ring = _ridge(q - 1 - thickness / 2, thickness / 2)
    s.paint(ring, rng.uniform(10, 14) + 8 * facing)
    s.shadow(_step(1 - q, 0.1), rng.uniform(6, 14))
    c, sn = math.cos(head.angle), math.sin(head.angle)
    midline = _tube(
        s.x, s.z, head.cx - 0.85 * head.a * c, head.cz - 0.85 * head.a * sn, head.angle, 1.7 * head.a, 0.0, 0.005, 0.005
    )
    s.paint(_step(1 - midline, 0.3) * brain, rng.uniform(-4, 2))
    csp_x, csp_z = head.cx - 0.35 * head.a * c, head.cz - 0.35 * head.a * sn
    csp = _Blob(csp_x, csp_z, 0.1 * head.a, 0.045 * head.a, head.angle, np.ones(8, np.float32))
    qc = csp.q(s.x, s.z)
    s.paint(_ridge(qc - 1, 0.3), 0.0)
    s.paint(_step(1 - qc, 0.1), -40)
    for side in (-1, 1):  # thalami, and the choroid plexus further out
        tx = head.cx + 0.1 * head.a * c - side * 0.15 * head.a * sn
        tz = head.cz + 0.1 * head.a * sn + side * 0.15 * head.a * c
        th = _smooth_blob(rng, tx, tz, 0.18 * head.a, 0.12 * head.a, head.angle + side * 0.5, 0.05)
        s.paint(_step(1 - th.q(s.x, s.z), 0.1) * brain, -19)
        if rng.random() < 0.5:
            px = head.cx + 0.45 * head.a * c - side * 0.45 * head.b * sn
            pz = head.cz + 0.45 * head.a * sn + side * 0.45 * head.b * c
            plexus = _smooth_blob(rng, px, pz, 0.2 * head.a, 0.1 * head.a, head.angle, 0.1)
            s.paint(_step(1 - plexus.q(s.x, s.z), 0.15) * brain, -2)
    _near_field(s)
    return []


def _thyroid(s: _Scene, label: str) -> list[_Blob]:
    """Transverse neck: strap muscles, two thyroid lobes with isthmus, trachea, carotids, jugulars."""
    rng, d, u = s.rng, s.d, s.u
    zoom = rng.uniform(0.8, 1.5)
    centre = rng.uniform(0.2, 0.8)
    wall = _body_wall(s, rng.uniform(0.05, 0.09) * zoom)
    tex = s.field(0.012, 0.01)
    straps = wall + rng.uniform(0.05, 0.09) * zoom
    s.paint(_step(d - wall, 0.005) * _step(straps - d, 0.005), -11 + 2 * tex)
    s.paint(_step(d - straps, 0.008), -9 + 3 * s.field(0.06, 0.03))
    trachea_z = float(np.mean(straps)) + rng.uniform(0.12, 0.2) * zoom
    trachea = _Blob(centre, trachea_z, rng.uniform(0.07, 0.09) * zoom, 0.08 * zoom, 0.0, _radius_table(rng, 0.02))
    level = rng.uniform(0, 4)
    for side in (-1, 1):
        lobe = _smooth_blob(
            rng,
            centre + side * rng.uniform(0.17, 0.22) * zoom,
            trachea_z - 0.01 * zoom,
            rng.uniform(0.1, 0.14) * zoom,
            rng.uniform(0.09, 0.13) * zoom,
            side * rng.uniform(0.1, 0.4),
            0.05,
        )
        q = lobe.q(s.x, s.z)
        s.paint(_step(1 - q, 0.05), level + 2 * tex)
        s.echo += 5 * _ridge(q - 1.03, 0.04)
        r = rng.uniform(0.04, 0.06) * zoom
        carotid = _smooth_blob(rng, lobe.cx + side * (lobe.a + r * 1.1), lobe.cz + 0.02, r, r, 0.0, 0.01)
        qc = carotid.q(s.x, s.z)
        s.paint(_step(1 - qc, 0.06), -48)
        s.echo += 9 * _ridge(qc - 1.08, 0.08)
        s.shadow(_step(1 - qc, 0.06), -rng.uniform(2, 5))
        jug = _smooth_blob(
            rng,
            carotid.cx + side * r * 0.8,
            carotid.cz - r * 1.3,
            r * rng.uniform(0.8, 1.4),
            r * rng.uniform(0.3, 0.7),
            side * 0.3,
            0.1,
        )
        s.paint(_step(1 - jug.q(s.x, s.z), 0.08), -46)
        if rng.random() < 0.25:  # a nodule
            nx, nz = lobe.cx + rng.uniform(-0.3, 0.3) * lobe.a, lobe.cz + rng.uniform(-0.3, 0.3) * lobe.b
            nod = _smooth_blob(rng, nx, nz, lobe.a * rng.uniform(0.2, 0.4), lobe.b * rng.uniform(0.2, 0.4), 0.0, 0.08)
            s.paint(_step(1 - nod.q(s.x, s.z), 0.06), rng.choice([-45.0, -15.0, 6.0]))
    isthmus_z = trachea_z - trachea.b - 0.03 * zoom
    isthmus = _step(0.035 * zoom - np.abs(d - isthmus_z), 0.005) * _ridge(u - centre, 0.2 * zoom)
    s.paint(isthmus, level + 2 * tex)
    qt = trachea.q(s.x, s.z)
    inside = _step(1 - qt, 0.05)
    front = np.square(np.clip((trachea.cz - s.z) / np.float32(trachea.b), 0, 1))  # the wall facing the probe
    wall = max(0.006, 1.5 / s.m)
    s.paint(inside, -12)
    s.paint(_ridge((qt - 1) * np.float32(trachea.b) - wall, 1.5 * wall) * front, rng.uniform(12, 16))
    for k in (2, 3):  # reverberation of the tracheal wall inside the air column
        s.paint(_ridge(qt - 1 + 0.3 * (k - 1), 0.06) * front * inside, 4 - 5 * k)
    s.shadow(_step(0.9 - qt, 0.05) * front, rng.uniform(20, 35))
    return []


_PAINTERS: dict[str, Callable[[_Scene, str], list[_Blob]]] = {
    "breast": _breast,
    "liver": _liver,
    "heart": _heart,
    "lung": _lung,
    "fetal-head": _fetal_head,
    "thyroid": _thyroid,
}


# --------------------------------------------------------------------------------------------------
# physics: attenuation, speckle, log compression, scan conversion


def _render(s: _Scene, probe: _Probe, size: int) -> np.ndarray:
    """The B-mode image, uint8 [size, size]: loss along beams, scan conversion of the coarse level map,
    speckle at full resolution, log compression and a grey map."""
    rng, d = s.rng, s.d
    total_loss = rng.uniform(20, 45)  # round trip at the deepest sample, dB (~0.5 dB/cm/MHz)
    compensated = rng.uniform(0.3, 0.85)  # the share time-gain compensation gives back
    freq, phase = rng.uniform(0.5, 1.5, 3), rng.uniform(0, 2 * math.pi, 3)
    tgc = sum(rng.uniform(0.5, 2) * np.sin(2 * math.pi * f * d + p) for f, p in zip(freq, phase))
    focus = rng.uniform(1, 3) * _ridge(d - rng.uniform(0.3, 0.7), 0.2)
    depth_gain = -(1 - compensated) * total_loss * d / probe.depth + tgc + focus
    level = s.echo - np.cumsum(s.absorb, axis=0) + depth_gain.astype(np.float32)
    if probe.kind != "linear":  # beams at the fan's edges are a little weaker; then to Cartesian
        level = level - 3 * _ridge(np.abs(2 * s.u - 1) - 1, 0.15)
        level = _scan_convert(level.astype(np.float32), probe, s.m, outside=-300.0)
    level = _resize(level.astype(np.float32), size, size)

    sigma_z = max(size * rng.uniform(0.0025, 0.0045), 0.5)  # axial PSF sigma, pixels
    sigma_x = sigma_z * rng.uniform(1.5, 2.6)  # lateral PSF is wider
    reduction = rng.uniform(0.55, 0.9)  # the scanner's speckle reduction, as a contrast factor in dB
    level += np.float32(reduction) * _speckle_db(rng, size, sigma_z, sigma_x, floor=rng.uniform(0.03, 0.15))

    dynamic_range, mid_grey = rng.uniform(48, 66), rng.uniform(125, 185)
    grey = np.float32(mid_grey) + level * np.float32(255 / dynamic_range)
    grey = _smooth3(grey) if rng.random() < 0.6 else grey
    gamma = rng.uniform(0.8, 1.25)
    lut = np.round(255 * (np.arange(256) / 255) ** gamma).astype(np.uint8)
    return lut[np.clip(grey, 0, 255).astype(np.uint8)]


def _speckle_db(rng: np.random.Generator, size: int, sigma_z: float, sigma_x: float, floor: float) -> np.ndarray:
    """Fully developed speckle, float32 [size, size]: 10*log10 of the intensity (mean 1, plus an
    electronic-noise ``floor``) of circular Gaussian scatterers seen through a Gaussian PSF (sigma in
    pixels: axial ``sigma_z`` along rows, lateral ``sigma_x`` along columns).

    The field is synthesised in the frequency domain, only over the PSF's lateral band. Uniform
    spectral noise is enough: every pixel sums thousands of coefficients, so the field is Gaussian and
    its envelope Rayleigh (central limit theorem), at a third of the cost of normal draws.
    """
    fz = np.fft.fftfreq(size).astype(np.float32)
    fx = np.fft.fftfreq(size).astype(np.float32)
    gain_x = np.exp(-2 * math.pi**2 * (sigma_x * fx) ** 2)
    cols = np.nonzero(gain_x > 1e-2)[0]
    gain = np.exp(-2 * math.pi**2 * (sigma_z * fz) ** 2)[:, None] * gain_x[cols][None, :]
    noise = rng.random((size, cols.size, 2), dtype=np.float32)
    noise -= np.float32(0.5)
    half = np.fft.ifft(noise.view(np.complex64)[..., 0] * gain.astype(np.float32), axis=0)
    full = np.zeros((size, size), np.complex64)
    full[:, cols] = half
    field = np.fft.ifft(full, axis=1)
    intensity = field.real**2 + field.imag**2
    intensity *= np.float32(1 / intensity.mean())
    intensity += np.float32(floor)
    return np.log(intensity) * np.float32(10 / math.log(10))


def _smooth3(a: np.ndarray) -> np.ndarray:
    """The scanner's speckle smoothing: a [1, 2, 1] / 4 filter along both axes (edges kept)."""
    out = a.copy()
    out[1:-1] = 0.5 * a[1:-1] + 0.25 * (a[:-2] + a[2:])
    res = out.copy()
    res[:, 1:-1] = 0.5 * out[:, 1:-1] + 0.25 * (out[:, :-2] + out[:, 2:])
    return res


def _resize(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Bilinear resize of a float32 [h, w] array (pixel centres aligned)."""
    return _lerp_axis(_lerp_axis(a, rows, 0), cols, 1)


def _lerp_axis(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    m = a.shape[axis]
    if m == n:
        return a
    if axis == 1:  # gathering rows is much faster than gathering columns
        return np.ascontiguousarray(_lerp_axis(np.ascontiguousarray(a.T), n, 0).T)
    pos = np.clip((np.arange(n) + 0.5) * (m / n) - 0.5, 0, m - 1)
    i0 = pos.astype(np.intp)
    i1 = np.minimum(i0 + 1, m - 1)
    w = (pos - i0).astype(np.float32)[:, None]
    return a[i0] * (1 - w) + a[i1] * w


def _scan_convert(beam: np.ndarray, probe: _Probe, n: int, outside: float) -> np.ndarray:
    """Map a beam-space map float32 [n (depth), n (beams)] to n x n Cartesian pixels by bilinear
    interpolation; ``outside`` beyond the fan."""
    px = ((np.arange(n, dtype=np.float32) + 0.5) / n - 0.5)[None, :]
    pz = ((np.arange(n, dtype=np.float32) + 0.5) / n + probe.apex)[:, None]
    radius = np.sqrt(px * px + pz * pz)
    row = (radius - np.float32(probe.apex)) * np.float32(n / probe.depth) - np.float32(0.5)
    theta = np.arcsin(px / radius)  # the apex is above the image, so |theta| < pi / 2
    col = (theta * np.float32(1 / probe.half_angle) + 1) * np.float32(0.5 * n) - np.float32(0.5)
    inside = (row > -1) & (row < n) & (col > -1) & (col < n)
    row = np.clip(row, 0, n - 1.001)
    col = np.clip(col, 0, n - 1.001)
    r0, c0 = row.astype(np.intp), col.astype(np.intp)
    wr, wc = row - r0.astype(np.float32), col - c0.astype(np.float32)
    flat = beam.ravel()
    k = r0 * n + c0
    top = flat[k] + (flat[k + 1] - flat[k]) * wc
    bottom = flat[k + n] + (flat[k + n + 1] - flat[k + n]) * wc
    return np.where(inside, top + (bottom - top) * wr, np.float32(outside))


# --------------------------------------------------------------------------------------------------
# overlays: calipers, orientation marker, annotation text, depth scale

_GLYPHS = {  # 3 x 5 bitmap font, rows top to bottom
    "A": "010101111101101",
    "B": "110101110101110",
    "E": "111100110100111",
    "F": "111100110100100",
    "G": "011100101101011",
    "H": "101101111101101",
    "I": "111010010010111",
    "L": "100100100100111",
    "R": "110101110101101",
    "S": "011100010001110",
    "T": "111010010010010",
    "D": "110101101101110",
    "N": "101111111111101",
    "M": "101111111101101",
    "O": "010101101101010",
    "C": "011100100100011",
    "K": "101101110101101",
    "0": "111101101101111",
    "1": "010110010010111",
    "2": "110001010100111",
    "3": "110001010001110",
    "4": "101101111001001",
    "5": "111100110001110",
    "6": "011100110101010",
    "7": "111001010010010",
    "8": "010101010101010",
    "9": "010101011001110",
    ":": "000010000010000",
    " ": "000000000000000",
}
_WORDS = (
    "LEFT BREAST",
    "RIGHT BREAST",
    "LT BREAST",
    "RT BREAST",
    "RT 10:00",
    "LT 2:00",
    "RADIAL",
    "ANTI RAD",
    "LT 3 CM FN",
    "RT 12:00",
)


def _draw_text(image: np.ndarray, text: str, row: int, col: int, scale: int, value: int) -> None:
    """Burn ``text`` (3 x 5 glyphs enlarged ``scale`` times) into ``image`` from (row, col)."""
    for i, ch in enumerate(text):
        glyph = np.array([int(b) for b in _GLYPHS.get(ch, _GLYPHS[" "])], bool).reshape(5, 3)
        glyph = np.kron(glyph, np.ones((scale, scale), bool))
        r, c = row, col + i * 4 * scale
        h, w = min(glyph.shape[0], image.shape[0] - r), min(glyph.shape[1], image.shape[1] - c)
        if h > 0 and w > 0 and r >= 0 and c >= 0:
            image[r : r + h, c : c + w][glyph[:h, :w]] = value


def _draw_cross(image: np.ndarray, row: int, col: int, arm: int, value: int) -> None:
    """A caliper "+" centred on (row, col)."""
    size = image.shape[0]
    image[max(row - arm, 0) : min(row + arm + 1, size), min(max(col, 0), size - 1)] = value
    image[min(max(row, 0), size - 1), max(col - arm, 0) : min(col + arm + 1, size)] = value


def _breast_overlays(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> None:
    """BUSI-like marks: calipers at the lesion's extremes, a probe marker, annotation text, padding."""
    size = image.shape[0]
    scale = max(1, round(size / 160))
    if mask.any() and rng.random() < 0.3:
        rows, cols = np.nonzero(mask)
        value = int(rng.choice([255, 230, 200]))
        arm = max(2, round(size * 0.012))
        ends = [(rows[np.argmin(cols)], cols.min()), (rows[np.argmax(cols)], cols.max())]
        if rng.random() < 0.6:
            ends += [(rows.min(), cols[np.argmin(rows)]), (rows.max(), cols[np.argmax(rows)])]
        for r, c in ends:
            _draw_cross(image, int(r), int(c), arm, value)
    if rng.random() < 0.5:
        m = 2 * scale + 1
        image[scale : scale + m, scale : scale + m] = 200
        image[scale + 1 : scale + m - 1, scale + 1 : scale + m - 1] = 40
    if rng.random() < 0.3:
        text = str(rng.choice(_WORDS))
        _draw_text(image, text, size - 9 * scale, int(rng.uniform(0.05, 0.4) * size), scale, 235)
    if rng.random() < 0.15:  # black padding from cropping, kept off the lesion
        width = int(rng.uniform(0.05, 0.2) * size)
        if rng.random() < 0.5 and not mask[:, size - width :].any():
            image[:, size - width :] = 0
        elif not mask[size - width :].any():
            image[size - width :] = 0


def _fan_overlays(rng: np.random.Generator, image: np.ndarray) -> None:
    """Depth-scale ticks on the right edge and an orientation marker, as scanners print them."""
    size = image.shape[0]
    scale = max(1, round(size / 160))
    if rng.random() < 0.5:
        step = max(int(size * rng.uniform(0.08, 0.14)), 2 * scale + 1)
        col = size - 2 * scale - 1
        for row in range(step, size - scale, step):
            image[row : row + scale, col : col + scale] = 210
    if rng.random() < 0.5:
        m = 2 * scale + 1
        image[scale : scale + m, scale : scale + m] = 190
