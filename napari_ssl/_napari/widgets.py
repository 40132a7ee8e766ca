"""Small pieces the docks share: pretext labels and colours, backbone sizes, device choices, a folder edit,
a scroll area, a progress bar and a text line that repaint cheaply. Each defined once here (the docks never
import one another)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtGui import QPainter, QPalette
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QWidget,
)

from napari_ssl.models.sizes import SIZES  # pure Python: no torch

__all__ = [
    "BACKBONES",
    "PathEdit",
    "ProgressBar",
    "TextLine",
    "decimal_spin",
    "device_choices",
    "fill_devices",
    "metric_words",
    "pretext_colors",
    "pretext_labels",
    "scrolled",
    "spin",
    "tab_with_siblings",
    "tab_with_siblings_later",
    "training_threads",
]

#: colour of the total-loss curve
LOSS_COLOR = "#e15759"


def pretext_labels() -> dict[str, str]:
    """Pretext key -> label shown in the docks, for every pretext registered now
    (:mod:`napari_ssl.pretext.registry`)."""
    from napari_ssl.pretext import registry

    return registry.labels()


def pretext_colors() -> dict[str, str]:
    """One fixed curve colour per pretext (the same in every run, after Resume too), plus ``"loss"``."""
    from napari_ssl.pretext import registry

    return {**{s.name: s.colour for s in registry.specs()}, "loss": LOSS_COLOR}


def __getattr__(name: str) -> Any:
    # PRETEXTS / PRETEXT_COLORS: the registry's labels and colours as registered now
    if name == "PRETEXTS":
        return pretext_labels()
    if name == "PRETEXT_COLORS":
        return pretext_colors()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: backbone sizes, smallest first (the model registry's own list)
BACKBONES = tuple(SIZES)


def training_threads() -> int:
    """CPU threads a run started from the GUI uses (one core is left to the viewer)."""
    from napari_ssl.device import default_num_threads

    return default_num_threads(leave_free=1)


def device_choices(threads: int | None = None) -> list[tuple[str, str]]:
    """The device list known now: ``auto`` and the CPU at once, every GPU once the worker process has looked
    (:func:`fill_devices` updates the boxes then). The viewer's process never imports torch for it."""
    threads = training_threads() if threads is None else threads
    if _DEVICES.choices is not None:
        return [(label, name) for label, name in _DEVICES.choices]
    cpu = f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    return [("auto (looking for GPUs…)", "auto"), (cpu, "cpu")]


class _DeviceLookup(QObject):
    """Asks the worker process once for the devices (:func:`~napari_ssl._napari.jobs.devices_job`) and fills
    every registered combo box when the answer comes. Starting it also warms the worker up for the first run."""

    def __init__(self) -> None:
        super().__init__()
        self.choices: tuple[tuple[str, str], ...] | None = None
        self.boxes: list[QComboBox] = []
        self.relay: Any = None

    def register(self, box: QComboBox, threads: int) -> None:
        if self.choices is not None:
            return
        self.boxes.append(box)
        if self.relay is None:
            from napari_ssl._napari.jobs import DEVICES
            from napari_ssl._napari.relay import Relay

            self.relay = Relay(DEVICES, int(threads), label="Device lookup", stop_timeout=5.0)
            self.relay.worker.yielded.connect(self._found)
            self.relay.worker.finished.connect(self._done)
            self.relay.start()

    def _found(self, event: Any) -> None:
        if not hasattr(event, "choices"):  # Stopped: the viewer closed before the answer came
            return
        self.choices = tuple(event.choices)
        for box in self.boxes:
            try:
                current = box.currentData()
                box.blockSignals(True)
                box.clear()
                for label, name in self.choices:
                    box.addItem(label, name)
                index = box.findData(current)
                box.setCurrentIndex(max(index, 0))
                box.blockSignals(False)
            except RuntimeError:  # the dock was closed meanwhile
                continue
        self.boxes.clear()

    def _done(self) -> None:
        self.relay = None
        self.boxes.clear()


_DEVICES = _DeviceLookup()


