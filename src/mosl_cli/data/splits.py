"""Leakage-safe train / val / test splits.

Samples that must stay on one side of a split share a *group*:

- reader-given groups: the frames of one video, the views of one patient;
- near-duplicates: two images whose 64-bit perceptual hashes (:mod:`mosl_cli.data.hashing`) differ in
  at most ``max_distance`` bits, and exact duplicates (identical pixels), joined transitively
  (union-find).

Whole groups are then dealt to the splits class by class (stratified), largest first, each to the
least filled split it fits in (see :func:`assign_splits`). The result is deterministic from the
seed and never divides a group.

Only one key frame per video (its middle sampled frame) enters the near-duplicate search: with
every frame, two videos offer 64 frame pairs (8 frames each), and chance matches between
similar-looking lung videos chained three POCUS patients into one 144-frame group at distance 4
(208 frames at 6). With key frames, the largest POCUS group at 6 is one patient's 48 frames.

The default ``max_distance`` (``PrepareConfig.dedup_distance`` = 6) comes from BUSI (780 images),
where pHash distances are even (each hash has 32 set bits). Pairs within 0 / 4 / 6 / 8 / 12 bits:
47 / 189 / 209 / 217 / 245; groups merged: 39 / 129 / 142 / 144 / 150; largest group: 3 / 4 / 4 / 7 / 7.
Every pair at distance ≤ 6 inspected is the same scan (re-cropped, other calipers); from 8 on, pairs
are neighbouring scans of one lesion and, from 10-12, different patients. At 6 no HC18 images merge
and POCUS key frames merge two pairs of clips (one trimmed twice from a recording) and one pair of stills.
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from mosl_cli.data.hashing import near_pairs
from mosl_cli.errors import UsageError
from mosl_cli.names import SPLITS  # re-exported: prepare imports it from here


class UnionFind:
    """Disjoint sets over ``0..n-1`` with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        """Join the sets of ``a`` and ``b``; whether they were apart."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True


@dataclass
class Grouping:
    """The outcome of :func:`group_samples`.

    ``group``: one group index per sample (0..G-1, in order of first appearance).
    ``merged``: groups that hashing formed from more than one reader unit (a unit is a reader-given
    group or a lone sample). ``identical_hash_pairs``: sample pairs with equal 64-bit hashes;
    ``identical_pixel_pairs``: pairs with identical pixels; ``near_pairs``: pairs within the distance
    (reader-given groups excluded from all three counts). ``largest``: the largest group's size.
    """

    group: list[int]
    merged: int
    identical_hash_pairs: int
    identical_pixel_pairs: int
    near_pairs: int
    largest: int


def group_samples(
    hashes: list[int],
    digests: list[str],
    reader_groups: list[str | None],
    max_distance: int,
    searchable: list[bool] | None = None,
) -> Grouping:
    """Group samples by reader-given group, identical pixels and perceptual-hash distance.

    ``hashes``: 64-bit pHash per sample; ``digests``: exact content digest per sample;
    ``reader_groups``: a reader's group name per sample or ``None``; ``searchable``: which samples
    enter the near-duplicate search (default all; prepare passes one key frame per video);
    ``max_distance`` < 0 turns the near-duplicate search off (identical pixels still group).
    """
    n = len(hashes)
    units = UnionFind(n)  # reader-given groups only
    first: dict[str, int] = {}
    for i, g in enumerate(reader_groups):
        if g is not None:
            units.union(first.setdefault(g, i), i)
    unit = [units.find(i) for i in range(n)]

    pairs: list[tuple[int, int]] = []
    by_digest: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(digests):
        by_digest[d].append(i)
    pixel_pairs = [(m[0], j) for m in by_digest.values() for j in m[1:]]
    pairs += pixel_pairs
    keys = np.array([i for i in range(n) if searchable is None or searchable[i]], dtype=np.int64)
    near: list[tuple[int, int]] = []
    if max_distance >= 0 and len(keys) > 1:
        found = near_pairs(np.array(hashes, dtype=np.uint64)[keys], max_distance)
        near = [(int(keys[a]), int(keys[b])) for a, b in found]
    pairs += near

    uf = UnionFind(n)
    for i in range(n):
        uf.union(unit[i], i)
    for a, b in pairs:
        uf.union(a, b)
    roots = [uf.find(i) for i in range(n)]

    index: dict[int, int] = {}
    group = [index.setdefault(r, len(index)) for r in roots]
    units_per_group: dict[int, set[int]] = defaultdict(set)
    for g, u in zip(group, unit):
        units_per_group[g].add(u)
    return Grouping(
        group=group,
        merged=sum(1 for us in units_per_group.values() if len(us) > 1),
        identical_hash_pairs=_cross_unit_pairs(hashes, unit),
        identical_pixel_pairs=_cross_unit_pairs(digests, unit),
        near_pairs=sum(1 for a, b in near if unit[a] != unit[b]),
        largest=max(Counter(group).values(), default=0),
    )


def _cross_unit_pairs(keys: list[int] | list[str], unit: list[int]) -> int:
    """Pairs of samples with equal ``keys`` that lie in different reader units."""
    by_key: dict[int | str, Counter[int]] = defaultdict(Counter)
    for k, u in zip(keys, unit):
        by_key[k][u] += 1
    total = 0
    for per_unit in by_key.values():
        n = sum(per_unit.values())
        total += (n * (n - 1) - sum(c * (c - 1) for c in per_unit.values())) // 2
    return total


def _stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same in every process (``hash()`` is salted per run)."""
    return zlib.crc32(text.encode("utf-8"))


