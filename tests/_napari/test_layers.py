"""Volume <-> layer geometry (the napari convention lives in _napari.layers), case arrangement, 3D hook."""

from __future__ import annotations

import numpy as np
import pytest
from test_volume import _oblique, _rotation

from napari_ssl._napari.layers import (
    arrange_case_layers,
    layer_kwargs,
    volume_from_layer_data,
    volume_to_layer_data,
)
from napari_ssl._napari.reader import read_layers
from napari_ssl.io.volume import Volume


def test_volume_has_no_napari_conventions():
    assert not hasattr(Volume, "layer_kwargs")
    assert not hasattr(Volume, "from_layer_data")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_layer_kwargs_round_trip(seed):
    vol = _oblique(seed)
    kwargs = layer_kwargs(vol)
    assert kwargs["scale"] == vol.spacing
    assert kwargs["translate"] == vol.origin
    back = volume_from_layer_data(
        vol.array, scale=kwargs["scale"], translate=kwargs["translate"], affine=kwargs["affine"]
    )
    assert back.same_geometry(vol, atol=1e-9)
    # the composed napari transform (affine after translate + scale) maps indices to the same world points
    idx = np.array([3.0, 1.0, 2.0])
    napari_world = kwargs["affine"] @ np.append(np.asarray(kwargs["translate"]) + np.asarray(kwargs["scale"]) * idx, 1)
    np.testing.assert_allclose(napari_world[:3], vol.index_to_world(idx))


def test_time_axis_gets_unit_scale():
    vol = Volume(array=np.zeros((4, 1, 8, 9)), spacing=(1, 2, 3), direction=_rotation(5))
    kwargs = layer_kwargs(vol)
    assert kwargs["scale"] == (1.0, 1.0, 2.0, 3.0)
    assert kwargs["affine"].shape == (5, 5)
    back = volume_from_layer_data(vol.array, **{k: kwargs[k] for k in ("scale", "translate", "affine")})
    assert back.same_geometry(vol)


def test_arrange_puts_labels_on_top_and_one_image_per_grid():
    grid = Volume(array=np.zeros((4, 5, 6), dtype=np.int16))
    elsewhere = Volume(array=np.zeros((1, 5, 6), dtype=np.int16), origin=(50.0, 0.0, 0.0))
    volumes = [
        grid.with_array(grid.array, name="flair"),
        grid.with_array(grid.array.astype(np.uint8), name="seg"),
        grid.with_array(grid.array, name="t1"),
        elsewhere.with_array(elsewhere.array, name="view"),
    ]
    layers = arrange_case_layers([volume_to_layer_data(v) for v in volumes], volumes)
    assert [(k["name"], t, k.get("visible", True)) for _, k, t in layers] == [
        ("flair", "image", True),
        ("t1", "image", False),  # same grid as flair: hidden, not stacked opaque over it
        ("view", "image", True),  # another place in space: shown
        ("seg", "labels", True),  # last, so drawn on top
    ]


@pytest.fixture
def no_expectation():
    from napari_ssl._napari import view_hook

    yield
    view_hook._EXPECTED["until"] = 0.0  # a read whose layers were never added must not leak into other tests


def test_reader_leaves_the_viewer_alone(make_napari_viewer, shared_data, no_expectation):
    viewer = make_napari_viewer()
    read_layers(shared_data / "cardiac_views/056B/Series0004_trufi_4-chamber")
    assert viewer.dims.ndisplay == 2 and len(viewer.layers) == 0


def test_edge_on_plane_opens_in_an_empty_2d_viewer(make_napari_viewer, shared_data):
    """The 2-chamber view's columns run head-foot: napari cannot draw it in 2D at all (singular transform)."""
    viewer = make_napari_viewer()
    (layer,) = viewer.open(shared_data / "cardiac_views/056B/Series0003_trufi_2-chamber", plugin="napari-ssl")
    assert viewer.dims.ndisplay == 3
    assert layer.data.shape[0] == 1
    normal = np.asarray(layer.affine.affine_matrix)[:3, 0]  # the plane's normal in world (z, y, x)
    np.testing.assert_allclose(viewer.camera.view_direction, -normal, atol=1e-3)  # seen face-on, not edge-on
    viewer.layers.clear()
    viewer.dims.ndisplay = 2
    viewer.add_image(np.zeros((4, 8, 8)))  # an ordinary volume afterwards: no stale switch to 3D
    assert viewer.dims.ndisplay == 2


def test_hook_shows_oblique_plane_in_3d(make_napari_viewer, shared_data, no_expectation):
    from napari_ssl._napari.view_hook import install, is_oblique_plane

    viewer = make_napari_viewer()
    install(viewer)
    axial = viewer.add_image(np.zeros((1, 8, 8)), metadata={"napari_ssl": {}})
    assert not is_oblique_plane(axial) and viewer.dims.ndisplay == 2
    (data, kwargs, _), = read_layers(shared_data / "cardiac_views/056B/Series0004_trufi_4-chamber")
    layer = viewer.add_image(data, **kwargs)  # added by any code path, not only the reader
    assert is_oblique_plane(layer)
    assert viewer.dims.ndisplay == 3
