"""Imaging planes pretext: exact geometry of intersection lines, heatmaps, slice positions, resampling,
round trip through SimpleITK files, and the real cardiac exam."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_ssl.io.volume import Volume
from napari_ssl.pretext import ImagingPlanes
from napari_ssl.pretext.planes.geometry import intersection

FAST = settings(max_examples=25, deadline=None)


def rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.diag(r))[None, :]


def oblique_volume(shape=(12, 16, 20), spacing=(3.0, 1.0, 0.7), seed=0, dtype=np.float32) -> Volume:
    return Volume(
        np.zeros(shape, dtype=dtype), spacing=spacing, origin=(10.0, -20.0, 5.0), direction=rotation(seed)
    )


def distance_to_plane(params, k, points):
    a = params.arrays()
    return np.abs((np.asarray(points) - a["origin"][k]) @ a["normal"][k])


@FAST
@given(
    seed=st.integers(0, 2**16),
    shape=st.tuples(st.integers(2, 24), st.integers(2, 24), st.integers(2, 24)),
    spacing=st.tuples(*[st.sampled_from([0.5, 1.0, 1.3, 4.0])] * 3),
    oblique=st.booleans(),
)
def test_intersections_lie_on_both_planes_and_heatmaps_peak_on_them(seed, shape, spacing, oblique):
    task = ImagingPlanes(n_stack=3, n_oblique=3, size=(12, 10), sigma=2.0)
    source = (
        Volume(np.zeros(shape, np.float32), spacing=spacing, direction=rotation(seed)) if oblique else shape
    )
    params = task.sample(source, np.random.default_rng(seed), spacing=None if oblique else spacing)
    assert params == task.sample(source, np.random.default_rng(seed), spacing=None if oblique else spacing)
    t = task.targets(params)
    heat, has_line = t["heatmaps"], t["has_line"]
    assert heat.shape == (6, 6, 12, 10) and heat.dtype == np.float32
    ps = params.pixel_spacing[0][0]
    for i in range(6):
        for j in range(6):
            if i == j:
                assert not has_line[i, j] and not heat[i, j].any()
                continue
            cut = intersection(params, i, j)
            assert cut["parallel"] == (params.stack[i] == params.stack[j] == 0)
            assert has_line[i, j] == (not cut["parallel"])
            if cut["parallel"]:
                assert not heat[i, j].any()
                continue
            # the infinite line and any clipped segment lie on both planes
            pts = [cut["point"], cut["point"] + 50 * cut["direction"]]
            if cut["segment"] is not None:
                pts += list(cut["segment"])
                assert np.all(cut["pixels_i"] >= -1e-6) and np.all(
                    cut["pixels_i"] <= np.array(params.sizes[i]) - 1 + 1e-6
                )
            assert distance_to_plane(params, i, pts).max() < 1e-4
            assert distance_to_plane(params, j, pts).max() < 1e-4
            # the heatmap maximum lies on the line (within half a pixel diagonal) when the line crosses plane i
            if _crosses(params, i, j):
                r, c = np.unravel_index(np.argmax(heat[i, j]), heat[i, j].shape)
                q = params.pixel_to_world(i, [r, c])
                d = np.linalg.norm(np.cross(q - cut["point"], cut["direction"]))
                assert d <= ps * np.sqrt(2) / 2 + 1e-6
                assert heat[i, j, r, c] == pytest.approx(np.exp(-(d**2) / (2 * 2.0**2)), abs=1e-5)
    pos = t["slice_position"][np.asarray(params.stack) == 0]
    np.testing.assert_allclose(pos, np.linspace(0, 1, 3), atol=1e-6)  # monotone, 0 to 1
    assert t["in_stack"].tolist() == [True] * 3 + [False] * 3


def _crosses(params, i, j):
    """Line of j crosses plane i's image (pixel-centre rectangle), by dense sampling near the image."""
    cut = intersection(params, i, j)
    h, w = params.sizes[i]
    centre = params.pixel_to_world(i, [(h - 1) / 2, (w - 1) / 2])
    diag = np.hypot(h * params.pixel_spacing[i][0], w * params.pixel_spacing[i][1])
    t0 = (centre - cut["point"]) @ cut["direction"]
    pts = cut["point"] + (t0 + np.linspace(-diag, diag, 4001))[:, None] * cut["direction"]
    rc = params.world_to_pixel(i, pts)
    inside = (rc[:, 0] >= 0) & (rc[:, 0] <= h - 1) & (rc[:, 1] >= 0) & (rc[:, 1] <= w - 1)
    return bool(inside.any())


