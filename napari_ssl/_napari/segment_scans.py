"""The Segment dock's scan pickers: one Image-layer picker per model input, the first following the selection."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QComboBox, QFormLayout, QWidget

__all__ = ["ScanPickers"]


class ScanPickers(QWidget):
    """A form of Image-layer pickers, one per model input (``boxes``), kept in step with ``viewer``'s layers.

    A new layer list keeps each picker's choice when that layer is still there (else the i-th Image layer);
    selecting an Image layer in the layer list makes it the first input (the scan the user is looking at).
    """

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.form = QFormLayout(self)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.boxes: list[QComboBox] = []
        self.set_inputs(["scan"])
        layers = viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.reordered):
            event.connect(self.refresh)
        layers.selection.events.active.connect(self.follow_selection)

    def set_inputs(self, names: list[str] | tuple[str, ...]) -> None:
        """One picker per input name (kept when the count is the same: only the labels change)."""
        if len(names) == len(self.boxes):
            for box, name in zip(self.boxes, names, strict=True):
                label = self.form.labelForField(box)
                if label is not None:
                    label.setText(name)
            return
        while self.form.rowCount():
            self.form.removeRow(0)
        self.boxes = []
        for name in names:
            box = QComboBox()
            box.setToolTip(f"Image layer for the model's input {name!r}")
            self.boxes.append(box)
            self.form.addRow(name, box)
        self.refresh()
        self.follow_selection()

    def refresh(self, *_: Any) -> None:
        names = [layer.name for layer in self.viewer.layers if layer.__class__.__name__ == "Image"]
        for i, box in enumerate(self.boxes):
            current = box.currentText()
            box.blockSignals(True)
            box.clear()
            box.addItems(names)
            if current in names:
                box.setCurrentText(current)
            else:
                box.setCurrentIndex(i if len(names) > i else -1)
            box.blockSignals(False)

    def follow_selection(self, *_: Any) -> None:
        """The first input follows the selected Image layer."""
        active = self.viewer.layers.selection.active
        if active is not None and active.__class__.__name__ == "Image" and self.boxes:
            self.boxes[0].setCurrentText(active.name)

    def chosen(self) -> list[str]:
        """The layer name chosen for each input."""
        return [box.currentText() for box in self.boxes]