def fill_devices(box: QComboBox, threads: int | None = None) -> None:
    """Fill ``box`` with :func:`device_choices` (item data: the device name) and complete it when the worker
    process has listed the GPUs."""
    threads = training_threads() if threads is None else threads
    for label, name in device_choices(threads):
        box.addItem(label, name)
    box.setToolTip("where the run goes (a separate process, its memory freed after each run)")
    _DEVICES.register(box, threads)


def metric_words(name: str, value: float) -> str:
    """A held-out metric in words, e.g. ``"Context restoration: restores 3.1 dB better than the corrupted
    input"`` for ``context/psnr_gain``; an unknown metric keeps its name."""
    pretext, _, metric = name.rpartition("/")
    who = pretext_labels().get(pretext, pretext or "model")
    words = {
        "psnr_gain": lambda v: (
            f"restores {abs(v):.1f} dB {'better' if v >= 0 else 'worse'} than the corrupted input"
        ),
        "psnr": lambda v: f"restored images at {v:.1f} dB PSNR",
        "psnr_input": lambda v: f"corrupted inputs at {v:.1f} dB PSNR",
        "perm_top1": lambda v: f"finds the cube order {100 * v:.0f}% of the time",
        "rot_acc": lambda v: f"tells rotated cubes {100 * v:.0f}% of the time",
        "angle_error_deg": lambda v: f"intersection lines off by {v:.1f} degrees on average",
        "position_mae": lambda v: f"slice positions off by {v:.2f} on average",
        "loss": lambda v: f"held-out loss {v:.3g}",
    }
    text = words[metric](value) if metric in words else f"{metric.replace('_', ' ')} {value:.3g}"
    return f"{who}: {text}"


class PathEdit(QWidget):
    """A folder path: a line edit and a browse button. ``path`` is ``None`` when empty."""

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.line = QLineEdit()
        self.line.setPlaceholderText(placeholder)
        self.line.setClearButtonEnabled(True)
        self.line.setMinimumWidth(60)
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip("Choose a folder")
        browse.clicked.connect(self._browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.line, 1)
        layout.addWidget(browse)

    def _browse(self) -> None:  # pragma: no cover - modal dialog
        folder = QFileDialog.getExistingDirectory(
            self, "Choose a folder", self.line.text() or str(Path.home())
        )
        if folder:
            self.line.setText(folder)

    def text(self) -> str:
        return self.line.text()

    def setText(self, value: str) -> None:
        self.line.setText(value)

    @property
    def path(self) -> str | None:
        text = self.line.text().strip()
        return str(Path(text).expanduser()) if text else None

    @path.setter
    def path(self, value: str | Path | None) -> None:
        self.line.setText("" if value is None else str(value))


def _spin_box(box: Any, lo: float, hi: float, value: float, step: float, special: str, tip: str) -> Any:
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setValue(value)
    if special:  # the text shown at ``lo``
        box.setSpecialValueText(special)
    box.setToolTip(tip)
    return box


def spin(lo: int, hi: int, value: int, step: int = 1, special: str = "", tip: str = "") -> QSpinBox:
    """A spin box of whole numbers (``special``: the text shown at ``lo``)."""
    return _spin_box(QSpinBox(), lo, hi, value, step, special, tip)  # type: ignore[no-any-return]


def decimal_spin(lo: float, hi: float, value: float, step: float, decimals: int = 2, special: str = "",
                 tip: str = "") -> QDoubleSpinBox:
    """:func:`spin` for decimals."""
    box = QDoubleSpinBox()
    box.setDecimals(decimals)  # before the value, which it rounds
    return _spin_box(box, lo, hi, value, step, special, tip)  # type: ignore[no-any-return]


class _FormScroll(QScrollArea):
    """A vertical scroll area whose minimum width follows its form's (so the dock never cuts a field)."""

    def setWidget(self, widget: QWidget) -> None:
        super().setWidget(widget)
        widget.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the form's minimum width may have changed: tell the dock's layout
        return False

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        inner = self.widget()
        if inner is None:
            return hint
        width = inner.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width() + 2
        return QSize(max(hint.width(), width), hint.height())


def scrolled(inner: QWidget, min_height: int = 120) -> QScrollArea:
    """``inner`` in a vertical scroll area that never scrolls sideways: combo boxes are made compact (their
    long items elide) and the area is never narrower than the form, so no field is cut at the side."""
    for box in inner.findChildren(QComboBox):
        box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        box.setMinimumContentsLength(min(box.minimumContentsLength() or 10, 10))
    area = _FormScroll()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setMinimumHeight(min_height)
    area.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
    area.setWidget(inner)
    return area


