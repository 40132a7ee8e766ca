"""Models Genesis: the transforms (ranges, determinism per seed, invert of the intensity curve, in- / out-painting
exclusive, local shuffling keeps each block's voxels), foreground-guided boxes, and a tiny pretrain + score."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from napari_ssl.pretext import GenesisParams, ModelsGenesis, get_pretext
from napari_ssl.pretext.genesis import INNER, OUTER, bezier_map

SHAPE = (16, 20, 24)


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(1, *SHAPE)).astype(np.float32)


def _only(**probs: float) -> ModelsGenesis:
    """A task doing only the transforms given a probability (others off)."""
    base = {"p_shuffle": 0.0, "p_intensity": 0.0, "p_paint": 0.0}
    return ModelsGenesis(**{**base, **probs})


def test_registered_and_cites_its_paper() -> None:
    task = get_pretext("genesis")
    assert isinstance(task, ModelsGenesis) and "2021" in ModelsGenesis.__doc__
    params = [p.name for p in ModelsGenesis.PARAMETERS]
    import inspect

    assert params == list(inspect.signature(ModelsGenesis.__init__).parameters)[1:]
    for spec in ModelsGenesis.PARAMETERS:  # defaults are the constructor's and inside their limits
        assert getattr(task, spec.name) == spec.default and spec.min <= spec.default <= spec.max


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"p_shuffle": 1.5}, "p_shuffle must be <= 1.0"),
    ({"n_boxes": 0}, "n_boxes must be >= 1"),
    ({"n_boxes": 2.5}, "n_boxes must be an int"),
    ({"max_block": float("nan")}, "max_block must be finite"),
])
def test_bad_parameters(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        ModelsGenesis(**kwargs)


def test_deterministic_per_seed(x) -> None:
    task = ModelsGenesis()
    for seed in range(5):
        a, b = task.sample(SHAPE, seed), task.sample(SHAPE, np.random.default_rng(seed))
        assert a == b
        np.testing.assert_array_equal(task.apply(x, a), task.apply(x, b))
    draws = {task.sample(SHAPE, seed) for seed in range(20)}
    assert len(draws) == 20  # different seeds, different draws
    assert {d.paint for d in draws} >= {"in", "out"} and any(d.block for d in draws)


def test_ranges_dtype_and_input_untouched(x) -> None:
    task = ModelsGenesis(p_shuffle=1.0, p_intensity=1.0, p_paint=1.0)
    before = x.copy()
    lo, hi = float(x.min()), float(x.max())
    for seed in range(10):
        params = task.sample(SHAPE, seed)
        y = task.apply(x, params)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert y.min() >= lo - 1e-5 and y.max() <= hi + 1e-5  # noise and curve stay inside the input's range
        assert not np.array_equal(y, x)
        np.testing.assert_array_equal(x, before)
        assert 1 <= len(params.boxes) <= task.n_boxes
        frac = INNER if params.paint == "in" else OUTER
        for box in params.boxes:
            size = np.subtract(box[3:], box[:3]) / np.asarray(SHAPE)
            assert np.all(size >= frac[0] - 0.5 / min(SHAPE)) and np.all(size <= frac[1] + 0.5 / min(SHAPE))
        if params.block is not None:
            top = [max(2, round(d * task.max_block)) for d in SHAPE]
            assert all(2 <= b <= t for b, t in zip(params.block, top, strict=True))


def test_bezier_map_is_monotone_and_fixed_at_the_ends() -> None:
    for seed in range(20):
        xs, ys = bezier_map(tuple(np.random.default_rng(seed).random(4)))
        assert np.all(np.diff(xs) >= 0) and np.all(np.diff(ys) >= 0)
        assert (xs[0], ys[0], xs[-1], ys[-1]) == pytest.approx((0, 0, 1, 1))


@pytest.mark.parametrize("seed", range(8))
def test_invert_undoes_the_intensity_curve(x, seed) -> None:
    task = _only(p_intensity=1.0)
    params = task.sample(SHAPE, seed)
    y = task.apply(x, params)
    assert params.curve is not None and not np.allclose(y, x, atol=1e-3)
    assert (y.min(), y.max()) == pytest.approx((x.min(), x.max()), abs=1e-5)  # the curve keeps both ends
    np.testing.assert_allclose(task.invert(y, params), x, atol=1e-3 * float(np.ptp(x)))
    if params.curve_flip:  # decreasing: the brightest voxel becomes the darkest
        assert y.reshape(-1)[x.argmax()] == pytest.approx(x.min(), abs=1e-5)


def test_invert_works_on_torch_and_refuses_what_destroys_voxels(x) -> None:
    torch = pytest.importorskip("torch")
    task = _only(p_intensity=1.0)
    params = task.sample(SHAPE, 1)
    t = torch.from_numpy(x)
    y = task.apply(t, params)
    assert isinstance(y, torch.Tensor) and y.dtype == t.dtype
    torch.testing.assert_close(task.invert(y, params), t, atol=1e-3 * float(np.ptp(x)), rtol=0)
    painted = _only(p_paint=1.0).sample(SHAPE, 0)
    with pytest.raises(ValueError, match=r"only invert its intensity curve.*-paint"):
        task.invert(x, painted)
    shuffled = _only(p_shuffle=1.0).sample(SHAPE, 0)
    with pytest.raises(ValueError, match="shuffle blocks"):
        task.invert(x, shuffled)


def test_in_and_out_painting_are_exclusive(x) -> None:
    task = _only(p_paint=1.0, p_inpaint=0.5)
    kinds = set()
    for seed in range(30):
        params = task.sample(SHAPE, seed)
        kinds.add(params.paint)
        y = task.apply(x, params)
        inside = np.zeros(SHAPE, dtype=bool)
        for b in params.boxes:
            inside[b[0]:b[3], b[1]:b[4], b[2]:b[5]] = True
        changed = ~np.isclose(y[0], x[0])
        if params.paint == "in":  # noise in the boxes only
            assert not changed[~inside].any() and changed[inside].mean() > 0.9
        else:  # the boxes kept, noise everywhere else
            assert not changed[inside].any() and changed[~inside].mean() > 0.9
        assert task.targets(params)["mask"].sum() == (inside.sum() if params.paint == "in" else (~inside).sum())
    assert kinds == {"in", "out"}
    with pytest.raises(ValueError, match="paint must be"):
        GenesisParams(shape=SHAPE, paint="both", boxes=((0, 0, 0, 2, 2, 2),))
    with pytest.raises(ValueError, match="painting needs boxes"):
        GenesisParams(shape=SHAPE, paint="in")
    with pytest.raises(ValueError, match="outside the shape"):
        GenesisParams(shape=SHAPE, paint="in", boxes=((0, 0, 0, 2, 2, 99),))
    with pytest.raises(ValueError, match="outside the shape"):
        GenesisParams(shape=SHAPE, block=(2, 2, 2), blocks=((15, 0, 0),))


def test_shuffle_keeps_each_blocks_voxels(x) -> None:
    task = _only(p_shuffle=1.0, shuffle_fraction=1.0, max_block=0.25)
    params = task.sample(SHAPE, 3)
    assert params.block is not None and len(params.blocks) > 4
    y = task.apply(x, params)
    moved = 0
    covered = np.zeros(SHAPE, dtype=bool)
    for corner in params.blocks:
        box = (0, *(slice(c, c + b) for c, b in zip(corner, params.block, strict=True)))
        np.testing.assert_array_equal(np.sort(y[box], axis=None), np.sort(x[box], axis=None))
        moved += int(not np.array_equal(y[box], x[box]))
        assert not covered[box[1:]].any()  # disjoint blocks
        covered[box[1:]] = True
    assert moved >= len(params.blocks) - 1
    np.testing.assert_array_equal(y[0][~covered], x[0][~covered])  # nothing outside the blocks moves
    multi = np.stack([x[0], -x[0]])  # every channel gets the same permutation
    out = task.apply(multi, params)
    np.testing.assert_array_equal(out[1], -out[0])


def test_boxes_sit_on_the_foreground() -> None:
    task = _only(p_paint=1.0, p_inpaint=1.0)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[2:6, 12:18, 15:22] = True
    for seed in range(10):
        params = task.sample(SHAPE, seed, foreground=mask)
        for b in params.boxes:
            centre = [(b[k] + b[k + 3] - 1) // 2 for k in range(3)]
            near = [int(np.clip(c, lo, hi - 1)) for c, lo, hi in zip(centre, (2, 12, 15), (6, 18, 22), strict=True)]
            assert max(abs(c - n) for c, n in zip(centre, near, strict=True)) <= 1
    params = task.sample(SHAPE, 0, foreground=np.zeros(SHAPE, dtype=bool))  # an empty mask: anywhere
    assert params.boxes


def test_overlay_and_describe() -> None:
    task = ModelsGenesis(p_shuffle=1.0, p_intensity=1.0, p_paint=1.0, p_inpaint=0.0)
    params = task.sample(SHAPE, 2)
    overlay = task.overlay(params)
    assert overlay["paint"] == "out" and overlay["boxes"].shape == (len(params.boxes), 2, 3)
    assert overlay["blocks"].shape == (len(params.blocks), 2, 3) and overlay["curve"].shape == (2, 50)
    assert "out-painting" in task.describe(params) and "shuffled" in task.describe(params)
    none = dataclasses.replace(params, block=None, blocks=(), curve=None, paint="none", boxes=())
    assert task.describe(none).startswith("no corruption")


def test_tiny_pretrain_and_score(shared_data: Path, tmp_path: Path, capsys) -> None:
    from napari_ssl.cli import main

    ct = shared_data / "ct_unlabeled" / "ct_thorax_abdomen.nii.gz"
    assert main(["pretrain", "--pretext", "genesis", "--data", str(ct), "--out", str(tmp_path / "ssl"), "--steps", "2",
                 "--batch-size", "1", "--patch-size", "32", "--backbone", "tiny", "--spacing", "6", "6", "6",
                 "--device", "cpu", "--workers", "0", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["score", "--model", str(tmp_path / "ssl"), "--data", str(shared_data / "ct_organs" / "ct.nii.gz"),
                 "--samples", "3", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert set(result) == {"genesis/psnr_gain", "genesis/psnr", "genesis/psnr_input"}
    # the residual restoration starts as the identity: after 2 steps its output is still close to its input
    assert abs(result["genesis/psnr_gain"]) < 1.0
    assert result["genesis/psnr"] == pytest.approx(result["genesis/psnr_input"] + result["genesis/psnr_gain"])
