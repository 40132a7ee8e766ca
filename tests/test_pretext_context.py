"""Context restoration pretext: disjoint patches, exact inverse, numpy/torch parity, bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_ssl.pretext import ContextParams, ContextRestoration

FAST = settings(max_examples=30, deadline=None)


def assert_disjoint_inside(params: ContextParams) -> None:
    """Brute force: paint every patch; each voxel painted at most once, nothing outside the volume."""
    count = np.zeros(params.shape, dtype=int)
    for pair in params.pairs:
        for corner in pair:
            assert all(
                c >= 0 and c + p <= s for c, p, s in zip(corner, params.patch, params.shape, strict=True)
            )
            count[params.slices(corner)] += 1
    assert count.max(initial=0) <= 1
    assert count.sum() == 2 * len(params.pairs) * np.prod(params.patch)


@st.composite
def cases(draw):
    shape = draw(st.tuples(st.integers(1, 20), st.integers(2, 20), st.integers(2, 20)))
    mode = draw(st.sampled_from(["3d", "2d"]))
    patch = tuple(draw(st.integers(1, max(1, s // 2))) for s in shape)
    if mode == "2d":
        patch = (1, *patch[1:])
    slots = [s // p for s, p in zip(shape, patch, strict=True)]
    capacity = slots[0] * (slots[1] * slots[2] // 2) if mode == "2d" else np.prod(slots) // 2
    n_swaps = draw(st.integers(0, int(capacity)))
    return shape, patch, mode, n_swaps


@FAST
@given(case=cases(), seed=st.integers(0, 2**16), lead=st.sampled_from([(), (2,), (1, 2)]))
def test_swaps_disjoint_and_invert_exact(case, seed, lead):
    shape, patch, mode, n_swaps = case
    task = ContextRestoration(n_swaps=n_swaps, patch_size=patch, mode=mode)
    params = task.sample(shape, np.random.default_rng(seed))
    assert params == task.sample(shape, np.random.default_rng(seed))
    assert len(params.pairs) == n_swaps and params.patch == patch
    assert_disjoint_inside(params)
    if mode == "2d":
        assert all(a[0] == b[0] for a, b in params.pairs)
    x = np.random.default_rng(seed).normal(size=lead + shape).astype(np.float32)
    before = x.copy()
    y = task.apply(x, params)
    assert type(y) is np.ndarray and y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(task.invert(y, params), x)
    xt = torch.from_numpy(x.copy())
    yt = task.apply(xt, params)
    assert isinstance(yt, torch.Tensor) and yt.dtype == xt.dtype
    np.testing.assert_array_equal(yt.numpy(), y)
    np.testing.assert_array_equal(xt.numpy(), before)
    np.testing.assert_array_equal(task.invert(yt, params).numpy(), x)


def test_crowded_volume_falls_back_to_grid_and_stays_disjoint():
    # 64 slots of 4^3 in 16^3: all 32 pairs, far beyond what random rejection can place
    task = ContextRestoration(n_swaps=32, patch_size=4)
    params = task.sample((16, 16, 16), np.random.default_rng(0))
    assert_disjoint_inside(params)
    assert task.targets(params)["mask"].all()
    two_d = ContextRestoration(n_swaps=4 * 8, patch_size=4, mode="2d").sample((4, 16, 16), 1)
    assert_disjoint_inside(two_d)


def test_partial_overlap_is_rejected():
    with pytest.raises(ValueError, match="overlap"):
        ContextParams(shape=(16, 16, 16), patch=(4, 4, 4), pairs=(((0, 0, 0), (3, 3, 3)),))
    with pytest.raises(ValueError, match="overlap"):  # across swaps too
        ContextParams(
            shape=(16, 16, 16), patch=(4, 4, 4), pairs=(((0, 0, 0), (8, 8, 8)), ((11, 11, 11), (0, 8, 0)))
        )
    with pytest.raises(ValueError, match="leaves the volume"):
        ContextParams(shape=(16, 16, 16), patch=(4, 4, 4), pairs=(((0, 0, 0), (13, 0, 0)),))
    ok = ContextParams(
        shape=(16, 16, 16), patch=(4, 4, 4), pairs=(((0, 0, 0), (4, 0, 0)),)
    )  # touching is fine
    assert ok.pairs


def test_swap_moves_patches():
    task = ContextRestoration(n_swaps=1, patch_size=2)
    x = np.arange(4 * 4 * 4, dtype=np.int16).reshape(4, 4, 4)
    params = ContextParams(shape=(4, 4, 4), patch=(2, 2, 2), pairs=(((0, 0, 0), (2, 2, 2)),))
    y = task.apply(x, params)
    np.testing.assert_array_equal(y[:2, :2, :2], x[2:, 2:, 2:])
    np.testing.assert_array_equal(y[2:, 2:, 2:], x[:2, :2, :2])
    np.testing.assert_array_equal(y[:2, 2:], x[:2, 2:])


def test_patch_in_mm_and_targets():
    task = ContextRestoration(n_swaps=3, patch_size=6.0, unit="mm")
    params = task.sample((20, 30, 30), 0, spacing=(3.0, 1.0, 1.5))
    assert params.patch == (2, 6, 4)
    x = np.random.default_rng(0).random((20, 30, 30))
    t = task.targets(params, x)
    assert t["image"] is x
    assert t["mask"].sum() == 6 * 2 * 6 * 4
    ov = task.overlay(params)
    assert ov["pairs"].shape == (3, 2, 3) and ov["boxes"].shape == (3, 2, 2, 3)
    np.testing.assert_array_equal(
        ov["boxes"][:, :, 1] - ov["boxes"][:, :, 0], np.broadcast_to((2, 6, 4), (3, 2, 3))
    )
    json.dumps(dataclasses.asdict(params))
    assert ContextRestoration(patch_size=(9, 4, 4), mode="2d").patch_voxels() == (1, 4, 4)


def test_bad_input():
    task = ContextRestoration(n_swaps=2, patch_size=4)
    with pytest.raises(ValueError, match="at least 3 axes"):
        task.sample((16, 16), 0)
    with pytest.raises(
        ValueError, match=r"patch_size \(4, 4, 4\) voxels is larger than the volume .* along z"
    ):
        task.sample((3, 16, 16), 0)
    with pytest.raises(
        ValueError, match=r"n_swaps=9 needs 18 non-overlapping patches .* n_swaps must be <= 4"
    ):
        ContextRestoration(n_swaps=9, patch_size=4).sample((8, 8, 8), 0)
    params = task.sample((8, 8, 8), 0)
    bad = np.ones((8, 8, 8))
    bad[0, 0, 0] = -np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        task.apply(bad, params)
    with pytest.raises(ValueError, match="at least 3 axes"):
        task.apply(np.ones((8, 8)), params)
    with pytest.raises(ValueError, match="n_swaps must be >= 0"):
        ContextRestoration(n_swaps=-1)
    with pytest.raises(ValueError, match="patch_size must be > 0"):
        ContextRestoration(patch_size=0)
    with pytest.raises(ValueError, match="whole numbers"):
        ContextRestoration(patch_size=2.5)
    with pytest.raises(ValueError, match="unit must be one of"):
        ContextRestoration(unit="cm")
    with pytest.raises(ValueError, match="mode must be one of"):
        ContextRestoration(mode="4d")
