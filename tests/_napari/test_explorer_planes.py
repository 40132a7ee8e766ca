"""Pretext explorer, imaging planes: planes resampled from real volumes and the native cardiac views."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_ssl import io
from napari_ssl._napari.layers import volume_to_layer_data
from napari_ssl.io.foreground import foreground_mask

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin_path import open_dock

pytestmark = pytest.mark.gui

WAIT_MS = 30_000


def digest(array):
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture
def dock(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "Pretext explorer")
    widget.auto.setChecked(False)
    return widget


def run_preview(dock, qtbot):
    worker = dock.preview()
    assert worker is not None, dock.status.text()
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        pass
    return dock.last_preview


def on_plane(point, layer):
    """Distance (mm) from a world point to the plane of a (1, H, W) plane layer."""
    affine = layer.affine.affine_matrix
    normal = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    return abs((np.asarray(point) - affine[:3, 3]) @ normal)


@pytest.mark.parametrize("scan", ["brain"])  # the CT runs in the screenshot test
def test_planes_from_volume_at_true_positions(dock, qtbot, shared_data, scan):
    if scan == "brain":  # anisotropic: 0.78 x 0.78 x 6.5 mm, downsampled in-plane
        vol = io.read(shared_data / "brain_tumor" / "image.nrrd")
        vol = vol.with_array(
            np.ascontiguousarray(vol.array[:, ::4, ::4]),
            spacing=(vol.spacing[0], vol.spacing[1] * 4, vol.spacing[2] * 4),
        )
    else:
        vol = io.read(shared_data / "ct_organs" / "ct.nii.gz")
    vol = vol.with_array(vol.array, name=scan)
    viewer = dock.viewer
    data, kwargs, _ = volume_to_layer_data(vol, "image")
    src = viewer.add_image(data, **kwargs)
    z_range = tuple(viewer.dims.range[0])  # the slice slider of the scan alone
    before = digest(src.data)
    dock.set_source(scan)
    dock.set_pretext("rubik")  # a first preview whose layers the planes preview recycles or removes
    dock.params["rubik"].set_values({"gap": 2})
    run_preview(dock, qtbot)
    viewer.dims.ndisplay = 3  # the planes at their world positions are a 3D view
    dock.set_pretext("planes")
    dock.params["planes"].set_values({"n_stack": 3, "n_oblique": 2, "size": 32})
    preview = run_preview(dock, qtbot)
    task, params = preview.task, preview.params
    assert params == task.sample(vol, np.random.default_rng(0), foreground=foreground_mask(vol.array))
    overlay = task.overlay(params)
    images = task.apply(vol.array.astype(np.float32), params)
    base = f"{scan} · planes"
    for k, plane in enumerate(overlay["planes"]):
        layer = viewer.layers[f"{base} {plane['name']}"]
        np.testing.assert_allclose(layer.data[0], images[k], rtol=1e-5)
        h, w = plane["size"]
        # the plane layer puts its pixels at the plane's world corners
        got = np.array(
            [layer.data_to_world((0, r, c)) for r, c in [(0, 0), (0, w - 1), (h - 1, w - 1), (h - 1, 0)]]
        )
        np.testing.assert_allclose(got, plane["corners_world"], atol=1e-6)
        # ... which lie inside the source's world box around the region of interest
        centre = np.asarray(plane["corners_world"]).mean(axis=0)
        lo, hi = src.extent.world
        assert np.all(centre >= lo - 1e-6) and np.all(centre <= hi + 1e-6)
    outlines = viewer.layers[f"{base} outlines"]
    assert len(outlines.data) == 5
    for k, plane in enumerate(overlay["planes"]):
        np.testing.assert_allclose(outlines.data[k][:4], plane["corners_world"])
    lines = viewer.layers[f"{base} lines"]
    expected = [ln["segment_world"] for ln in overlay["lines"] if ln["segment_world"] is not None]
    assert len(lines.data) == len(expected) > 0
    for got, want, (i, j) in zip(lines.data, expected, preview.segment_pairs, strict=False):
        np.testing.assert_allclose(got, want)
        # intersection lines lie on both planes: anisotropic spacing included, they line up
        for k in (i, j):
            layer = viewer.layers[f"{base} {params.names[k]}"]
            assert max(on_plane(p, layer) for p in got) < 1e-4  # mm
    # 3D text: only the selected plane's name and slice position, towards its first corner (world mm)
    text = viewer.layers[f"{base} text"]
    assert list(text.features["label"]) == ["stack[0]  pos 0.00"]
    corners = np.asarray(overlay["planes"][0]["corners_world"])
    anchor = corners.mean(axis=0) + 0.7 * (corners[0] - corners.mean(axis=0))
    np.testing.assert_allclose(text.data_to_world(text.data[0]), anchor, atol=1e-6)
    dock.step.setValue(3)  # select another plane: redrawn, nothing recomputed
    assert dock.last_preview is preview and dock.step_label.text() == "oblique 0"
    assert list(text.features["label"]) == ["oblique 0"]
    widths = np.asarray(outlines.edge_width)
    assert widths[3] > widths[0]
    assert not any(name.startswith(f"{scan} · rubik") for name in (layer.name for layer in viewer.layers))
    # 2D: one grid of every plane in the canvas beside the scan; the 3D layers go, the slider keeps its range
    viewer.dims.ndisplay = 2
    grid = viewer.layers[f"{base} grid"]
    assert grid.rgb and grid.ndim == 2
    assert f"{base} stack[0]" not in viewer.layers and f"{base} outlines" not in viewer.layers
    assert tuple(viewer.dims.range[0]) == z_range
    assert grid.extent.world[0, -1] > src.extent.world[1, -1]  # right of the scan
    rows, cols = 2, 3  # 5 tiles
    assert grid.data.shape[0] > rows * 200 and grid.data.shape[1] > cols * 200
    viewer.dims.ndisplay = 3
    positions = [p.slice_position for p in preview.planes if p.slice_position is not None]
    assert positions == sorted(positions) and positions[0] == 0 and positions[-1] == 1
    assert all(p.heatmaps is not None and p.heatmaps.max() > 0.5 for p in preview.planes)
    # parameter change: same layers updated, stale planes removed
    dock.params["planes"].set_values({"n_stack": 2})
    run_preview(dock, qtbot)
    assert f"{base} stack[2]" not in viewer.layers and f"{base} stack[1]" in viewer.layers
    assert len(viewer.layers[f"{base} outlines"].data) == 4
    assert digest(src.data) == before
    viewer.dims.ndisplay = 3
    assert viewer.layers[f"{base} oblique 0"].visible


def test_native_cardiac_views(dock, qtbot, shared_data):
    from napari_ssl._napari.explorer.dock import ALL_VIEWS
    from napari_ssl._napari.explorer.sources import view_volumes
    from napari_ssl._napari.reader import read_layers
    from napari_ssl.pretext import ImagingPlanes

    viewer = dock.viewer
    for data, kwargs, layer_type in read_layers(shared_data / "cardiac_views" / "056B"):
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    hashes = {layer.name: digest(layer.data) for layer in viewer.layers}
    viewer.dims.ndisplay = 3
    dock.set_pretext("planes")
    assert dock.source.itemText(0) == ALL_VIEWS
    dock.set_source(ALL_VIEWS)
    preview = run_preview(dock, qtbot)
    names = list(preview.params.names)
    assert "trufi_2-chamber" in names and "trufi_4-chamber" in names
    assert sum(n.startswith("trufi_short-axis[") for n in names) == 8
    # the outlines are the views' own corners (their DICOM geometry)
    outlines = viewer.layers["views · planes outlines"]
    for k in range(len(names)):
        np.testing.assert_allclose(outlines.data[k][:4], preview.params.corners(k))
    two = viewer.layers["trufi_2-chamber"]
    h, w = two.data.shape[-2:]
    np.testing.assert_allclose(
        preview.params.corners(names.index("trufi_2-chamber"))[2],
        two.data_to_world((0, h - 1, w - 1)),
        atol=1e-4,
    )
    # the 2- and 4-chamber views cut every short-axis slice, inside both images
    for view in ("trufi_2-chamber", "trufi_4-chamber"):
        k = names.index(view)
        cut_by = {preview.planes[j].name for j, *_ in preview.planes[k].lines}
        assert {f"trufi_short-axis[{z}]" for z in range(8)} <= cut_by
    lines = viewer.layers["views · planes lines"]
    assert len(lines.data) == len(preview.segments) > 10
    # short-axis slice positions 0..1 in order
    sax = [p.slice_position for p in preview.planes if p.name.startswith("trufi_short-axis[")]
    np.testing.assert_allclose(sax, np.linspace(0, 1, 8), atol=1e-6)
    # nothing added on top of the acquired views but the overlays; they are untouched
    assert {layer.name for layer in viewer.layers} - set(hashes) == {
        "views · planes outlines",
        "views · planes lines",
        "views · planes text",
    }
    # 2D (napari cannot slice these oblique views in 2D itself): one grid of every view instead
    from napari_ssl._napari.explorer.planes import plane_layer_specs

    (spec,) = plane_layer_specs(preview, "views · planes", None, 2, 0, None)
    assert spec[0] == "views · planes grid" and spec[2].ndim == 3 and spec[2].shape[-1] == 3
    assert all(digest(viewer.layers[n].data) == h for n, h in hashes.items())
    same = ImagingPlanes.from_images(view_volumes(viewer))
    assert same == preview.params


def visible_region(viewer) -> np.ndarray:
    """World ``(lo, hi)`` of the displayed axes that the 2D canvas shows (camera centre and zoom, canvas size)."""
    size = np.asarray(viewer.canvas.size, dtype=float)  # (height, width) in screen pixels
    centre = np.asarray(viewer.camera.center[-2:], dtype=float)
    half = size / 2 / viewer.camera.zoom  # zoom: screen pixels per world unit
    return np.stack([centre - half, centre + half])


def test_planes_grid_in_view_and_the_slice_kept_after_3d(make_napari_viewer, qtbot, shared_data):
    """Issue 21: the grid was drawn off-screen until Home; after 2D -> 3D -> 2D the slice jumped to the last one
    (a black canvas: napari's slider clamps its old index when the 3D plane layers leave)."""
    viewer = make_napari_viewer()
    viewer.open(shared_data / "brats" / "Brats18_2013_11_1" / "flair.nii.gz", plugin="napari-ssl")
    _, dock = viewer.window.add_plugin_dock_widget("napari-ssl", "Pretext explorer")
    dock.auto.setChecked(False)
    dock.set_pretext("planes")
    with qtbot.waitSignal(dock.preview_ready, timeout=WAIT_MS):
        dock.preview()
    grid = viewer.layers["flair · planes grid"]
    src = viewer.layers["flair"]
    lo, hi = visible_region(viewer)
    for layer in (grid, src):  # the grid beside the scan, both on the canvas
        box = np.asarray(layer.extent.world)[:, -2:]
        assert np.all(box[0] >= lo - 1e-6) and np.all(box[1] <= hi + 1e-6), (layer.name, box, lo, hi)
    axis = 0  # the 2D view slices along z
    before = viewer.dims.point[axis]
    viewer.dims.ndisplay = 3
    assert viewer.dims.range[axis][0] < src.extent.world[0, axis]  # the oblique planes stretch the range
    with qtbot.waitSignal(dock.view_ready, timeout=5000):
        viewer.dims.ndisplay = 2
    assert viewer.dims.point[axis] == before
    assert src.extent.world[0, axis] <= viewer.dims.point[axis] <= src.extent.world[1, axis]
    lo, hi = visible_region(viewer)
    box = np.asarray(viewer.layers["flair · planes grid"].extent.world)[:, -2:]
    assert np.all(box[0] >= lo - 1e-6) and np.all(box[1] <= hi + 1e-6)


def test_3d_planes_read_at_a_glance(dock, qtbot, shared_data):
    """Issue 21: eleven planes with thick lines were a tangle. Thin lines; the selected plane, its outline and the
    lines that cut it bright, the rest faint; the selected plane's name."""
    from napari_ssl._napari.explorer.planes import FAINT, FAINT_PLANE

    vol = io.read(shared_data / "brain_tumor" / "image.nrrd")
    vol = vol.with_array(
        np.ascontiguousarray(vol.array[:, ::4, ::4]),
        spacing=(vol.spacing[0], vol.spacing[1] * 4, vol.spacing[2] * 4),
        name="brain",
    )
    viewer = dock.viewer
    data, kwargs, _ = volume_to_layer_data(vol, "image")
    viewer.add_image(data, **kwargs)
    viewer.dims.ndisplay = 3
    dock.set_source("brain")
    dock.set_pretext("planes")
    dock.params["planes"].set_values({"n_stack": 8, "n_oblique": 3, "size": 32})
    preview = run_preview(dock, qtbot)
    names = list(preview.params.names)
    outlines = viewer.layers["brain · planes outlines"]
    lines = viewer.layers["brain · planes lines"]
    corners = np.concatenate([p.corners for p in preview.planes])
    scene = float(np.ptp(corners, axis=0).max())
    for focus in (0, 9):
        dock.step.setValue(focus)  # a redraw, nothing recomputed
        assert dock.last_preview is preview
        mine = np.array([focus in pair for pair in preview.segment_pairs])
        assert mine.any() and not mine.all()
        for layer, selected in ((outlines, np.arange(len(names)) == focus), (lines, mine)):
            widths = np.asarray(layer.edge_width)
            alpha = np.asarray(layer.edge_color)[:, 3]
            assert widths.max() <= 0.005 * scene  # thin, in a scene of this size
            assert widths[selected].min() > widths[~selected].max()
            np.testing.assert_allclose(alpha[selected], 1.0)
            np.testing.assert_allclose(alpha[~selected], FAINT)
        opacity = np.array([viewer.layers[f"brain · planes {name}"].opacity for name in names])
        assert opacity[focus] == 1.0 and np.allclose(np.delete(opacity, focus), FAINT_PLANE)
        assert FAINT <= 0.25 and FAINT_PLANE <= 0.3  # faint
        text = viewer.layers["brain · planes text"]
        assert [label.split("  ")[0] for label in text.features["label"]] == [names[focus]]
