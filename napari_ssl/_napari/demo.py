"""The demo viewer: the sample phantom and every napari-ssl dock, optionally saved as a screenshot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import napari

PLUGIN = "napari-ssl"


def plugin_widget_names() -> list[str]:
    """Display names of the docks this plugin contributes, in manifest order."""
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    return [w.display_name for w in (manifest.contributions.widgets or [])]


def make_demo_viewer(*, show: bool = True, ndisplay: int = 2, docks: bool = True) -> napari.Viewer:
    """A viewer with the phantom (image + labels) and, when ``docks``, the plugin's docks."""
    import napari

    viewer = napari.Viewer(title="napari-ssl demo", show=show, ndisplay=ndisplay)
    layers = viewer.open_sample(PLUGIN, "phantom")
    _go_to_lesion(viewer, layers[-1])
    if docks:
        added = [viewer.window.add_plugin_dock_widget(PLUGIN, name)[0] for name in plugin_widget_names()]
        # one tab per dock keeps the window at screen size; the first (the explorer) is in front
        qt_window = added[0].window() if added else None  # the main window holding the docks (Qt's own API)
        for dock in added[1:]:
            qt_window.tabifyDockWidget(added[0], dock)
        if added:
            added[0].show()
            added[0].raise_()
    viewer.layers.selection.active = viewer.layers[0]
    if ndisplay == 3:
        viewer.camera.angles = (-15.0, 35.0, 140.0)
    return viewer


def _go_to_lesion(viewer: napari.Viewer, labels: napari.layers.Labels) -> None:
    """Show the axial slice through the middle of the lesion (the label with the highest id)."""
    import numpy as np

    data = np.asarray(labels.data)
    zs = np.nonzero((data == data.max()).any(axis=(1, 2)))[0]
    if zs.size:
        world = labels.data_to_world((float(np.median(zs)), 0.0, 0.0))
        viewer.dims.set_point(0, world[0])


def run_demo(screenshot: Path | None = None, *, ndisplay: int = 2, size: tuple[int, int] = (1400, 900)) -> int:
    """Open the demo viewer; with ``screenshot``, save the whole window to that PNG and exit."""
    import napari

    viewer = make_demo_viewer(show=True, ndisplay=ndisplay)
    if screenshot is None:
        napari.run()
        return 0
    from qtpy.QtWidgets import QApplication

    viewer.window.resize(*size)
    for _ in range(5):
        QApplication.processEvents()
    viewer.screenshot(str(screenshot), canvas_only=False, flash=False)
    viewer.close()
    return 0
