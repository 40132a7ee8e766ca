"""Screenshots of the Pretext explorer under Xvfb: every pretext in 2D and 3D on the anisotropic brain MR and
the CT, and the native cardiac views in 3D. Each screenshot must be non-blank and show overlay colours.

The README's pictures come from ``benchmarks/bench_explorer.py --screenshots docs`` (BraTS flair, CT, cardiac).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from napari_ssl import io
from napari_ssl._napari.layers import volume_to_layer_data
from napari_ssl.pretext._explore import PALETTE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin_path import open_dock

pytestmark = [pytest.mark.gui, pytest.mark.slow]

WAIT_MS = 30_000
WINDOW = (1150, 700)  # software OpenGL under Xvfb: small canvases are fast


def overlay_pixels(rgba: np.ndarray, extra: tuple = ((1.0, 1.0, 0.0),)) -> int:
    """Pixels whose colour is one of the explorer's overlay colours (the scans themselves are grey)."""
    rgb = np.asarray(rgba)[..., :3].astype(float) / 255.0
    colours = np.vstack([PALETTE[:, :3], np.asarray(extra, dtype=float)])
    saturated = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.3
    near = np.zeros(rgb.shape[:2], dtype=bool)
    for c in colours:
        near |= np.abs(rgb - c).max(axis=-1) < 0.2
    return int((near & saturated).sum())


def check(image: np.ndarray, what: str, minimum: int = 100) -> None:
    assert image.ndim == 3 and image.shape[0] > 100, what
    assert float(image[..., :3].std()) > 5.0, f"{what}: blank screenshot"
    assert overlay_pixels(image) >= minimum, f"{what}: no overlay colours"


def shoot(viewer, dock, path: Path, what: str, minimum: int = 100) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(3):
        QApplication.processEvents()
    canvas = viewer.screenshot(str(path), canvas_only=True, flash=False)
    check(canvas, what, minimum)


def load(shared_data: Path, scan: str):
    if scan == "brain":  # 0.78 x 0.78 x 6.5 mm brain MR, in-plane downsampled by 2 for speed
        vol = io.read(shared_data / "brain_tumor" / "image.nrrd")
        vol = vol.with_array(
            np.ascontiguousarray(vol.array[:, ::2, ::2]),
            spacing=(vol.spacing[0], vol.spacing[1] * 2, vol.spacing[2] * 2),
        )
        return vol.with_array(vol.array, name="brain MR")
    vol = io.read(shared_data / "ct_organs" / "ct.nii.gz")
    return vol.with_array(vol.array, name="CT")


SETTINGS = {
    "rubik": {"gap": 2},
    "context": {"n_swaps": 8, "patch_size": 24.0, "unit": "mm"},
    "planes": {"n_stack": 3, "n_oblique": 2, "size": 64},
    "genesis": {"p_shuffle": 1.0, "p_intensity": 0.0, "p_paint": 1.0, "p_inpaint": 1.0},
}


def test_screenshots_every_pretext_2d_and_3d_and_cardiac_views(
    make_napari_viewer, qtbot, shared_data, tmp_path
):
    """One viewer (creating one costs seconds under Xvfb): brain MR, then CT, then the cardiac exam."""
    from napari_ssl._napari.explorer.dock import ALL_VIEWS
    from napari_ssl._napari.reader import read_layers

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW)
    dock = open_dock(viewer, "Pretext explorer")
    dock.auto.setChecked(False)
    for scan in ("brain", "ct"):
        viewer.layers.clear()
        viewer.dims.ndisplay = 2
        vol = load(shared_data, scan)
        data, kwargs, _ = volume_to_layer_data(vol, "image")
        src = viewer.add_image(data, **kwargs)
        dock.set_source(src.name)
        # every pretext on the anisotropic brain MR; Rubik on the CT
        pretexts = SETTINGS if scan == "brain" else {"rubik": SETTINGS["rubik"]}
        for pretext, values in pretexts.items():
            shoot_pretext(viewer, dock, qtbot, src, scan, pretext, values, tmp_path)

    viewer.layers.clear()
    viewer.dims.ndisplay = 2
    for data, kwargs, layer_type in read_layers(shared_data / "cardiac_views" / "056B"):
        viewer._add_layer_from_data(data, kwargs, layer_type)
    dock.set_pretext("planes")
    dock.set_source(ALL_VIEWS)
    worker = dock.preview()
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        pass
    # oblique acquired views cannot be sliced in 2D (the viewer is in 3D): the grid they would get there
    from napari_ssl._napari.explorer.planes import plane_layer_specs

    (spec,) = plane_layer_specs(dock.last_preview, "views · planes", None, 2, 0, None)
    check(spec[2], "cardiac views grid", 100)
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    viewer.camera.angles = (-15.0, 35.0, 140.0)
    viewer.camera.zoom *= 0.8
    shoot(viewer, dock, tmp_path / "cardiac_views_3d.png", "cardiac views 3D")


def check_grid(viewer, name: str, what: str) -> None:
    """2D planes: the grid of tiles in the canvas, in the plane colours."""
    grid = viewer.layers[name]
    assert grid.rgb
    check(np.asarray(grid.data), what, 100)


def shoot_pretext(viewer, dock, qtbot, src, scan, pretext, values, tmp_path) -> None:
    dock.set_pretext(pretext)
    dock.params[pretext].set_values(values)
    worker = dock.preview()
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        pass
    preview = dock.last_preview
    assert preview is not None and preview.request.pretext == pretext
    viewer.dims.ndisplay = 2
    if len(preview.boxes):  # a slice through the middle of the first box
        lo, hi = preview.boxes[0]
        viewer.dims.set_point(0, src.data_to_world(((lo[0] + hi[0] - 1) / 2, 0, 0))[0])
    viewer.reset_view()
    if pretext == "planes":  # 2D: the planes as the network sees them, a grid beside the scan
        check_grid(viewer, f"{src.name} · planes grid", f"{scan} planes grid")
        shoot(viewer, dock, tmp_path / f"{scan}_{pretext}_2d.png", f"{scan} {pretext} 2D")
    else:
        shoot(viewer, dock, tmp_path / f"{scan}_{pretext}_2d.png", f"{scan} {pretext} 2D")
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    viewer.camera.angles = (-15.0, 35.0, 140.0)
    viewer.camera.zoom *= 0.8
    shoot(viewer, dock, tmp_path / f"{scan}_{pretext}_3d.png", f"{scan} {pretext} 3D")
    viewer.dims.ndisplay = 2
    assert [layer for layer in viewer.layers if layer.name == src.name] == [src]
