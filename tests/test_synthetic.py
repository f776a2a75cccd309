"""The embedded synthetic dataset: determinism, composition, masks and lesion appearance."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mosl_cli.data.synthetic import OTHER_ORGANS, QUOTAS, SyntheticScan, composition, generate

COUNT, SEED = 200, 7


def _scans(label: str, n: int, size: int, count: int = COUNT, seed: int = SEED) -> list[SyntheticScan]:
    indices = [i for i, (lab, _) in enumerate(composition(count, seed)) if lab == label][:n]
    return [generate(i, count, seed, size) for i in indices]


def _perimeter(mask: np.ndarray) -> int:
    """Number of pixel edges between the mask and the background (4-connectivity)."""
    m = np.pad(mask.astype(bool), 1)
    return int((m[1:] != m[:-1]).sum() + (m[:, 1:] != m[:, :-1]).sum())


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.astype(bool)
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def test_same_arguments_give_identical_arrays() -> None:
    first = [generate(i, 20, 3, 48) for i in range(6)]
    generate(11, 20, 3, 48)  # no hidden state between calls
    again = [generate(i, 20, 3, 48) for i in reversed(range(6))][::-1]
    for a, b in zip(first, again):
        assert np.array_equal(a.image, b.image)
        assert (a.mask is None) == (b.mask is None)
        if a.mask is not None:
            assert np.array_equal(a.mask, b.mask)
        assert (a.label, a.organ) == (b.label, b.organ)


def test_different_index_or_seed_gives_a_different_scan() -> None:
    images = [generate(i, 20, 3, 48).image for i in range(8)]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert not np.array_equal(images[i], images[j])
    assert not np.array_equal(generate(0, 20, 3, 48).image, generate(0, 20, 4, 48).image)


@pytest.mark.parametrize("size", [16, 33, 64, 130])
def test_shape_dtype_and_range(size: int) -> None:
    for i in range(0, 40, 3):
        scan = generate(i, 40, 1, size)
        assert scan.image.shape == (size, size) and scan.image.dtype == np.uint8
        assert scan.label in ("benign", "malignant", "normal", "unlabelled")
        assert scan.organ in ("breast", *OTHER_ORGANS)
        if scan.mask is not None:
            assert scan.mask.shape == (size, size) and scan.mask.dtype == np.uint8
            assert set(np.unique(scan.mask)) <= {0, 1}
    tissue = generate(0, 40, 1, size).image
    assert tissue.std() > 10 and int(tissue.max()) - int(tissue.min()) > 100  # not flat, not saturated


def test_composition_meets_the_quotas_and_spreads_them_evenly() -> None:
    kinds = composition(COUNT, SEED)
    assert len(kinds) == COUNT
    counts = Counter(kinds)
    for label, organ, share in QUOTAS:
        assert abs(counts[(label, organ)] - share * COUNT) <= 1
    assert sum(1 for label, _ in kinds if label == "unlabelled") == 70
    prefix = Counter(label for label, _ in kinds[:20])
    assert 5 <= prefix["benign"] <= 9 and 2 <= prefix["malignant"] <= 6 and 1 <= prefix["normal"] <= 3
    assert composition(COUNT, SEED) == kinds
    assert composition(COUNT, SEED + 1) != kinds
    assert [generate(i, 30, 2, 32).label for i in range(30)] == [k[0] for k in composition(30, 2)]
    assert len(composition(1, 0)) == 1


def test_masks_match_the_labels() -> None:
    for scan in [generate(i, 60, 11, 40) for i in range(60)]:
        if scan.label in ("benign", "malignant"):
            assert scan.organ == "breast" and scan.mask is not None and scan.mask.any()
        elif scan.label == "normal":
            assert scan.organ == "breast" and scan.mask is not None and not scan.mask.any()
        else:
            assert scan.organ in OTHER_ORGANS and scan.mask is None


def test_malignant_margins_are_more_irregular_than_benign() -> None:
    def compactness(scans: list[SyntheticScan]) -> float:
        return float(np.mean([_perimeter(s.mask) ** 2 / s.mask.sum() for s in scans]))

    benign = compactness(_scans("benign", 16, 128))
    malignant = compactness(_scans("malignant", 16, 128))
    assert malignant > 1.2 * benign


def test_lesions_are_darker_than_their_surroundings() -> None:
    darker = []
    for scan in _scans("benign", 10, 96) + _scans("malignant", 10, 96):
        inside = scan.mask.astype(bool)
        ring = _dilate(inside, 6) & ~_dilate(inside, 2)
        darker.append(scan.image[inside].mean() < scan.image[ring].mean())
    assert np.mean(darker) >= 0.9


def test_a_scan_is_the_same_anatomy_at_every_size() -> None:
    index = next(i for i, (label, _) in enumerate(composition(COUNT, SEED)) if label == "malignant")
    small = generate(index, COUNT, SEED, 64).mask.astype(bool)
    large = generate(index, COUNT, SEED, 128).mask.astype(bool)[::2, ::2]
    assert (small & large).sum() / (small | large).sum() > 0.7


def test_fan_scans_are_black_outside_the_fan() -> None:
    fans = [i for i, (_, organ) in enumerate(composition(COUNT, SEED)) if organ in ("liver", "heart", "fetal-head")]
    for i in fans[:6]:
        image = generate(i, COUNT, SEED, 64).image
        assert image[-1, 0] == 0 and image[-1, -1] == 0
        assert image[:, 30:34].mean() > 5  # but not along the central beams


@pytest.mark.parametrize("args", [(-1, 10, 0, 64), (10, 10, 0, 64), (0, 0, 0, 64), (0, 10, 0, 8)])
def test_invalid_arguments_are_rejected(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        generate(*args)
