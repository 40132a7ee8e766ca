"""Remove layers with the canvas's OpenGL context current (issue 21: the explorer crashed napari).

napari 0.9.2 deletes the OpenGL objects of a removed layer at once: its ``_clean_and_update_scenegraph`` ends in
vispy's ``context.finish()``, which runs the queued ``glDeleteProgram`` / ``glDeleteBuffers`` right away, in
whatever OpenGL context happens to be current. Between two paints that is Qt's compositing context (Qt 6), not the
canvas's: the program and vertex buffers the canvas drew last are deleted from the other context of the share
group while the canvas's context still has them bound (its current program, its vertex attribute bindings). The
second paint after that dereferences the freed program and segfaults in ``glDrawArrays`` (Mesa llvmpipe and
softpipe alike: a NULL read at 0x135). A layer with text drawn last (the explorer's labels, any Points or Shapes
layer with text on top) is enough; a screenshot between the steps hides the bug, as it makes the canvas current.

:func:`make_canvas_current`, called whenever a layer is about to be removed, makes the deletions happen where the
objects are bound. The canvas is found through Qt's public widget tree (the dock's
main window holds one ``QOpenGLWidget``), never through napari's private attributes.
"""

from __future__ import annotations

from qtpy.QtWidgets import QApplication, QOpenGLWidget, QWidget

__all__ = ["canvas_widget", "make_canvas_current", "viewer_canvas"]


def _root(widget: QWidget) -> QWidget:
    """The top of ``widget``'s parent chain (a floating dock's parent is still the main window)."""
    while widget.parentWidget() is not None:
        widget = widget.parentWidget()
    return widget


def canvas_widget(widget: QWidget) -> QOpenGLWidget | None:
    """The viewer canvas (a ``QOpenGLWidget``) of the window ``widget`` is docked in; for a widget in no window, the
    application's canvas when there is exactly one."""
    own = _root(widget).findChildren(QOpenGLWidget)
    if own:
        return own[0]
    every = _canvases()
    return every[0] if len(every) == 1 else None


def _canvases() -> list[QOpenGLWidget]:
    """Every viewer canvas the application shows."""
    return [canvas for top in QApplication.topLevelWidgets() for canvas in top.findChildren(QOpenGLWidget)]


def viewer_canvas() -> QOpenGLWidget | None:
    """The viewer canvas when the application shows one, else the active window's (None when that is ambiguous)."""
    every = _canvases()
    if len(every) == 1:
        return every[0]
    active = QApplication.activeWindow()
    own = active.findChildren(QOpenGLWidget) if active is not None else []
    return own[0] if len(own) == 1 else None


def make_canvas_current(widget: QWidget) -> bool:
    """Make the canvas's OpenGL context current (nothing to do before the canvas has one); True if it did.

    Connect it to ``viewer.layers.events.removing`` (napari emits it before it removes a layer, whoever removes it).
    """
    canvas = canvas_widget(widget)
    if canvas is None or not canvas.isValid():
        return False
    canvas.makeCurrent()
    return True
