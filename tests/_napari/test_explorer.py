"""Pretext explorer dock: previews for Rubik and context restoration on real (cropped) scans."""

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

WAIT_MS = 20_000


def digest(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def brain(shared_data):
    """Anisotropic brain MR (0.78 x 0.78 x 6.5 mm), downsampled in-plane by 4: (25, 64, 64)."""
    vol = io.read(shared_data / "brain_tumor" / "image.nrrd")
    sz, sy, sx = vol.spacing
    return vol.with_array(
        np.ascontiguousarray(vol.array[:, ::4, ::4]), spacing=(sz, sy * 4, sx * 4), name="brain"
    )


@pytest.fixture(scope="module")
def ct(shared_data):
    """Abdominal CT crop (30, 101, 122), 3 mm."""
    return io.read(shared_data / "ct_organs" / "ct.nii.gz").with_array(
        io.read(shared_data / "ct_organs" / "ct.nii.gz").array, name="ct"
    )


def add_volume(viewer, volume):
    data, kwargs, layer_type = volume_to_layer_data(volume, "image")
    return getattr(viewer, f"add_{layer_type}")(data, **kwargs)  # public: the viewer may be the dock's proxy


@pytest.fixture
def dock(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = open_dock(viewer, "Pretext explorer")
    widget.auto.setChecked(False)  # tests drive previews explicitly
    return widget


def run_preview(dock, qtbot):
    worker = dock.preview()
    assert worker is not None, dock.status.text()
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        pass
    return dock.last_preview


def layer_names(viewer):
    return [layer.name for layer in viewer.layers]


def test_rubik_preview_layers_geometry_and_source(dock, qtbot, brain):
    viewer = dock.viewer
    src = add_volume(viewer, brain)
    before = digest(src.data)
    dock.set_source("brain")
    dock.set_pretext("rubik")
    dock.params["rubik"].set_values({"gap": 2})
    preview = run_preview(dock, qtbot)
    assert preview is not None and preview.request.pretext == "rubik"
    base = "brain · rubik"
    for suffix in ("", " boxes", " cells", " text"):
        assert base + suffix in viewer.layers
    image = viewer.layers[base]
    np.testing.assert_allclose(image.extent.world, src.extent.world)
    np.testing.assert_allclose(image.scale, src.scale)
    np.testing.assert_allclose(image.translate, src.translate)
    # the shuffled volume is exactly the pretext applied with the same seed, the grid on the body (the
    # default foreground mask), and the voxels the shuffle leaves untouched dimmed
    task = preview.task
    mask = foreground_mask(brain.array)
    params = task.sample(brain.spatial_shape, np.random.default_rng(dock.seed.value()), brain.spacing, mask)
    assert params == preview.params
    shuffled = task.apply(brain.array, params)
    cubes = preview.labels > 0
    np.testing.assert_array_equal(image.data[cubes], shuffled[cubes])
    lo = src.contrast_limits[0]
    outside = ~cubes & (shuffled > lo + 10)
    assert outside.any() and (image.data[outside] < shuffled[outside]).all()
    # overlay geometry: each path's bounding box is the cube of overlay()["boxes"] (voxel borders)
    overlay = task.overlay(params)
    shapes = viewer.layers[base + " boxes"]
    got = np.array([[d.min(axis=0) + 0.5, d.max(axis=0) + 0.5] for d in shapes.data])
    inner = np.asarray(brain.spatial_shape) - 0.5  # clipped at the outer voxel centres
    np.testing.assert_allclose(got, np.clip(overlay["boxes"], 0.5, inner))
    z_ends = sorted(src.data_to_world(v)[0] for v in ((0, 0, 0), (brain.spatial_shape[0] - 1, 0, 0)))
    np.testing.assert_allclose(tuple(viewer.dims.range[0])[:2], z_ends)  # the slider is the scan's
    np.testing.assert_allclose(shapes.extent.world[:, 0], src.extent.world[:, 0], atol=src.scale[0])
    cells = viewer.layers[base + " cells"]
    for i, (lo, hi) in enumerate(overlay["boxes"]):
        assert (cells.data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == i + 1).all()
    text = viewer.layers[base + " text"]
    assert set(text.features["label"]) >= {f"{overlay['source'][0]}→0"} or any(
        str(lbl).startswith(f"{overlay['source'][0]}→0") for lbl in text.features["label"]
    )
    assert digest(src.data) == before
    assert viewer.layers.selection.active == src  # proxies: the same layer compares equal, never `is`


def test_rubik_parameter_change_updates_in_place_and_restore(dock, qtbot, brain):
    viewer = dock.viewer
    add_volume(viewer, brain)
    dock.set_source("brain")
    dock.set_pretext("rubik")
    dock.params["rubik"].set_values({"gap": 2})
    run_preview(dock, qtbot)
    before = {layer.name: id(layer) for layer in viewer.layers}
    dock.params["rubik"].set_values({"grid": 3})
    preview = run_preview(dock, qtbot)
    after = {layer.name: id(layer) for layer in viewer.layers}
    assert after == before  # same layers, updated in place, nothing piled up
    assert len(viewer.layers["brain · rubik boxes"].data) == 27
    assert int(viewer.layers["brain · rubik cells"].data.max()) == 27
    cubes = preview.labels > 0
    np.testing.assert_array_equal(
        viewer.layers["brain · rubik"].data[cubes], preview.task.apply(brain.array, preview.params)[cubes]
    )
    dock.restore.setChecked(True)
    restored = run_preview(dock, qtbot)
    cubes = restored.labels > 0
    np.testing.assert_array_equal(viewer.layers["brain · rubik"].data[cubes], brain.array[cubes])  # inverse
    # a new sample changes the draw, deterministically from the seed
    old = dock.last_preview.params
    dock.new_sample.click()
    assert dock.seed.value() == 1
    assert run_preview(dock, qtbot).params != old


def test_context_pairs_colours_and_steps(dock, qtbot, ct):
    viewer = dock.viewer
    src = add_volume(viewer, ct)
    before = digest(src.data)
    dock.set_source("ct")
    dock.set_pretext("context")
    dock.params["context"].set_values({"n_swaps": 5, "patch_size": 8.0})
    assert dock.step.maximum() == 5 and dock.step.value() == 5
    preview = run_preview(dock, qtbot)
    base = "ct · context"
    image = viewer.layers[base]
    np.testing.assert_allclose(image.extent.world, src.extent.world)
    overlay = preview.task.overlay(preview.params)
    np.testing.assert_array_equal(image.data, preview.task.apply(ct.array, preview.params))
    shapes = viewer.layers[base + " boxes"]
    assert len(shapes.data) == 10
    got = np.array([[d.min(axis=0) + 0.5, d.max(axis=0) + 0.5] for d in shapes.data])
    inner = np.asarray(ct.spatial_shape) - 0.5
    np.testing.assert_allclose(got, np.clip(np.asarray(overlay["boxes"]).reshape(-1, 2, 3), 0.5, inner))
    colours = np.asarray(shapes.edge_color)
    for t in range(5):  # the two patches of a swap share a colour; every swap has its own
        np.testing.assert_allclose(colours[2 * t, :3], colours[2 * t + 1, :3])
    rgb = np.round(colours[::2, :3], 3)
    assert len({tuple(c) for c in rgb}) == 5
    assert np.abs(rgb[:, None] - rgb[None]).max(axis=2)[~np.eye(5, dtype=bool)].min() > 0.15
    # the current swap (the last, at the slider's end) is opaque and wider; the earlier ones faint
    np.testing.assert_allclose(colours[8:, 3], 1.0)
    assert (colours[:8, 3] < 0.6).all()
    widths = np.asarray(shapes.edge_width)
    assert widths[8] > widths[0]
    # patches on the body (CT: HU threshold): every patch mostly inside the mask
    mask = foreground_mask(ct.array)
    for lo, hi in preview.boxes:
        assert mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].mean() >= 0.5
    text = list(viewer.layers[base + " text"].features["label"])
    assert {"1a", "1b", "5a", "5b"} <= set(text)
    # step through the swaps: after 2 swaps only the first two pairs are drawn and applied
    dock.step.setValue(2)
    preview2 = run_preview(dock, qtbot)
    import dataclasses

    partial = dataclasses.replace(preview2.params, pairs=preview2.params.pairs[:2])
    np.testing.assert_array_equal(image.data, preview2.task.apply(ct.array, partial))
    assert len(shapes.data) == 4 and int(viewer.layers[base + " cells"].data.max()) == 2
    assert viewer.layers[base] == image
    # the slider moved the view to swap 2: the slice through patch 2a, the camera on it
    lo, hi = preview2.boxes[2]
    centre = src.data_to_world((lo + hi - 1) / 2.0)
    assert abs(viewer.dims.point[0] - centre[0]) <= src.scale[0]
    np.testing.assert_allclose(viewer.camera.center[-2:], centre[1:], atol=1e-6)
    assert "2a around slice" in dock.status.text()
    # the colour of a swap does not depend on the slider
    np.testing.assert_allclose(np.asarray(shapes.edge_color)[:4, :3], colours[:4, :3])
    assert digest(src.data) == before


def test_view_switch_and_one_click_removal(dock, qtbot, brain):
    viewer = dock.viewer
    src = add_volume(viewer, brain)
    dock.set_source("brain")
    dock.set_pretext("rubik")
    dock.params["rubik"].set_values({"gap": 2})
    run_preview(dock, qtbot)
    text = viewer.layers["brain · rubik text"]
    assert len(text.data) > 8  # 2D: one text point per slice each cube crosses
    viewer.dims.ndisplay = 3
    assert viewer.layers["brain · rubik boxes"].visible and not viewer.layers["brain · rubik cells"].visible
    assert len(text.data) == 8  # 3D: one per cube centre
    viewer.dims.ndisplay = 2
    assert viewer.layers["brain · rubik cells"].visible
    dock.set_pretext("context")
    dock.params["context"].set_values({"n_swaps": 3, "patch_size": 6.0})
    run_preview(dock, qtbot)
    assert "brain · context" in viewer.layers and "brain · rubik" not in viewer.layers  # one preview per scan
    dock.remove_button.click()
    assert [layer.name for layer in viewer.layers] == ["brain"]
    assert viewer.layers[0] == src


@pytest.fixture
def warnings_seen(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr("napari_ssl._napari.explorer.dock.show_warning", seen.append)
    return seen


def test_bad_selections_notify_and_keep_the_dock_usable(dock, qtbot, brain, warnings_seen):
    viewer = dock.viewer
    assert dock.preview() is None and "no scan" in warnings_seen[-1]
    viewer.add_image(np.zeros((32, 32), np.float32), name="flat")
    viewer.add_image(np.zeros((1, 32, 32), np.float32), name="slice")
    viewer.add_labels(np.zeros((8, 32, 32), np.uint8), name="mask")
    viewer.add_image(np.zeros((32, 32, 3), np.uint8), name="photo", rgb=True)
    viewer.add_image(np.zeros((4, 6, 6), np.float32), name="tiny")
    dock.set_pretext("rubik")
    for name, words in [
        ("flat", "2D image"),
        ("slice", "2D image"),
        ("mask", "Labels layer"),
        ("photo", "RGB"),
    ]:
        dock.set_source(name)
        assert dock.preview() is None
        assert words in warnings_seen[-1] and name in warnings_seen[-1]
    dock.set_source("tiny")
    dock.set_pretext("context")  # patch 16 voxels > a (4, 6, 6) volume: the pretext's ValueError, in words
    worker = dock.preview()
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        pass
    assert "patch_size" in warnings_seen[-1]
    assert not any(META_TAG in layer.metadata for layer in viewer.layers)
    add_volume(viewer, brain)
    dock.set_source("brain")
    dock.params["context"].set_values({"n_swaps": 2, "patch_size": 4.0})
    assert run_preview(dock, qtbot) is not None and "brain · context" in viewer.layers
    # a time series previews its current frame, placed by the layer's spatial axes
    series = np.stack([np.full((8, 16, 16), t, np.float32) for t in range(3)])
    viewer.add_image(series, name="cine", scale=(1, 2, 1, 1))
    viewer.dims.set_point(0, 2)
    dock.set_source("cine")
    preview = run_preview(dock, qtbot)
    assert preview.request.volume.array.shape == (8, 16, 16) and (preview.request.volume.array == 2).all()
    assert viewer.layers["cine · context"].ndim == 3
    np.testing.assert_allclose(viewer.layers["cine · context"].scale, (2, 1, 1))


META_TAG = "napari_ssl_explorer"


def test_param_widget_is_built_from_the_spec():
    from napari_ssl._napari.params import pretext_param_widget
    from napari_ssl.pretext import PRETEXTS

    for name, cls in PRETEXTS.items():
        widget = pretext_param_widget(name)
        values = widget.values()
        assert list(values) == [spec.name for spec in cls.PARAMETERS]
        for spec in cls.PARAMETERS:
            default = spec.default[0] if isinstance(spec.default, tuple) else spec.default
            assert values[spec.name] == default
        seen: list[int] = []
        widget.changed.connect(lambda *_, seen=seen: seen.append(1))
        first = cls.PARAMETERS[0]
        if first.type is int:
            widget[first.name].value = int(first.default) + 1
        else:  # a float: half its default (inside its limits for every registered pretext)
            widget[first.name].value = first.default / 2 if first.default else 0.5
        assert seen
        assert type(widget.make_pretext()) is cls


def test_dock_opens_from_the_plugin_menu(make_napari_viewer):
    from napari_ssl._napari.explorer.dock import PretextExplorer

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ssl", "Pretext explorer")
    assert isinstance(widget, PretextExplorer)
    assert type(widget.viewer).__name__ == "PublicOnlyProxy" and widget.viewer == viewer  # public napari only


def test_parameter_changes_are_debounced_into_one_update(dock, qtbot, brain, monkeypatch):
    viewer = dock.viewer
    add_volume(viewer, brain)
    dock.set_source("brain")
    dock.set_pretext("context")
    started = []
    original = dock._start
    monkeypatch.setattr(dock, "_start", lambda request: started.append(request) or original(request))
    dock.auto.setChecked(True)
    with qtbot.waitSignal(dock.preview_ready, timeout=WAIT_MS) as blocker:
        for n in (3, 4, 5):  # three quick edits, one preview
            dock.params["context"].set_values({"n_swaps": n, "patch_size": 4.0})
    assert len(started) == 1 and started[0].values["n_swaps"] == 5
    assert len(blocker.args[0].params.pairs) == 5
    assert len(viewer.layers["brain · context boxes"].data) == 10


def test_opening_the_dock_picks_the_scan_and_previews_nothing(make_napari_viewer, brain, warnings_seen):
    viewer = make_napari_viewer()
    add_volume(viewer, brain)
    viewer.add_labels(np.zeros(brain.spatial_shape, np.uint8), name="mask")  # the active layer
    dock = open_dock(viewer, "Pretext explorer")
    assert dock.source.currentText() == "brain"
    assert not dock._timer.isActive() and dock.worker is None and not warnings_seen


def test_closed_dock_leaves_the_viewer_alone(make_napari_viewer, qtbot, brain):
    viewer = make_napari_viewer()
    dock = open_dock(viewer, "Pretext explorer")
    with qtbot.waitSignal(dock.destroyed, timeout=5000):
        dock.deleteLater()
    add_volume(viewer, brain)  # would reach a deleted widget if the dock were still connected
    viewer.dims.ndisplay = 3
    assert "brain" in viewer.layers


def test_foreground_checkbox_and_readable_labels(dock, qtbot, ct):
    """Patches on the body by default; unchecking the box gives the unguided draw of the same seed."""
    viewer = dock.viewer
    add_volume(viewer, ct)
    dock.set_source("ct")
    dock.set_pretext("context")
    dock.params["context"].set_values({"n_swaps": 6, "patch_size": 6.0})
    assert dock.foreground.isChecked()
    guided = run_preview(dock, qtbot)
    assert "on the body" in dock.status.text()
    dock.foreground.setChecked(False)
    free = run_preview(dock, qtbot)
    task = free.task
    assert free.params == task.sample(ct.spatial_shape, np.random.default_rng(0), ct.spacing)
    assert guided.params != free.params
    # labels sit on a dark plate (2D), in a colour lifted towards white
    text = viewer.layers["ct · context text"]
    assert len(text.data) and (np.asarray(text.face_color)[:, :3] == 0).all()
    assert (np.asarray(text.face_color)[:, 3] > 0.5).all()


def test_dock_scrolls_at_laptop_size(dock):
    from qtpy.QtWidgets import QScrollArea

    scroll = dock.findChild(QScrollArea)
    assert scroll is not None and scroll.widget().isAncestorOf(dock.params["planes"].native)
    assert dock.minimumSizeHint().height() < 400  # the form scrolls instead of growing a 768-px window


def test_a_renamed_layer_is_offered_under_its_new_name(dock) -> None:
    viewer = dock.viewer
    viewer.add_image(np.zeros((12, 14, 16), np.float32), name="scan")
    viewer.add_image(np.zeros((12, 14, 16), np.float32), name="other")
    dock.source.setCurrentText("scan")
    viewer.layers["scan"].name = "flair"
    names = [dock.source.itemText(i) for i in range(dock.source.count())]
    assert "flair" in names and "scan" not in names
    assert dock.source.currentText() == "flair"  # the chosen source stays chosen under its new name
