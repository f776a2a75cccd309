"""Perceptual hashing, duplicate grouping and stratified, group-preserving splits."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from PIL import Image, ImageFilter

from mosl_cli.data import hashing
from mosl_cli.data.splits import (
    UnionFind,
    assign_splits,
    check_fractions,
    group_samples,
    parse_splits,
)
from mosl_cli.errors import MoslError


def smooth_image(seed: int, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(6))


def test_phash_is_robust_to_resizing_not_to_content() -> None:
    a = smooth_image(0)
    h = hashing.phash(a)
    assert 0 <= h < 2**64
    assert hashing.hamming(h, hashing.phash(a.resize((80, 70), Image.BILINEAR))) <= 4
    assert hashing.hamming(h, hashing.phash(a)) == 0
    others = [hashing.hamming(h, hashing.phash(smooth_image(s))) for s in range(1, 6)]
    assert min(others) > 12
    assert hashing.digest(a) == hashing.digest(a.copy()) != hashing.digest(a.resize((80, 70)))


def test_near_pairs_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, 40).astype(np.uint64)
    hashes = np.concatenate([base, base[:20] ^ flips[:20]])  # 20 pairs at distance 1
    got = {tuple(p) for p in hashing.near_pairs(hashes, 3, budget=37).tolist()}  # tiny blocks
    want = {(i, j) for i in range(60) for j in range(i + 1, 60) if hashing.hamming(int(hashes[i]), int(hashes[j])) <= 3}
    assert got == want and len(want) >= 20


def test_union_find() -> None:
    uf = UnionFind(5)
    assert uf.union(0, 1) and uf.union(3, 4) and not uf.union(1, 0)
    assert uf.find(0) == uf.find(1) != uf.find(3) == uf.find(4) != uf.find(2)


def test_group_samples_counts_merges_by_hashing_only() -> None:
    # 0,1: one video (reader group); 2 near-duplicate of 1; 3 == 4 pixel-identical; 5 alone; 6 far away
    hashes = [0b0, 0xFF00, 0xFF01, 0xF0F0F0F0, 0xF0F0F0F0, 0xFFFF0000FFFF, 2**64 - 1]
    digests = ["a", "b", "c", "d", "d", "e", "f"]
    groups = [None, None, None, None, None, None, None]
    groups[0] = groups[1] = "video"
    g = group_samples(hashes, digests, groups, max_distance=2)
    assert g.group[0] == g.group[1] == g.group[2]
    assert g.group[3] == g.group[4] != g.group[0]
    assert len({g.group[5], g.group[6], g.group[0], g.group[3]}) == 4
    assert g.merged == 2  # {video + 2} and {3, 4}; the video alone does not count
    assert g.identical_pixel_pairs == 1 and g.identical_hash_pairs == 1 and g.largest == 3
    off = group_samples(hashes, digests, groups, max_distance=-1)  # identical pixels still group
    assert off.group[3] == off.group[4] and off.group[2] != off.group[1] and off.merged == 1


def test_only_searchable_samples_enter_the_near_duplicate_search() -> None:
    hashes = [0, 1, 3, 2**40]
    g = group_samples(hashes, list("abcd"), [None] * 4, 2, searchable=[True, False, True, True])
    assert g.group[0] == g.group[2] != g.group[1]  # 0-2 at distance 2; 1 is not searched


def test_chain_is_transitive() -> None:
    hashes = [0, 0b11, 0b1111, 0b111111]  # neighbours 2 apart, ends 6 apart
    g = group_samples(hashes, list("abcd"), [None] * 4, 2)
    assert len(set(g.group)) == 1 and g.largest == 4


def test_assign_splits_stratified_and_group_safe() -> None:
    n = 600
    classes = [["benign", "malignant", "normal"][i % 3] for i in range(n)]
    groups = list(range(n))
    for i in range(0, 120, 3):  # 40 duplicate pairs across benign and malignant
        groups[i + 1] = groups[i]
    for i in range(200, 230):  # one group of 30
        groups[i] = 200
    splits = assign_splits(classes, groups, (0.7, 0.1, 0.2), seed=3)
    by_group = collections.defaultdict(set)
    for g, s in zip(groups, splits):
        by_group[g].add(s)
    assert all(len(v) == 1 for v in by_group.values())  # no group divided
    for cls in ("benign", "malignant", "normal"):
        counts = collections.Counter(s for c, s in zip(classes, splits) if c == cls)
        for name, frac in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
            assert abs(counts[name] - frac * 200) <= 15, (cls, counts)
    pairs = collections.Counter(splits[i] for i in range(0, 120, 3))
    assert len(pairs) == 3  # duplicate groups are spread over the splits, not piled into train
    assert splits[200] == "train"  # a group too big for val/test goes to train
    assert splits == assign_splits(classes, groups, (0.7, 0.1, 0.2), seed=3)
    assert splits != assign_splits(classes, groups, (0.7, 0.1, 0.2), seed=4)


def test_assign_splits_edge_cases() -> None:
    assert set(assign_splits(["a"] * 10, list(range(10)), (1.0, 0.0, 0.0), 0)) == {"train"}
    got = assign_splits(["a"] * 5, [0, 0, 0, 0, 1], (0.5, 0.0, 0.5), 0)
    assert got[:4] == ["train"] * 4 and got[4] == "test"
    assert assign_splits(["a"], [0], (0.7, 0.1, 0.2), 0) == ["train"]


def test_parse_splits() -> None:
    assert parse_splits("0.7,0.1,0.2") == (0.7, 0.1, 0.2)
    assert parse_splits("0.8, 0, 0.2") == (0.8, 0.0, 0.2)
    for bad, msg in (
        ("0.7,0.1", "three"),
        ("a,b,c", "not numbers"),
        ("0.7,0.2,0.2", "sum to 1.1"),
        ("-0.1,0.6,0.5", "non-negative"),
        ("0,0.5,0.5", "train fraction"),
        ("nan,0,1", "non-negative"),
    ):
        with pytest.raises(MoslError, match=msg):
            parse_splits(bad)
    with pytest.raises(MoslError):
        check_fractions((0.5, 0.5))