def tab_with_siblings(widget: QWidget) -> bool:
    """Tab ``widget``'s dock with the other napari-ssl docks already in the window (True when it did).

    napari stacks docks added from the Plugins menu one below the other, which grows the window past a
    laptop screen; tabbed, each dock gets the full height. Called once, when the dock is first shown.
    """
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    dock = widget.parentWidget()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    window = dock.parentWidget() if dock is not None else None
    while window is not None and not isinstance(window, QMainWindow):
        window = window.parentWidget()
    if dock is None or window is None or dock.isFloating():
        return False
    area = window.dockWidgetArea(dock)
    for other in window.findChildren(QDockWidget):
        inner = other.widget()
        if (
            other is dock
            or other.isFloating()
            or not other.isVisible()
            or window.dockWidgetArea(other) != area
            or inner is None
            or not type(inner).__module__.startswith("napari_ssl._napari")
        ):
            continue
        if dock not in window.tabifiedDockWidgets(other):
            window.tabifyDockWidget(other, dock)
        dock.show()
        dock.raise_()
        return True
    return False


def tab_with_siblings_later(widget: QWidget) -> None:
    """:func:`tab_with_siblings` at the next event-loop pass (a timer owned by ``widget``: never fires after
    the widget is gone)."""
    timer = QTimer(widget)
    timer.setSingleShot(True)
    timer.timeout.connect(lambda: tab_with_siblings(widget))
    timer.timeout.connect(timer.deleteLater)
    timer.start(0)


# ---------------------------------------------------------------- widgets that change while a job runs
# napari's window holds the OpenGL canvas (a QOpenGLWidget), so Qt shows *every* repaint of *any* widget in it
# by compositing the whole window through OpenGL: about 1 ms on a GPU, 20-40 ms at 1500x950 in software
# (Mesa llvmpipe, e.g. under Xvfb or a remote desktop). A dock that repaints while a job runs must therefore
# make each of its refreshes one composite: no synchronous repaint, no layout request that climbs to the main
# window. ``benchmarks/bench_gui.py`` measures the result.


class ProgressBar(QProgressBar):
    """A ``QProgressBar`` whose :meth:`setValue` repaints at the next event-loop pass, with the other widgets
    changed in the same slot (one window composite).

    ``QProgressBar.setValue`` repaints at once (a synchronous ``repaint()``) whenever the bar or its text
    changes: a composite of its own, followed by a second one for the texts changed next to it.
    """

    def setValue(self, value: int) -> None:
        if int(value) == self.value():
            return
        enabled = self.updatesEnabled()
        self.setUpdatesEnabled(False)  # QProgressBar's repaint() does nothing now ...
        try:
            super().setValue(int(value))
        finally:
            self.setUpdatesEnabled(enabled)  # ... and this asks for one update()


class TextLine(QWidget):
    """One line of text, elided on the right (the whole text in the tooltip), whose changes repaint itself only.

    ``QLabel.setText`` asks for a new layout on every change; the request climbs through the dock to napari's
    main window, which lays its dock areas out again and repaints their separators: a second window composite
    for each change. This line has a fixed height and a constant size hint, so a change is a repaint of its
    own rectangle.
    """

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._text = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(self._line_height())
        self.setText(text)

    def _line_height(self) -> int:
        return self.fontMetrics().height() + 4

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:
        text = str(text)
        if text == self._text:
            return
        self._text = text
        self.setToolTip(text)
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(100, self._line_height())

    def minimumSizeHint(self) -> QSize:
        return QSize(0, self._line_height())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.FontChange:  # a theme's font size: keep one line tall enough
            self.setFixedHeight(self._line_height())

    def paintEvent(self, _event: Any) -> None:
        painter = QPainter(self)
        painter.setPen(self.palette().color(QPalette.ColorRole.WindowText))
        area = self.rect().adjusted(1, 0, -1, 0)
        shown = self.fontMetrics().elidedText(self._text, Qt.TextElideMode.ElideRight, area.width())
        painter.drawText(area, int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), shown)
        painter.end()
