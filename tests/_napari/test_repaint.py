"""A dock's refresh while a job runs is one repaint of napari's window.

napari's window holds the OpenGL canvas, so Qt shows every repaint of any widget in it by compositing the
whole window through OpenGL (20-40 ms in software, under Xvfb). These tests count, with an event filter, what
one refresh of the Pretrain dock costs: paints of the main window (one per composite), synchronous repaints
of the progress bar, layout requests that climb to the main window.

Waits are counted in turns of the event loop (ticks of a 10 ms timer until nothing more is painted), never in
milliseconds: a loaded machine stretches them but cannot end one before a late paint is served.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QApplication, QLabel, QProgressBar, QVBoxLayout, QWidget

from napari_ssl._napari.widgets import ProgressBar, TextLine
from napari_ssl.events import Progress, Started

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin_path import open_dock

pytestmark = [pytest.mark.gui]


class EventCounter(QObject):
    """Counts ``kinds`` of events per receiving object (application-wide event filter)."""

    def __init__(self, *kinds: QEvent.Type) -> None:
        super().__init__()
        self.kinds = set(kinds)
        self.seen: list[tuple[QObject, QEvent.Type]] = []

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() in self.kinds:
            self.seen.append((obj, event.type()))
        return False

    def count(self, obj: QObject, kind: QEvent.Type) -> int:
        return sum(1 for o, k in self.seen if o is obj and k == kind)

    def __enter__(self) -> EventCounter:
        QApplication.instance().installEventFilter(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        QApplication.instance().removeEventFilter(self)


WAIT_MS = 60_000  # only a bound on a hang: the waits below end on what they wait for


def quiet(qtbot, count: Callable[[], int], ticks: int = 10) -> None:
    """Run the event loop until ``count()`` (events seen so far) has not changed for ``ticks`` ticks in a row."""
    state = {"last": count(), "still": 0}

    def tick() -> None:
        now = count()
        state["still"] = state["still"] + 1 if now == state["last"] else 0
        state["last"] = now

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(10)
    try:
        qtbot.waitUntil(lambda: state["still"] >= ticks, timeout=WAIT_MS)
    finally:
        timer.stop()


def settle(qtbot, widget: QWidget, ticks: int = 10) -> None:
    """Until ``widget`` has not been painted for ``ticks`` turns of the event loop (shown, laid out, exposed)."""
    with EventCounter(QEvent.Type.Paint) as counter:
        quiet(qtbot, lambda: counter.count(widget, QEvent.Type.Paint), ticks)


@pytest.mark.parametrize(("cls", "synchronous"), [(QProgressBar, 1), (ProgressBar, 0)])
def test_progress_bar_value_repaints_later_not_at_once(qtbot, cls, synchronous) -> None:
    bar = cls()
    bar.setRange(0, 100)
    qtbot.addWidget(bar)
    bar.show()
    qtbot.waitExposed(bar)
    settle(qtbot, bar)
    with EventCounter(QEvent.Type.Paint) as counter:
        bar.setValue(40)
        at_once = counter.count(bar, QEvent.Type.Paint)  # QProgressBar: a synchronous repaint()
        qtbot.waitUntil(lambda: counter.count(bar, QEvent.Type.Paint) >= 1, timeout=WAIT_MS)
        quiet(qtbot, lambda: counter.count(bar, QEvent.Type.Paint))
    assert at_once == synchronous
    assert bar.value() == 40 and counter.count(bar, QEvent.Type.Paint) == 1
    with EventCounter(QEvent.Type.Paint) as counter:
        bar.setValue(40)  # unchanged: nothing to paint
        quiet(qtbot, lambda: counter.count(bar, QEvent.Type.Paint))
    assert counter.count(bar, QEvent.Type.Paint) == 0


@pytest.mark.parametrize(("cls", "requests"), [(QLabel, 1), (TextLine, 0)])
def test_text_line_change_asks_for_no_layout(qtbot, cls, requests) -> None:
    parent = QWidget()
    qtbot.addWidget(parent)
    line = cls()
    QVBoxLayout(parent).addWidget(line)
    parent.resize(300, 60)
    parent.show()
    qtbot.waitExposed(parent)
    settle(qtbot, parent)
    with EventCounter(QEvent.Type.LayoutRequest, QEvent.Type.Paint) as counter:
        line.setText("loss 0.123 (rubik 0.1 · context 0.02) · lr 0.001 and a long tail " * 3)
        qtbot.waitUntil(lambda: counter.count(line, QEvent.Type.Paint) >= 1, timeout=WAIT_MS)
        quiet(qtbot, lambda: len(counter.seen))
    assert min(1, counter.count(parent, QEvent.Type.LayoutRequest)) == requests
    assert line.text().startswith("loss 0.123")


def test_a_pretrain_tick_is_one_repaint_of_the_window(make_napari_viewer, qtbot) -> None:
    """Bar, losses line and loss plot change in one tick: the main window is composited once, and no layout
    request reaches it (the old dock: 2-3 composites a tick, one of them for the dock-area separators)."""
    viewer = make_napari_viewer(show=True)
    dock = open_dock(viewer, "Pretrain")
    window = viewer.window._qt_window
    qtbot.waitExposed(window)
    total = 100
    dock.plot.set_xrange(0, total)
    dock._on_event(Started(total=total, start_step=0, device="cpu", n_train=1, n_val=1, n_parameters=10))
    dock.scroll.ensureWidgetVisible(dock.plot)

    def tick(step: int) -> None:
        losses = {"rubik": 1.0 / step, "context": 0.5 / step, "rubik/perm": 1.0}
        dock._on_event(Progress(step=step, total=total, loss=2.0 / step, losses=losses, lr=1e-3, samples_per_s=4))
        dock._text_timer.stop()
        dock._show_progress()  # what the timer runs every UPDATE_MS

    tick(1)  # the first points set the plot's limits (a full draw)
    settle(qtbot, window, ticks=30)  # the new window shown, laid out and tabbed: 30 turns without a composite
    for step in (2, 3, 4):
        with EventCounter(QEvent.Type.Paint, QEvent.Type.LayoutRequest) as counter:
            tick(step)
            qtbot.waitUntil(lambda: counter.count(dock.losses_label, QEvent.Type.Paint) >= 1, timeout=WAIT_MS)
            quiet(qtbot, lambda: len(counter.seen))  # until nothing more is painted or laid out
        assert counter.count(dock.progress, QEvent.Type.Paint) == 1
        assert counter.count(window, QEvent.Type.Paint) <= 1, "more than one window composite for one tick"
        assert counter.count(window, QEvent.Type.LayoutRequest) == 0
        assert dock.losses_label.text().startswith(f"loss {2.0 / step:.4g}")
        assert dock.progress.value() == step and f"step {step}/{total}" in dock.progress.format()
    assert dock.plot.blits >= 3
