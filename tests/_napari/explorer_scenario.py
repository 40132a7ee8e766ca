"""A user's session with the Pretext explorer, run as its own process by test_explorer_crash.py (a segfault there
kills only this process): ``python explorer_scenario.py SCAN PRETEXT MODE``.

The viewer is shown and the event loop runs, as in napari: the scan is opened through the plugin reader, the dock
through the Plugins menu's path, one preview is drawn, then

- ``button``: 2D -> 3D -> 2D, "Remove previews", a few paints, the viewer closed;
- ``by_hand``: the same, the preview layers removed one by one with ``viewer.layers.remove``;
- ``exit``: nothing more, the script just ends with the viewer open (no ``viewer.close()``).

Prints ``done`` when every step ran; the exit status is the test's verdict (-11: a segfault).
"""

from __future__ import annotations

import faulthandler
import sys

import napari
from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QApplication, QOpenGLWidget

faulthandler.enable()
scan, pretext, mode = sys.argv[1:4]
viewer = napari.Viewer(show=True)
viewer.open(scan, plugin="napari-ssl")
source = viewer.layers[0].name
_, dock = viewer.window.add_plugin_dock_widget("napari-ssl", "Pretext explorer")
dock.auto.setChecked(False)
dock.set_pretext(pretext)
loop = QEventLoop()
dock.preview_ready.connect(lambda *_: loop.quit())
QTimer.singleShot(0, dock.preview)
loop.exec()
print("previewed", [layer.name for layer in viewer.layers], flush=True)
if mode == "exit":
    sys.exit(0)  # the viewer is left open: Python and Qt tear it down


def paint() -> None:
    """Paint the canvas now, as the event loop does after every change."""
    for canvas in dock.window().findChildren(QOpenGLWidget):
        canvas.repaint()


def remove() -> None:
    if mode == "button":
        dock.remove_button.click()
        return
    for layer in [layer for layer in viewer.layers if layer.name != source]:
        viewer.layers.remove(layer)
        paint()


steps = [
    lambda: setattr(viewer.dims, "ndisplay", 3),
    paint,
    lambda: setattr(viewer.dims, "ndisplay", 2),
    paint,
    remove,
    paint,
    paint,
    paint,
]


def run() -> None:
    if not steps:
        print("done", [layer.name for layer in viewer.layers], flush=True)
        viewer.close()
        QApplication.instance().quit()
        return
    steps.pop(0)()
    paint()
    QTimer.singleShot(200, run)


QTimer.singleShot(200, run)
napari.run()