def test_stack_planes_are_parallel_and_say_so():
    task = ImagingPlanes(n_stack=4, n_oblique=1, size=8, stack_axis="y")
    params = task.sample((10, 12, 14), 0)
    lines = task.overlay(params)["lines"]
    stack_pairs = [ln for ln in lines if params.stack[ln["i"]] == params.stack[ln["j"]] == 0]
    assert len(stack_pairs) == 6
    assert all(ln["parallel"] and ln["segment_world"] is None for ln in stack_pairs)
    a = params.arrays()
    np.testing.assert_allclose(np.abs(a["normal"][:4]), np.broadcast_to([0, 1, 0], (4, 3)), atol=1e-12)


def test_resampling_is_exact_on_a_linear_ramp():
    """Trilinear interpolation reproduces a linear function of world position exactly."""
    vol = oblique_volume(seed=3)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in vol.spatial_shape], indexing="ij"), axis=-1)
    coef = np.array([0.3, -0.2, 0.5])
    ramp = (vol.index_to_world(idx) @ coef).astype(np.float64)
    task = ImagingPlanes(n_stack=2, n_oblique=3, size=(9, 11), pixel_spacing=0.8, roi=0.3)
    params = task.sample(vol, np.random.default_rng(1))
    out = task.apply(ramp, params)
    assert out.shape == (5, 9, 11) and out.dtype == np.float64
    inv = np.linalg.inv(vol.affine)
    for k in range(5):
        rc = np.stack(np.meshgrid(np.arange(9), np.arange(11), indexing="ij"), axis=-1)
        world = params.pixel_to_world(k, rc)
        vox = world @ inv[:3, :3].T + inv[:3, 3]
        inside = np.all((vox >= 0) & (vox <= np.array(vol.spatial_shape) - 1), axis=-1)
        assert inside.mean() > 0.3
        np.testing.assert_allclose(out[k][inside], (world @ coef)[inside], atol=1e-4)
        assert np.all(out[k][~np.all((vox > -1) & (vox < np.array(vol.spatial_shape)), axis=-1)] == 0)


def test_apply_numpy_torch_batched_and_dtypes():
    task = ImagingPlanes(n_stack=2, n_oblique=1, size=6)
    params = task.sample((8, 9, 10), 0, spacing=(2.0, 1.0, 1.0))
    x = np.random.default_rng(0).random((2, 3, 8, 9, 10)).astype(np.float32)
    before = x.copy()
    y = task.apply(x, params)
    assert y.shape == (2, 3, 3, 6, 6) and y.dtype == np.float32
    np.testing.assert_array_equal(x, before)
    yt = task.apply(torch.from_numpy(x), params)
    assert isinstance(yt, torch.Tensor)
    np.testing.assert_allclose(yt.numpy(), y, atol=1e-6)
    np.testing.assert_allclose(task.apply(x[1, 2], params), y[1, 2], atol=1e-6)  # batch = independent items
    frozen = x[0, 0].copy()
    frozen.flags.writeable = False  # read-only input (a memory map, a shared Volume) works without warnings
    np.testing.assert_allclose(task.apply(frozen, params), y[0, 0], atol=1e-6)
    assert task.apply(x[0, 0] > 0.5, params).dtype == np.bool_
    xi = (x[0, 0] * 1000).astype(np.int16)
    yi = task.apply(xi, params)
    assert yi.dtype == np.int16 and yi.shape == (3, 6, 6)
    if torch.cuda.is_available():
        yc = task.apply(torch.from_numpy(x).cuda(), params)
        assert yc.is_cuda
        np.testing.assert_allclose(yc.cpu().numpy(), y, atol=1e-4)


