"""Foreground-guided placement: masks from real scans, patches and cubes on the body, same seed same params."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssl.io.foreground import foreground_bbox, foreground_mask, otsu_threshold, resolve_method
from napari_ssl.pretext import ContextRestoration, ImagingPlanes, RubikCube
from napari_ssl.pretext.context import MIN_INSIDE


def ball(shape=(32, 48, 48), radius=0.35, value=100.0, background=0.0, seed=0):
    """A bright ellipsoid (the 'body') in a dark, slightly noisy background."""
    zz, yy, xx = np.meshgrid(*[np.linspace(-0.5, 0.5, s) for s in shape], indexing="ij")
    inside = zz**2 + yy**2 + xx**2 < radius**2
    rng = np.random.default_rng(seed)
    x = np.where(inside, value, background) + rng.normal(0, 2.0, shape)
    return x.astype(np.float32), inside


def test_otsu_threshold_separates_two_modes():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(10, 2, 5000), rng.normal(100, 5, 2000)])
    t = otsu_threshold(values)
    assert 20 < t < 85
    assert otsu_threshold(np.full(10, 3.0)) == 3.0


def test_foreground_mask_methods():
    x, inside = ball()
    mask = foreground_mask(x, "otsu")
    assert mask.dtype == bool and mask.shape == x.shape
    assert (mask == inside).mean() > 0.99
    assert resolve_method(x) == "otsu"
    ct = np.where(inside, 40, -1000).astype(np.int16)  # HU: soft tissue in air
    assert resolve_method(ct) == "hu"
    np.testing.assert_array_equal(foreground_mask(ct), inside)
    stripped = np.where(inside, x, 0)  # skull-stripped: exact zeros outside
    assert resolve_method(stripped) == "nonzero"
    np.testing.assert_array_equal(foreground_mask(stripped), stripped != 0)
    assert not foreground_mask(np.ones((8, 8, 8))).any()  # constant: no foreground
    two = foreground_mask(np.stack([stripped, np.zeros_like(stripped)]))  # channels are combined
    np.testing.assert_array_equal(two, stripped != 0)
    with pytest.raises(ValueError, match="foreground method must be one of"):
        foreground_mask(x, "magic")
    with pytest.raises(ValueError, match="needs a volume"):
        foreground_mask(np.zeros((4, 4)))


def test_foreground_bbox_ignores_specks():
    mask = np.zeros((20, 20, 20), bool)
    mask[5:15, 6:16, 7:17] = True
    assert foreground_bbox(mask) == ((5, 6, 7), (15, 16, 17))
    mask[0, 0, 0] = True  # one stray voxel of 1001
    assert foreground_bbox(mask) == ((5, 6, 7), (15, 16, 17))
    assert foreground_bbox(np.zeros((3, 3, 3), bool)) is None


@pytest.mark.parametrize("mode", ["3d", "2d"])
def test_context_patches_inside_the_mask(mode):
    x, _ = ball()
    mask = foreground_mask(x)
    task = ContextRestoration(n_swaps=6, patch_size=6, mode=mode)
    params = task.sample(x.shape, np.random.default_rng(3), foreground=mask)
    assert params == task.sample(x.shape, np.random.default_rng(3), foreground=mask)  # reproducible
    corners = np.asarray(params.pairs).reshape(-1, 3)
    assert len(corners) == 12
    centres = corners + np.asarray(params.patch) // 2
    assert mask[tuple(centres.T)].all()
    for c in corners:
        box = mask[tuple(slice(a, a + p) for a, p in zip(c, params.patch, strict=True))]
        assert box.mean() >= MIN_INSIDE
    # without the mask, the same seed puts patches in the air (the draws it replaces are uniform)
    free = np.asarray(task.sample(x.shape, np.random.default_rng(3)).pairs).reshape(-1, 3)
    assert not mask[tuple((free + np.asarray(params.patch) // 2).T)].all()
    # the contract holds: apply / invert are exact
    y = task.apply(x, params)
    np.testing.assert_array_equal(task.invert(y, params), x)


def test_context_crowded_mask_falls_back_to_grid_on_the_body():
    x, _ = ball(shape=(24, 24, 24), radius=0.3)
    mask = foreground_mask(x)
    task = ContextRestoration(n_swaps=4, patch_size=4)  # 8 * 64 voxels > 25% of the small ball
    params = task.sample(x.shape, 0, foreground=mask)
    corners = np.asarray(params.pairs).reshape(-1, 3)
    inside = [mask[tuple(slice(a, a + 4) for a in c)].mean() for c in corners]
    assert np.mean(np.asarray(inside) >= MIN_INSIDE) == 1.0


def test_rubik_grid_on_the_body_same_draws():
    x, _ = ball(shape=(40, 60, 60), radius=0.25)
    mask = foreground_mask(x)
    task = RubikCube(grid=2, gap=2)
    guided = task.sample(x.shape, 5, foreground=mask)
    free = task.sample(x.shape, 5)
    assert (guided.permutation, guided.rotations, guided.offsets) == (
        free.permutation,
        free.rotations,
        free.offsets,
    )
    lo, hi = foreground_bbox(mask)
    for cell in range(8):
        box = guided.box(cell)
        assert all(s.start >= a - 1 and s.stop <= b + 1 for s, a, b in zip(box, lo, hi, strict=True))
    on_body = np.mean([mask[guided.box(c)].mean() for c in range(8)])
    in_air = np.mean([mask[free.box(c)].mean() for c in range(8)])
    assert on_body > 2 * in_air
    np.testing.assert_array_equal(task.invert(task.apply(x, guided), guided), x)
    with pytest.raises(ValueError, match="foreground mask has shape"):
        task.sample(x.shape, 0, foreground=mask[:-1])
    assert task.sample(x.shape, 5, foreground=np.zeros_like(mask)) == free  # empty mask: anywhere


def test_rubik_tiny_mask_grows_to_fit_the_grid():
    mask = np.zeros((30, 30, 30), bool)
    mask[14:16, 14:16, 14:16] = True
    params = RubikCube(grid=2, gap=3).sample(mask.shape, 0, foreground=mask)
    assert min(params.cube) >= 1 and min(params.cell) > 3
    RubikCube(grid=2, gap=3).apply(np.zeros((30, 30, 30), np.float32), params)


def test_planes_roi_centred_on_the_body():
    shape = (40, 40, 40)
    mask = np.zeros(shape, bool)
    mask[2:12, 2:12, 2:12] = True  # body in a corner
    task = ImagingPlanes(n_stack=3, n_oblique=2, size=16, roi=0.5)
    guided = task.sample(shape, 2, foreground=mask)
    free = task.sample(shape, 2)
    centre = lambda p: np.asarray(p.origins).mean(axis=0)  # noqa: E731
    assert np.linalg.norm(centre(guided) - 6.5) < np.linalg.norm(centre(free) - 6.5)
    assert guided == task.sample(shape, 2, foreground=mask)
