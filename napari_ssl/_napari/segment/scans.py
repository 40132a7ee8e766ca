"""The Segment dock's scan pickers: one Image-layer picker per model input, the first following the selection."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QComboBox, QFormLayout, QWidget

from napari_ssl._napari.proxy import holds, same_layer

__all__ = ["ScanPickers"]


class ScanPickers(QWidget):
    """A form of Image-layer pickers, one per model input (``boxes``), kept in step with ``viewer``'s layers.

    A changed layer list (added, removed, reordered, renamed) keeps each picker's layer while it is there, else gives
    the picker a layer no other picker holds; selecting an Image layer in the layer list makes it the first input
    (the scan the user is looking at).
    """

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.form = QFormLayout(self)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.boxes: list[QComboBox] = []
        self.set_inputs(["scan"])
        layers = viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.reordered, layers.events.renamed):
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
        """Offer the Image layers again. A picker keeps its layer (by object, so a renamed layer stays chosen); a
        picker whose layer is gone takes the first layer no other picker holds."""
        images = [layer for layer in self.viewer.layers if layer.__class__.__name__ == "Image"]
        kept = []
        for box in self.boxes:
            layer = box.currentData()
            kept.append(layer if holds(images, layer) else None)
        for i, box in enumerate(self.boxes):
            if kept[i] is None:
                free = [lay for lay in images if not holds(kept, lay)]
                kept[i] = free[0] if free else (images[i] if i < len(images) else None)
            box.blockSignals(True)
            box.clear()
            for layer in images:
                box.addItem(layer.name, layer)
            index = next((j for j, lay in enumerate(images) if same_layer(lay, kept[i])), -1)
            box.setCurrentIndex(index)
            box.blockSignals(False)

    def follow_selection(self, *_: Any) -> None:
        """The first input follows the selected Image layer (swapping with the picker that held it)."""
        active = self.viewer.layers.selection.active
        if active is None or active.__class__.__name__ != "Image" or not self.boxes:
            return
        first = self.boxes[0]
        previous = first.currentText()
        first.setCurrentText(active.name)
        for box in self.boxes[1:]:  # the picker that held it takes the first one's old layer: inputs stay distinct
            if box.currentText() == active.name and previous != active.name:
                box.setCurrentText(previous)

    def chosen(self) -> list[str]:
        """The layer name chosen for each input."""
        return [box.currentText() for box in self.boxes]