def test_from_images_matches_sampled_planes_through_simpleitk_files(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    from napari_ssl import io

    rng = np.random.default_rng(7)
    vol = oblique_volume(shape=(14, 18, 16), seed=5)
    vol = vol.with_array(rng.random(vol.spatial_shape).astype(np.float32))
    task = ImagingPlanes(n_stack=3, n_oblique=3, size=(10, 12), pixel_spacing=1.1, sigma=3.0)
    params = task.sample(vol, rng)
    image = vol.to_sitk()
    a = params.arrays()
    views = []
    for k in range(params.n_planes):
        # each plane as its own image: a (1, H, W) grid with the plane's geometry
        plane = Volume(
            np.zeros((1, *params.sizes[k]), np.float32),
            spacing=(1.0, *params.pixel_spacing[k]),
            origin=params.origins[k],
            direction=np.stack([a["normal"][k], a["row"][k], a["col"][k]], axis=1),
        )
        ref = plane.to_sitk()
        resampled = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        path = io.write(Volume.from_sitk(resampled), tmp_path / f"plane{k}.nrrd")
        views.append(io.read(path))
    native = ImagingPlanes.from_images(views)
    assert native.n_planes == params.n_planes and native.volume_affine is None
    for k in range(params.n_planes):
        np.testing.assert_allclose(native.corners(k), params.corners(k), atol=1e-4)
    # the same lines, the same heatmaps
    mine, theirs = task.overlay(params)["lines"], task.overlay(native)["lines"]
    for m, t in zip(mine, theirs, strict=True):
        assert m["parallel"] == t["parallel"]
        if m["segment_world"] is None:
            assert t["segment_world"] is None
        else:
            np.testing.assert_allclose(t["segment_world"], m["segment_world"], atol=1e-3)
    np.testing.assert_allclose(task.targets(native)["heatmaps"], task.targets(params)["heatmaps"], atol=1e-4)
    # and SimpleITK's linear resampling agrees with ours
    ours = task.apply(vol.array, params)
    inv = np.linalg.inv(vol.affine)
    rc = np.stack(np.meshgrid(np.arange(10), np.arange(12), indexing="ij"), axis=-1)
    for k, view in enumerate(views):
        vox = params.pixel_to_world(k, rc) @ inv[:3, :3].T + inv[:3, 3]
        inside = np.all((vox >= 1e-3) & (vox <= np.array(vol.spatial_shape) - 1 - 1e-3), axis=-1)
        np.testing.assert_allclose(view.array[0][inside], ours[k][inside], atol=1e-4)
    with pytest.raises(ValueError, match="from_images"):
        task.apply(vol.array, native)


def test_cardiac_views_lines_and_short_axis_positions(shared_data):
    from napari_ssl import io

    volumes = {v.name: v for v in io.read_all(shared_data / "cardiac_views" / "056B")}
    two, four, sax = volumes["trufi_2-chamber"], volumes["trufi_4-chamber"], volumes["trufi_short-axis"]
    assert sax.spatial_shape[0] == 8
    params = ImagingPlanes.from_images([two, four, sax])
    assert params.n_planes == 10 and params.stack == (-1, -1) + (0,) * 8
    task = ImagingPlanes()
    lines = {(ln["i"], ln["j"]): ln for ln in task.overlay(params)["lines"]}
    for i, j in [(0, 1)] + [(a, k) for a in (0, 1) for k in range(2, 10)]:
        ln = lines[(i, j)]
        assert not ln["parallel"]
        assert ln["segment_world"] is not None, (params.names[i], params.names[j])  # crosses both images
        length = np.linalg.norm(ln["segment_world"][1] - ln["segment_world"][0])
        assert length > 50  # mm: a real cut through the heart, not a corner graze
        assert distance_to_plane(params, i, ln["segment_world"]).max() < 1e-4
        assert distance_to_plane(params, j, ln["segment_world"]).max() < 1e-4
    assert all(lines[(i, j)]["parallel"] for i in range(2, 10) for j in range(i + 1, 10))
    t = task.targets(params)
    pos = t["slice_position"][2:]
    assert pos[0] == 0 and pos[-1] == 1 and np.all(np.diff(pos) > 0)
    np.testing.assert_allclose(np.diff(pos), 1 / 7, atol=1e-3)  # 12 mm apart, evenly
    assert isinstance(t["heatmaps"], list) and t["heatmaps"][0].shape == (10, *two.spatial_shape[1:])
    assert t["heatmaps"][0][1].max() > 0.99  # the 4-chamber line runs through the 2-chamber image
    # cine series: the first frame's geometry, one view each
    cines = [v for v in volumes.values() if v.array.ndim == 4]
    assert len(ImagingPlanes.from_images(cines)) == len(cines)


def test_overlay_is_plain_and_corners_map_to_voxels():
    vol = oblique_volume()
    task = ImagingPlanes(n_stack=2, n_oblique=2, size=8)
    params = task.sample(vol, 0)
    ov = task.overlay(params)
    assert len(ov["planes"]) == 4 and len(ov["lines"]) == 6
    for k, plane in enumerate(ov["planes"]):
        np.testing.assert_allclose(
            vol.index_to_world(plane["corners_voxel"]), plane["corners_world"], atol=1e-9
        )
        np.testing.assert_allclose(plane["corners_world"], params.corners(k))
    json.dumps(dataclasses.asdict(params))


def test_bad_input():
    with pytest.raises(ValueError, match="size must be >= 2 pixels"):
        ImagingPlanes(size=(0, 16))
    with pytest.raises(ValueError, match="size must be >= 2 pixels"):
        ImagingPlanes(size=1)
    with pytest.raises(ValueError, match="pixel_spacing must be >= 0"):
        ImagingPlanes(pixel_spacing=-1)
    with pytest.raises(ValueError, match="n_stack must be 0 or >= 2"):
        ImagingPlanes(n_stack=1)
    with pytest.raises(ValueError, match="sigma must be >= 0.001"):
        ImagingPlanes(sigma=0)
    with pytest.raises(ValueError, match="stack_axis must be one of"):
        ImagingPlanes(stack_axis="t")
    with pytest.raises(ValueError, match="views must be one of"):
        ImagingPlanes(views="cardiac")
    with pytest.raises(ValueError, match="jitter must be"):
        ImagingPlanes(jitter=-1)
    with pytest.raises(ValueError, match="rotation must be"):
        ImagingPlanes(rotation=200)
    with pytest.raises(ValueError, match="at least 2 planes"):
        ImagingPlanes(n_stack=0, n_oblique=1)
    task = ImagingPlanes(size=8)
    with pytest.raises(ValueError, match="at least 3 axes"):
        task.sample((16, 16), 0)
    with pytest.raises(ValueError, match=r"at least 2 voxels per axis.*\(z\)"):
        task.sample((1, 16, 16), 0)
    params = task.sample((8, 8, 8), 0)
    with pytest.raises(ValueError, match="NaN or inf"):
        task.apply(np.full((8, 8, 8), np.nan, np.float32), params)
    with pytest.raises(ValueError, match="zero width"):
        dataclasses.replace(params, sizes=((0, 8),) * params.n_planes)
    with pytest.raises(ValueError, match="plane 0: rows and cols must be orthonormal"):
        dataclasses.replace(
            params, rows=((0.0, 0.0, 1.0), *params.rows[1:]), cols=((0.0, 0.0, 1.0), *params.cols[1:])
        )
    with pytest.raises(ValueError, match="at least 2 planes"):
        ImagingPlanes.from_images([oblique_volume(shape=(1, 4, 4))])
    with pytest.raises(ValueError, match="names has 1 entries for 2 volumes"):
        ImagingPlanes.from_images([oblique_volume(shape=(1, 4, 4))] * 2, names=["a"])
    with pytest.raises(ValueError, match="must be a napari_ssl Volume"):
        ImagingPlanes.from_images([np.zeros((1, 4, 4)), np.zeros((1, 4, 4))])


def test_outside_the_volume_is_its_background():
    """Outside the volume, planes take the median of its border voxels: air on CT (a 0 would read as water), 0 on
    skull-stripped z-scored MR (its minimum, the darkest brain voxel, would draw the volume's box into the planes)."""
    rng = np.random.default_rng(1)
    ct = np.full((16, 20, 24), -1000.0, np.float32)
    ct[3:-3, 3:-3, 3:-3] = rng.uniform(-200.0, 200.0, (10, 14, 18))
    task = ImagingPlanes()
    params = task.sample(ct.shape, np.random.default_rng(2), spacing=(2.0, 1.0, 1.0))
    y = task.apply(ct, params)
    assert y.min() >= -1000.0 - 1e-3 and y.max() <= 200.0
    assert np.isclose(y, -1000.0).any()  # the planes reach past the volume somewhere
    mr = np.zeros((16, 20, 24), np.float32)
    mr[3:-3, 3:-3, 3:-3] = rng.normal(0.0, 1.0, (10, 14, 18))
    a = task._grid(params, torch.float32, "cpu")[0].abs().amax(-1).numpy() > 1.0  # pixels outside the volume
    assert a.any()
    z = task.apply(mr, params)
    np.testing.assert_array_equal(z[a], 0.0)  # the background, not mr.min()
    batch = task.apply(np.stack([ct, mr]), params)  # each channel its own background
    np.testing.assert_array_equal(batch[1][a], 0.0)
    assert np.all(batch[0][a] == -1000.0)


def _line_angles(task, shape, seeds):
    """In-image angle (radians, modulo pi) of every line of every sample, (samples, N, N)."""
    from napari_ssl.pretext.planes.network import heatmap_angles

    heat = np.stack([task.targets(task.sample(shape, s, spacing=(1.5, 1.0, 1.0)))["heatmaps"] for s in seeds])
    return heatmap_angles(torch.from_numpy(heat))[0].numpy(), heat


def test_anatomical_views_are_fixed_in_the_anatomy_up_to_jitter():
    """Oblique views: normals at fixed angles around the stack axis (within ``jitter`` degrees), through one point;
    without jitter and rotation the planes, their lines and the targets are the same for every seed but the shift."""
    task = ImagingPlanes(n_stack=4, n_oblique=3, size=16, jitter=10.0, rotation=0.0)
    for seed in range(20):
        a = task.sample((30, 40, 40), seed, spacing=(1.5, 1.0, 1.0)).arrays()
        for k, phi in enumerate(np.radians([30.0, 90.0, 150.0])):
            canonical = np.array([0.0, np.cos(phi), np.sin(phi)])
            cos = abs(float(a["normal"][4 + k] @ canonical))
            assert cos >= np.cos(np.radians(10.0)) - 1e-9
        np.testing.assert_allclose(a["normal"][:4], np.broadcast_to([1.0, 0.0, 0.0], (4, 3)), atol=1e-12)
    still = ImagingPlanes(n_stack=4, n_oblique=3, size=16, jitter=0.0, rotation=0.0, roi=1e-2)
    ang, _ = _line_angles(still, (30, 40, 40), range(6))
    has = still.targets(still.sample((30, 40, 40), 0, spacing=(1.5, 1.0, 1.0)))["has_line"]
    np.testing.assert_allclose(np.ptp(ang[:, has], axis=0), 0.0, atol=1e-3)  # same lines whatever the seed


def test_rotated_views_cannot_be_answered_without_looking():
    """With the default in-plane rotation the line angles are spread over every direction, so the best answer that
    ignores the image (the mean target heatmap) is near chance (45 degrees): the score measures reading the anatomy."""
    from napari_ssl.pretext.planes.network import planes_metrics

    task = ImagingPlanes(n_stack=4, n_oblique=3, size=24)
    _, heat = _line_angles(task, (30, 40, 40), range(64))
    target = torch.from_numpy(heat)
    blind = target.mean(0, keepdim=True).expand_as(target)  # the same maps for every sample
    zeros = torch.zeros(target.shape[:2])
    err = planes_metrics(blind, zeros, target, zeros, zeros)["planes/angle_error_deg"]
    assert err > 35.0
    still = ImagingPlanes(n_stack=4, n_oblique=3, size=24, rotation=0.0)  # contrast: poses fixed in the image
    _, heat = _line_angles(still, (30, 40, 40), range(64))
    target = torch.from_numpy(heat)
    blind = target.mean(0, keepdim=True).expand_as(target)
    assert planes_metrics(blind, zeros, target, zeros, zeros)["planes/angle_error_deg"] < 15.0


def test_random_views_keep_min_angle():
    task = ImagingPlanes(n_stack=3, n_oblique=4, size=8, views="random", min_angle=25.0)
    for seed in range(10):
        n = task.sample((20, 20, 20), seed).arrays()["normal"]
        for i in range(3, 7):
            for j in range(i):  # each oblique against the stack and the obliques before it
                assert np.linalg.norm(np.cross(n[i], n[j])) >= np.sin(np.radians(25.0)) - 1e-9
