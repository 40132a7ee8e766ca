"""The Pretext explorer's controls and their compact, scrolling layout (no behaviour: see ``explorer.py``)."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_ssl._napari.params import pretext_param_widget
from napari_ssl._napari.widgets import pretext_labels

__all__ = ["ExplorerControls"]


class ExplorerControls(QWidget):
    """The dock's widgets: scan, pretext, parameters, seed, foreground, restore, swap / plane slider, buttons,
    status; laid out in a scroll area so that the dock fits a 1366x768 screen beside other docks."""

    def _build_controls(self) -> None:
        self.source = QComboBox()
        self.source.setToolTip("The scan to preview on; 'All views' uses every acquired plane layer")
        self.pretext = QComboBox()
        self.params = {}
        for key, label in pretext_labels().items():
            try:
                self.params[key] = pretext_param_widget(key)
            except (ImportError, KeyError, ValueError):  # a pretext this install does not provide
                continue
            self.pretext.addItem(label, key)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.new_sample = QPushButton("New sample")
        self.restore = QCheckBox("restore (show the inverse)")
        self.foreground = QCheckBox("on the body (foreground mask)")
        self.foreground.setChecked(True)
        self.foreground.setToolTip(
            "Place swapped patches and Rubik cubes on the body (Otsu / nonzero / HU threshold), not in the air"
        )
        self.step = QSlider(Qt.Orientation.Horizontal)
        self.step.setRange(0, 0)  # context: the current swap (all swaps at the maximum); planes: the plane
        self.step_name = QLabel("swap")
        self.step_label = QLabel("")
        self.step_label.setMinimumWidth(48)
        self.auto = QCheckBox("update on every change")
        self.auto.setChecked(True)
        self.preview_button = QPushButton("Preview")
        self.remove_button = QPushButton("Remove previews")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("scan", self.source)
        form.addRow("pretext", self.pretext)
        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed)
        seed_row.addWidget(self.new_sample)
        form.addRow("seed", seed_row)
        inner = QWidget()
        layout = QVBoxLayout(inner)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        layout.addLayout(form)
        for w in self.params.values():
            w.native.layout().setContentsMargins(0, 0, 0, 0)
            layout.addWidget(w.native)
        layout.addWidget(self.foreground)
        layout.addWidget(self.restore)
        step_row = QHBoxLayout()
        step_row.setContentsMargins(0, 0, 0, 0)
        step_row.addWidget(self.step_name)
        step_row.addWidget(self.step)
        step_row.addWidget(self.step_label)
        self.step_box = QWidget()
        self.step_box.setLayout(step_row)
        layout.addWidget(self.step_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.preview_button)
        buttons.addWidget(self.remove_button)
        layout.addWidget(self.auto)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addStretch(1)
        # a laptop screen (1366x768) shows the dock beside other docks: scroll rather than grow the window
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setMinimumHeight(160)
