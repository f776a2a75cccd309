"""kornia pipelines: shapes, dtypes, seeding, presets, and image/mask alignment."""

from __future__ import annotations

import kornia.augmentation as K
import pytest
import torch

from mosl_cli.augment import (
    CUTMIX_AREA,
    PRESETS,
    UNSURE_PIXEL,
    RandomSpeckle,
    SegAugment,
    SSLViews,
    cutmix,
    cutmix_boxes,
    elastic,
    seeded,
)
from mosl_cli.errors import MoslError
from mosl_cli.models import NORMALISATION, model_inputs

CPU = torch.device("cpu")
LOW = (0.0 - NORMALISATION["mean"]) / NORMALISATION["std"]
HIGH = (1.0 - NORMALISATION["mean"]) / NORMALISATION["std"]


def _images(n: int = 6, channels: int = 1, side: int = 96, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8, generator=g)


def _block_masks(n: int = 6, side: int = 64, seed: int = 1) -> torch.Tensor:
    """uint8 0/1 ``[n, 1, side, side]``: a few random, asymmetric rectangles per image."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 1, side, side, dtype=torch.uint8)
    for i in range(n):
        for _ in range(3):
            y, x = torch.randint(0, side - 16, (2,), generator=g).tolist()
            h, w = torch.randint(6, 16, (2,), generator=g).tolist()
            masks[i, 0, y : y + h, x : x + w] = 1
    return masks


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("channels", [1, 3])
def test_views_shape_dtype_range(preset: str, channels: int) -> None:
    views = SSLViews(32, channels, preset)
    v1, v2 = views(_images(channels=channels))
    for v in (v1, v2):
        assert v.shape == (6, channels, 32, 32) and v.dtype == torch.float32
        assert torch.isfinite(v).all()
        assert v.min() >= LOW - 1e-5 and v.max() <= HIGH + 1e-5
    assert not torch.equal(v1, v2), "the two views must be augmented independently"


def test_views_seeded_are_reproducible_and_restore_rng() -> None:
    views = SSLViews(32, 1)
    x = _images(side=256)  # also exercises the 2·size antialiased pre-scaling
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7, CPU):
        a1, a2 = views(x)
    with seeded(7, CPU):
        b1, b2 = views(x)
    with seeded(8, CPU):
        c1, _ = views(x)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, c1)
    assert torch.equal(torch.rand(3), expected_next), "seeded() must leave the global RNG as it found it"


def test_views_reject_bad_settings() -> None:
    with pytest.raises(MoslError, match="--preset"):
        SSLViews(32, 1, "imagenet")
    with pytest.raises(MoslError, match="--crop-scale"):
        SSLViews(32, 1, crop_scale=(0.9, 0.2))
    assert SSLViews(32, 1, "simclr").crop_scale == (0.08, 1.0)
    assert SSLViews(32, 1, "ultrasound", crop_scale=(0.5, 1.0)).crop_scale == (0.5, 1.0)
    with pytest.raises(MoslError, match="--jitter"):
        SSLViews(32, 1, jitter=1.5)


@pytest.mark.parametrize("preset", PRESETS)
def test_jitter_strength_sets_the_intensity_range(preset: str) -> None:
    def jitter_ops(views: SSLViews) -> list[K.ColorJitter]:
        return [op for op in views.pipeline if isinstance(op, K.ColorJitter)]

    assert jitter_ops(SSLViews(32, 1, preset, jitter=0.0)) == []  # 0: no intensity jitter at all
    grey = torch.full((200, 1, 4, 4), 0.5)  # contrast leaves a flat image alone; brightness scales it
    with seeded(0, CPU):
        (mild,) = jitter_ops(SSLViews(32, 1, preset, jitter=0.1))
        (strong,) = jitter_ops(SSLViews(32, 1, preset, jitter=0.4))
        mild_out, strong_out = mild(grey), strong(grey)
    assert mild_out.min() >= 0.45 - 1e-6 and mild_out.max() <= 0.55 + 1e-6
    assert strong_out.min() < 0.4 and strong_out.max() > 0.6


def test_speckle_is_multiplicative_per_sample() -> None:
    x = torch.full((4, 1, 16, 16), 0.5)
    x[0] = 0.0
    with seeded(0, CPU):
        y = RandomSpeckle((0.2, 0.3), p=1.0)(x)
    assert torch.equal(y[0], x[0]), "multiplicative noise leaves black pixels black"
    assert (y[1:] != 0.5).float().mean() > 0.9
    spreads = y[1:].flatten(1).std(dim=1)
    assert len(set(spreads.tolist())) == 3 and (spreads > 0.05).all()


def test_seg_shapes_binary_mask_and_plain_resize() -> None:
    images, masks = _images(side=64), _block_masks()
    x, m = SegAugment(32)(images, masks)
    assert x.shape == (6, 1, 32, 32) and x.dtype == torch.float32
    assert m.shape == (6, 1, 32, 32) and m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    x0, m0 = SegAugment(32, augment=False)(images, masks)
    torch.testing.assert_close(x0, model_inputs(images, 32), rtol=0, atol=1e-5)
    expected = (
        torch.nn.functional.interpolate(
            masks.float(), size=(32, 32), mode="bilinear", antialias=True, align_corners=False
        )
        > 0.5
    ).float()
    assert torch.equal(m0, expected)


def test_seg_geometry_is_shared_by_image_and_mask() -> None:
    masks = _block_masks(n=16)
    images = masks * 255  # the image *is* the mask: after the same geometry they must still agree
    with seeded(3, CPU):
        x, m = SegAugment(32, intensity=False)(images, masks)
    _, plain = SegAugment(32, augment=False)(images, masks)
    assert not torch.equal(m, plain), "the geometric ops must have moved some masks"
    binary_image = (x * NORMALISATION["std"] + NORMALISATION["mean"]) > 0.5
    agreement = (binary_image == m.bool()).float().mean(dim=(1, 2, 3))
    assert agreement.min() > 0.95  # only boundary pixels may differ (bilinear vs nearest resampling)
    flipped = (binary_image == m.flip(-1).bool()).float().mean(dim=(1, 2, 3))
    assert flipped.min() < 0.95, "sanity: a misaligned mask would be detected"


@pytest.mark.parametrize("side", [64, 128])
def test_elastic_deforms_image_and_mask_alike_by_about_two_percent_of_the_side(side: int) -> None:
    square = torch.zeros(16, 1, side, side)
    square[..., side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = 1.0
    ramp = torch.linspace(0, 1, side).expand(16, 1, side, side).contiguous()  # x, 0 to 1
    op = K.AugmentationSequential(elastic(side, p=1.0), data_keys=["input", "mask", "input"])
    with seeded(0, CPU):
        image, mask, moved = op(square, square.clone(), ramp)
    # one displacement field for scan and mask: only edge pixels differ (bilinear vs nearest resampling)
    assert ((image > 0.5) != (mask > 0.5)).float().mean() < 0.005
    shift = ((moved - ramp).abs() * (side - 1))[..., 8:-8, 8:-8] / side  # x displacement, share of the side
    assert 0.008 < shift.mean() < 0.03
    assert ((mask > 0.5) != (square > 0.5)).any(dim=(1, 2, 3)).all()  # every scan deformed at p = 1


def test_elastic_is_off_unless_asked_and_keeps_masks_binary() -> None:
    images, masks = _images(n=8, side=64), _block_masks(n=8)
    assert not any(isinstance(op, K.RandomElasticTransform) for op in SegAugment(32).pipeline.children())
    for strength in ("strong", "mild"):
        augment = SegAugment(32, strength=strength, elastic_p=0.5)
        assert sum(isinstance(op, K.RandomElasticTransform) for op in augment.pipeline.children()) == 1
        _, m = augment(images, masks)
        assert set(m.unique().tolist()) <= {0.0, 1.0}


def test_seg_intensity_ops_leave_the_mask_alone() -> None:
    images, masks = _images(n=16, side=64), _block_masks(n=16)
    with seeded(5, CPU):
        x_full, m_full = SegAugment(32)(images, masks)
    with seeded(5, CPU):
        x_geo, m_geo = SegAugment(32, intensity=False)(images, masks)
    # Intensity ops come after the geometry, so the same seed draws the same geometry.
    assert torch.equal(m_full, m_geo)
    assert not torch.equal(x_full, x_geo)


def test_seg_unsure_pixels_come_out_as_minus_one_where_the_geometry_takes_them() -> None:
    lesion, unsure = _block_masks(n=16, seed=1), _block_masks(n=16, seed=2)
    images = _images(n=16, side=64)
    marked = torch.where(unsure > 0, UNSURE_PIXEL, lesion).to(torch.uint8)
    _, plain = SegAugment(64, augment=False, unsure=True)(images, marked)
    assert torch.equal(plain == -1, unsure.bool()) and torch.equal(plain == 1, (lesion > 0) & (unsure == 0))
    with seeded(4, CPU):
        _, m = SegAugment(32, unsure=True)(images, marked)
    with seeded(4, CPU):  # the same draws, the unsure pixels as the only lesion
        _, only_unsure = SegAugment(32)(images, unsure)
    with seeded(4, CPU):  # no unsure pixel: the same target as without the option
        _, two_channels = SegAugment(32, unsure=True)(images, lesion)
    with seeded(4, CPU):
        _, one_channel = SegAugment(32)(images, lesion)
    assert torch.equal(two_channels, one_channel)
    assert set(m.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert torch.equal(m == -1, only_unsure == 1)  # warped exactly as a mask would be


def test_cutmix_boxes_are_rectangles_of_the_drawn_area_on_about_half_the_scans() -> None:
    torch.manual_seed(0)
    boxes = cutmix_boxes(400, 32, torch.device("cpu"))
    assert boxes.shape == (400, 1, 32, 32) and boxes.dtype == torch.bool
    area = boxes.flatten(1).sum(dim=1).float() / 32**2
    boxed = area > 0
    assert 0.4 < boxed.float().mean() < 0.6
    assert CUTMIX_AREA[0] / 2 <= area[boxed].min() and area[boxed].max() <= CUTMIX_AREA[1] * 1.3
    rows, cols = boxes[:, 0].any(dim=2), boxes[:, 0].any(dim=1)  # a rectangle is the product of its extents
    assert torch.equal(boxes[:, 0], rows[:, :, None] & cols[:, None, :])


def test_cutmix_moves_image_pseudo_label_and_sureness_together() -> None:
    torch.manual_seed(1)
    b = 16
    index = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1)
    images = index.expand(b, 3, 32, 32).clone()  # every pixel of scan i holds i
    target = (index % 2).expand(b, 1, 32, 32).clone()
    sure = (index % 3 == 0).expand(b, 1, 32, 32).clone()
    mixed, mixed_target, mixed_sure = cutmix(images, target, sure)
    source = mixed[:, :1]  # which scan each pixel now comes from
    assert torch.equal(mixed_target, source % 2) and torch.equal(mixed_sure, source % 3 == 0)
    assert torch.equal(mixed, source.expand_as(mixed))
    partner = (index - 1) % b  # the previous scan (torch.roll by 1)
    assert ((source == index) | (source == partner)).all()
    assert (source != index).any()


def test_cutmix_probability_zero_and_one() -> None:
    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 16, 16).clone()
    (unmixed,) = cutmix(images, p=0.0)
    assert torch.equal(unmixed, images)
    mixed, mask = cutmix(images, images.clone(), p=1.0)
    assert torch.equal(mixed, mask) and ((mixed != images).flatten(1).any(dim=1)).all()  # every scan got a box