def assign_splits(classes: list[str], groups: list[int], fractions: tuple[float, float, float], seed: int) -> list[str]:
    """A split name per sample: stratified by class, whole groups only, deterministic from ``seed``.

    A group holding several classes counts as its most common one (ties: alphabetical). Per class,
    groups come largest first (equal sizes in a seeded random order) and each goes to the least
    filled split it fits in, with ``target = fraction × class size`` (see :func:`_best_split`).
    Largest first lets small groups even out the counts at the end; "least filled" spreads the
    duplicate groups over all splits instead of piling them into train; "fits" sends a group too
    big for val or test to train rather than overfill them.
    """
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    by_class: dict[str, list[int]] = defaultdict(list)
    for g, idx in members.items():
        votes = Counter(classes[i] for i in idx)
        top = max(votes.values())
        by_class[min(c for c, v in votes.items() if v == top)].append(g)

    split_of_group: dict[int, int] = {}
    for cls in sorted(by_class):
        rng = np.random.default_rng([seed & 0xFFFFFFFF, _stable_hash(cls)])
        gs = [by_class[cls][i] for i in rng.permutation(len(by_class[cls]))]
        gs.sort(key=lambda g: -len(members[g]))  # largest first; stable: equal sizes keep the seeded order
        total = sum(len(members[g]) for g in gs)
        targets = [f * total for f in fractions]
        counts = [0, 0, 0]
        for g in gs:
            k = _best_split(len(members[g]), counts, targets)
            split_of_group[g] = k
            counts[k] += len(members[g])
    return [SPLITS[split_of_group[g]] for g in groups]


def _best_split(size: int, counts: list[int], targets: list[float]) -> int:
    """Among the splits the group fits in (count + size ≤ target), the least filled (count / target);
    if it fits nowhere, the one it overfills least, relative to its target. Ties: train, val, test."""
    live = [k for k in range(3) if targets[k] > 0]
    fits = [k for k in live if counts[k] + size <= targets[k] + 1e-9]
    if fits:
        return min(fits, key=lambda k: (counts[k] / targets[k], k))
    return min(live, key=lambda k: ((counts[k] + size - targets[k]) / targets[k], k))


def check_fractions(fractions: tuple[float, ...]) -> tuple[float, float, float]:
    """Validate train/val/test fractions: three non-negative numbers summing to 1, train > 0."""
    if len(fractions) != 3 or any(not np.isfinite(f) or f < 0 for f in fractions):
        raise UsageError(
            f"--splits {','.join(map(str, fractions))}: give three non-negative fractions, e.g. 0.7,0.1,0.2"
        )
    if abs(sum(fractions) - 1.0) > 1e-3:
        raise UsageError(
            f"--splits {','.join(map(str, fractions))}: the fractions sum to {sum(fractions):g}; make them sum to 1"
        )
    if fractions[0] <= 0:
        raise UsageError("--splits: the train fraction must be above 0, e.g. 0.7,0.1,0.2")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def parse_splits(text: str) -> tuple[float, float, float]:
    """``"0.7,0.1,0.2"`` -> ``(0.7, 0.1, 0.2)``; anything else raises a one-line :class:`MoslError`."""
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--splits {text!r}: not numbers; give train,val,test fractions, e.g. 0.7,0.1,0.2") from None
    return check_fractions(values)
