"""Volume geometry: index <-> world, SimpleITK round trip, validation (layer kwargs: tests/_napari/test_layers.py)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssl.io.volume import Volume


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.diag(r))[None, :]


def _oblique(seed: int = 1, shape: tuple[int, ...] = (5, 6, 7)) -> Volume:
    return Volume(
        array=np.arange(np.prod(shape), dtype=np.float32).reshape(shape),
        spacing=(2.5, 0.8, 1.1),
        origin=(-10.0, 20.0, 3.5),
        direction=_rotation(seed),
    )


def test_index_world_round_trip_and_affine():
    vol = _oblique()
    idx = np.array([[0, 0, 0], [4, 5, 6], [1.5, 2.25, 0.5]])
    world = vol.index_to_world(idx)
    np.testing.assert_allclose(world[0], vol.origin)
    # world = origin + direction @ (spacing * index), written out by hand
    expected = np.asarray(vol.origin) + (vol.direction @ (np.asarray(vol.spacing) * idx[1]))
    np.testing.assert_allclose(world[1], expected)
    np.testing.assert_allclose(vol.world_to_index(world), idx, atol=1e-9)
    np.testing.assert_allclose(vol.affine @ np.append(idx[2], 1), np.append(world[2], 1))


def test_sitk_round_trip_keeps_geometry():
    vol = _oblique(7)
    back = Volume.from_sitk(vol.to_sitk())
    assert back.same_geometry(vol, atol=1e-9)
    np.testing.assert_array_equal(back.array, vol.array)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"array": np.zeros((4, 4))}, "3D"),
        ({"array": np.zeros((0, 4, 4))}, "empty"),
        ({"array": np.zeros((2, 4, 4)), "spacing": (1, 0, 1)}, "positive"),
        ({"array": np.zeros((2, 4, 4)), "spacing": (1, np.nan, 1)}, "finite"),
        ({"array": np.zeros((2, 4, 4)), "direction": np.ones((3, 3))}, "orthonormal"),
    ],
)
def test_invalid_volume(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Volume(**kwargs)


def test_array_from_sitk_shares_and_keeps_the_buffer():
    import gc

    import SimpleITK as sitk

    from napari_ssl.io.volume import array_from_sitk

    values = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    image = sitk.GetImageFromArray(values)
    array = array_from_sitk(image)
    np.testing.assert_array_equal(array, values)
    array[0, 0, 0] = 99  # the buffer itself: no copy was made
    assert image.GetPixel(0, 0, 0) == 99
    del image
    gc.collect()
    np.testing.assert_array_equal(array[1:], values[1:])  # still valid: the array keeps the image alive
    assert array.flags.writeable and array.flags.c_contiguous
