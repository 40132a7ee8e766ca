"""Rubik's cube pretext: permutation set, cube tiling, exact inverse, numpy/torch parity, bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_ssl.pretext import RubikCube, permutation_set
from napari_ssl.pretext.rubik import min_hamming_distance

FAST = settings(max_examples=30, deadline=None)


def test_permutation_set_distinct_deterministic_and_far_apart():
    perms = permutation_set(8, 100)
    assert perms.shape == (100, 8)
    assert len({tuple(p) for p in perms}) == 100
    assert all(sorted(p) == list(range(8)) for p in perms.tolist())
    assert perms[0].tolist() == list(range(8))  # greedy start: the identity
    # the greedy max-of-min choice over all 8! permutations reaches a minimum distance of 6 for K = 100
    assert min_hamming_distance(perms) == 6
    permutation_set.cache_clear()
    again = permutation_set(8, 100)
    np.testing.assert_array_equal(perms, again)
    assert not again.flags.writeable
    # fewer permutations are at least as far apart; K = 10 reaches 7
    assert min_hamming_distance(permutation_set(8, 10)) >= 7


def test_permutation_set_larger_grid_is_deterministic():
    a = permutation_set(27, 20)
    permutation_set.cache_clear()
    b = permutation_set(27, 20)
    np.testing.assert_array_equal(a, b)
    assert len({tuple(p) for p in a}) == 20
    assert min_hamming_distance(a) >= 20


def test_every_class_is_sampled():
    task = RubikCube(n_permutations=3, gap=0)
    rng = np.random.default_rng(0)
    seen = {task.sample((8, 8, 8), rng).permutation_index for _ in range(60)}
    assert seen == {0, 1, 2}  # the last class too (a known off-by-one in public code)


@pytest.mark.parametrize(("shape", "grid"), [((16, 16, 16), 2), ((9, 13, 17), 2), ((12, 9, 15), 3)])
def test_cubes_tile_the_grid_without_overlap(shape, grid):
    task = RubikCube(grid=grid, gap=0, n_permutations=10)
    params = task.sample(shape, np.random.default_rng(1))
    boxes = task.overlay(params)["boxes"]
    count = np.zeros(shape, dtype=int)
    for (z0, y0, x0), (z1, y1, x1) in boxes:
        count[z0:z1, y0:y1, x0:x1] += 1
    cell = [s // grid for s in shape]
    start = [(s - grid * c) // 2 for s, c in zip(shape, cell, strict=True)]
    covered = tuple(slice(a, a + grid * c) for a, c in zip(start, cell, strict=True))
    assert (count[covered] == 1).all()  # tiles exactly: no overlap, no hole (not i : i + size)
    assert count.sum() == np.prod([grid * c for c in cell])


def test_gap_cubes_stay_in_their_cells():
    task = RubikCube(gap=(2, 3, 4))
    params = task.sample((20, 24, 28), np.random.default_rng(2))
    assert params.cube == (8, 9, 10)
    ov = task.overlay(params)
    for k, ((lo, hi), g) in enumerate(zip(ov["boxes"], ov["grid_index"], strict=True)):
        cell_lo = np.asarray(params.start) + g * np.asarray(params.cell)
        assert (lo >= cell_lo).all() and (hi <= cell_lo + np.asarray(params.cell)).all(), k
        np.testing.assert_array_equal(hi - lo, params.cube)


shapes = st.tuples(st.integers(2, 19), st.integers(2, 19), st.integers(2, 19))


@FAST
@given(
    shape=shapes, seed=st.integers(0, 2**16), lead=st.sampled_from([(), (1,), (2, 1)]), gap=st.integers(0, 3)
)
def test_invert_apply_is_exact_numpy_and_torch(shape, seed, lead, gap):
    task = RubikCube(gap=0, n_permutations=24)
    if gap and min(shape) // 2 > gap:
        task = RubikCube(gap=gap, n_permutations=24)
    params = task.sample(shape, np.random.default_rng(seed))
    assert params == task.sample(shape, np.random.default_rng(seed))  # same seed, same params
    x = np.random.default_rng(seed).normal(size=lead + shape).astype(np.float32)
    before = x.copy()
    y = task.apply(x, params)
    assert type(y) is np.ndarray and y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_array_equal(x, before)  # input untouched
    np.testing.assert_array_equal(task.invert(y, params), x)
    xt = torch.from_numpy(x.copy())
    yt = task.apply(xt, params)
    assert isinstance(yt, torch.Tensor) and yt.dtype == xt.dtype and yt.shape == xt.shape
    np.testing.assert_array_equal(yt.numpy(), y)
    np.testing.assert_array_equal(xt.numpy(), before)
    np.testing.assert_array_equal(task.invert(yt, params).numpy(), x)
    np.testing.assert_array_equal(task.cubes(xt, params).numpy(), task.cubes(x, params))


def test_apply_moves_and_rotates_cubes():
    task = RubikCube(gap=0, n_permutations=100, p_rotate=0.5)
    x = np.arange(8 * 10 * 12, dtype=np.int32).reshape(8, 10, 12)
    params = dataclasses.replace(
        task.sample(x.shape, 3),
        permutation=(7, 6, 5, 4, 3, 2, 1, 0),
        rotations=((True, False), (False, True), (True, True), (False, False)) * 2,
    )
    y = task.apply(x, params)
    q = x[:4, :5, :6]  # cell 0 (source of output cell 7)
    r = x[4:, 5:, 6:]  # cell 7 (source of output cell 0)
    np.testing.assert_array_equal(y[:4, :5, :6], r[::-1, ::-1, :])  # about x: z and y flipped
    np.testing.assert_array_equal(y[:4, :5, 6:], x[4:, 5:, :6][::-1, :, ::-1])  # about y: z and x flipped
    np.testing.assert_array_equal(y[:4, 5:, :6], x[4:, :5, 6:][:, ::-1, ::-1])  # both: y, x flipped (z turn)
    np.testing.assert_array_equal(y[4:, 5:, 6:], q)  # cell 7: no rotation
    np.testing.assert_array_equal(np.sort(y, axis=None), np.sort(x, axis=None))
    cubes = task.cubes(x, params)
    assert cubes.shape == (8, 4, 5, 6)
    for i, ((lo, hi)) in enumerate(task.overlay(params)["boxes"]):
        np.testing.assert_array_equal(cubes[i], y[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])


def test_gap_keeps_shape_and_inverts():
    task = RubikCube(gap=3)
    x = np.random.default_rng(0).random((2, 17, 18, 19)).astype(np.float32)
    params = task.sample(x.shape, np.random.default_rng(0))
    y = task.apply(x, params)
    np.testing.assert_array_equal(task.invert(y, params), x)
    assert task.cubes(x, params).shape == (8, 2, *params.cube)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float16, np.float64, np.bool_])
def test_dtypes_preserved(dtype):
    task = RubikCube(gap=1)
    x = (np.random.default_rng(0).random((8, 8, 8)) * 100).astype(dtype)
    params = task.sample(x.shape, 0)
    y = task.apply(x, params)
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(task.invert(y, params), x)


def test_targets_and_overlay_are_plain():
    task = RubikCube(gap=2)
    params = task.sample((16, 16, 16), 5)
    t = task.targets(params)
    assert 0 <= t["permutation"] < 100
    assert t["rotations"].shape == (8, 2) and t["rotations"].dtype == np.float32
    ov = task.overlay(params)
    assert ov["boxes"].shape == (8, 2, 3) and ov["source_boxes"].shape == (8, 2, 3)
    np.testing.assert_array_equal(ov["source"], params.permutation)
    json.dumps(dataclasses.asdict(params))  # params are JSON-friendly


def test_cuda_if_available():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    task = RubikCube(gap=1)
    x = torch.rand(2, 1, 16, 16, 16, device="cuda")
    params = task.sample(x.shape, 0)
    y = task.apply(x, params)
    assert y.device == x.device
    assert torch.equal(task.invert(y, params), x)


def test_bad_input():
    task = RubikCube(gap=0)
    with pytest.raises(ValueError, match="at least 3 axes"):
        task.sample((8, 8), 0)
    params = task.sample((8, 8, 8), 0)
    with pytest.raises(ValueError, match="at least 3 axes"):
        task.apply(np.zeros((8, 8)), params)
    with pytest.raises(ValueError, match="spatial shape"):
        task.apply(np.zeros((8, 8, 9)), params)
    with pytest.raises(ValueError, match=r"smaller than grid=2 along z \(1 < 2"):
        task.sample((1, 8, 8), 0)
    with pytest.raises(ValueError, match="gap=10 along z .* must be < 4"):
        RubikCube(gap=10).sample((8, 30, 30), 0)
    bad = np.zeros((8, 8, 8), np.float32)
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        task.apply(bad, params)
    bad[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        task.apply(torch.from_numpy(bad), params)
    with pytest.raises(ValueError, match="grid must be >= 2"):
        RubikCube(grid=1)
    with pytest.raises(ValueError, match="n_permutations must be <= 1000"):
        RubikCube(n_permutations=5000)
    with pytest.raises(ValueError, match="n_permutations must be >= 1"):
        RubikCube(n_permutations=0)
    with pytest.raises(ValueError, match="p_rotate must be <= 1"):
        RubikCube(p_rotate=2)
    with pytest.raises(ValueError, match="gap must be >= 0"):
        RubikCube(gap=-1)
    with pytest.raises(ValueError, match="numpy array or a torch tensor"):
        task.apply([[[0.0]]], params)
