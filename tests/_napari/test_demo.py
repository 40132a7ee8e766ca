"""The demo viewer and the sample data contribution, rendered under Xvfb."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_sample_data_opens_phantom(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-ssl", "phantom")
    assert [layer._type_string for layer in layers] == ["image", "labels"]
    image, labels = layers
    np.testing.assert_allclose(image.scale, labels.scale)
    assert image.scale[0] > image.scale[1]
    assert set(np.unique(labels.data)) >= {0, 7}


def _on_screen(viewer, layer, array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``array`` (on ``layer``'s grid) on the displayed slice as the canvas shows ``layer``: the value under each
    screenshot pixel (nearest voxel; -1 off the grid), from the camera's centre and zoom (canvas pixels per world
    unit) and the layer's scale and translate."""
    z = int(np.rint(layer.world_to_data(viewer.dims.point)[0]))
    rows, cols = np.indices(shape, dtype=float)
    cy, cx = viewer.camera.center[-2:]
    y = cy + (rows + 0.5 - shape[0] / 2) / viewer.camera.zoom
    x = cx + (cols + 0.5 - shape[1] / 2) / viewer.camera.zoom
    i = np.round((y - layer.translate[-2]) / layer.scale[-2]).astype(int)
    j = np.round((x - layer.translate[-1]) / layer.scale[-1]).astype(int)
    inside = (i >= 0) & (i < array.shape[-2]) & (j >= 0) & (j < array.shape[-1])
    out = np.full(shape, -1, dtype=int)
    out[inside] = array[z][i[inside], j[inside]]
    return out


def test_demo_shows_the_lesion_where_it_is_and_every_dock(qtbot, tmp_path):
    """The demo's canvas shows the phantom's grey head with the lesion drawn in its colour on the slice through it,
    over the image's lesion voxels and nowhere else; every dock of the plugin is in the window."""
    from scipy import ndimage

    from napari_ssl._napari.demo import make_demo_viewer, plugin_widget_names
    from napari_ssl.phantom import PHANTOM_CLASSES

    viewer = make_demo_viewer(show=True)
    try:
        shot = viewer.screenshot(str(tmp_path / "demo.png"), canvas_only=True, flash=False)
        docks = list(viewer.window.dock_widgets)
        lesion_id = max(PHANTOM_CLASSES)
        assert PHANTOM_CLASSES[lesion_id][0] == "lesion"
        image, labels = viewer.layers[0], viewer.layers[-1]
        assert image.data.shape == labels.data.shape  # the phantom's labels are on the image's grid
        # where the lesion is in the image (its voxels placed as the image layer places them)
        expected = _on_screen(viewer, image, np.asarray(labels.data), shot.shape[:2]) == lesion_id
    finally:
        viewer.close()
    for name in plugin_widget_names():
        assert any(d.startswith(name) for d in docks), (name, docks)
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    rgb = shot[..., :3].astype(int)
    grey = (np.abs(rgb[..., 0] - rgb[..., 1]) < 8) & (rgb[..., 0] > 60)
    assert grey.sum() > 0.1 * grey.size  # the head's grey tissue, not a flat canvas
    # the lesion's colour (0.95, 0.2, 0.15) over the bright lesion: red well above green and blue, which no other
    # class shows (the scalp's skin tone is the closest: red 20-30 above green)
    lesion_like = (rgb[..., 0] - rgb[..., 1] > 40) & (rgb[..., 0] - rgb[..., 2] > 40)
    assert expected.sum() > 0.005 * expected.size, "the slice shown does not go through the lesion"
    core = ndimage.binary_erosion(expected, iterations=2)  # voxel edges may fall on either side of a pixel
    near = ndimage.binary_dilation(expected, iterations=2)
    assert lesion_like[core].mean() > 0.95, lesion_like[core].mean()  # the lesion is drawn in its colour ...
    assert lesion_like[~near].sum() < 0.02 * expected.sum(), lesion_like[~near].sum()  # ... and nowhere else
    assert 0.8 < lesion_like.sum() / expected.sum() < 1.2


def test_demo_command_writes_screenshot(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "demo.png"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_ssl.cli", "demo", "--screenshot", str(out)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert pixels.shape[0] > 400 and pixels.std() > 20
