"""Every dock fits a 1366x768 window: docks tabbed, no form widget clipped (each lies inside the dock's visible
area, or inside a vertical scroll area without being cut sideways), the window not grown past the screen."""

from __future__ import annotations

import pytest
from qtpy.QtCore import QPoint, QRect
from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QScrollArea,
    QWidget,
)

pytestmark = [pytest.mark.gui]

SIZE = (1366, 768)
DOCKS = ("Pretrain", "Fine-tune", "Segment")
FORM = (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QListWidget, QProgressBar)


def clipped(dock: QWidget) -> list[str]:
    """Visible form widgets cut by the dock's edges (or, inside a scroll area, by its sides)."""
    bad = []
    for w in dock.findChildren(QWidget):
        if not isinstance(w, FORM) or not w.isVisibleTo(dock) or w.width() == 0:
            continue
        parent, scroll = w.parentWidget(), None
        while parent is not None and parent is not dock:
            if isinstance(parent, QScrollArea):
                scroll = parent
                break
            parent = parent.parentWidget()
        frame = scroll.viewport() if scroll is not None else dock
        r = QRect(w.mapTo(frame, QPoint(0, 0)), w.size())
        area = frame.rect()
        inside = (r.left() >= area.left() and r.right() <= area.right()) if scroll is not None else area.contains(r)
        if not inside:
            label = w.text() if hasattr(w, "text") and callable(w.text) else ""
            bad.append(f"{type(w).__name__} {label!r} at {r.getRect()} outside {area.getRect()}")
    return bad


def test_docks_fit_a_laptop_window(make_napari_viewer) -> None:
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*SIZE)
    added = [viewer.window.add_plugin_dock_widget("napari-ssl", name) for name in DOCKS]
    for dock_widget, _ in added[1:]:
        window.tabifyDockWidget(added[0][0], dock_widget)
    for dock_widget, widget in added:
        dock_widget.show()
        dock_widget.raise_()
        for _ in range(3):
            QApplication.processEvents()
        assert window.height() <= SIZE[1] and window.width() <= SIZE[0], (widget, window.size())
        assert not clipped(widget), (type(widget).__name__, clipped(widget))


def test_docks_opened_from_the_plugins_menu_are_tabbed(make_napari_viewer, qtbot) -> None:
    """napari stacks docks one below the other (the window grew to 1,432-1,980 px): ours join as tabs."""
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*SIZE)
    added = []
    for name in DOCKS:
        added.append(viewer.window.add_plugin_dock_widget("napari-ssl", name)[0])
        qtbot.waitUntil(lambda: len(window.tabifiedDockWidgets(added[0])) == len(added) - 1, timeout=5000)
    for _ in range(3):
        QApplication.processEvents()
    assert set(window.tabifiedDockWidgets(added[0])) == set(added[1:])
    assert window.height() <= SIZE[1]
