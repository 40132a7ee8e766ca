"""The Segment dock's scan pickers: one Image-layer picker per model input, filled by matching layer names to the
inputs' names and modalities (``BraTS_001_t1ce`` for ``t1ce``), the first following the selection otherwise."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from qtpy.QtWidgets import QComboBox, QFormLayout, QWidget

from napari_ssl._napari.proxy import holds, same_layer
from napari_ssl.training.cases import same_modality

__all__ = ["ScanPickers", "match_inputs"]


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^0-9a-z]+", str(text).lower()) if t]


def _score(layer: str, name: str, modality: str | None) -> int:
    """How well a layer's name fits an input: 3 a whole word of it (``flair`` in ``case_flair``), 2 its end
    (``t1ce`` in ``case_T1CE``) or another name of its modality (``t2f`` for ``flair``: BraTS 2023), 1 the input's
    modality word (``ct`` in ``abdomen_ct``), 0 nothing."""
    words, key = _tokens(layer), "".join(_tokens(name))
    if not key:
        return 0
    if key in words:
        return 3
    if "".join(words).endswith(key) or any(w in words for w in same_modality(key)[1:]):
        return 2
    mod = (modality or "").lower()
    return 1 if mod and (mod in words or (mod == "mr" and "mri" in words)) else 0


def match_inputs(inputs: Sequence[str], modalities: Sequence[str | None], layers: Sequence[str]) -> list[str | None]:
    """The layer each input takes by name (best fits first, every layer used once); ``None`` where none fits."""
    pairs = sorted(((-_score(lay, name, mod), i, j) for i, (name, mod) in enumerate(zip(inputs, modalities,
                                                                                       strict=True))
                    for j, lay in enumerate(layers)), key=lambda p: p[0])
    out: list[str | None] = [None] * len(inputs)
    used: set[int] = set()
    for score, i, j in pairs:
        if score < 0 and out[i] is None and j not in used:
            out[i] = layers[j]
            used.add(j)
    return out


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
        self.inputs: tuple[str, ...] = ()
        self.modalities: tuple[str | None, ...] = ()
        self.set_inputs(["scan"])
        layers = viewer.layers
        for event in (layers.events.removed, layers.events.reordered, layers.events.renamed):
            event.connect(self.refresh)
        layers.events.inserted.connect(self._on_inserted)
        layers.selection.events.active.connect(self.follow_selection)

    def set_inputs(self, names: Sequence[str], modalities: Sequence[str | None] | None = None) -> None:
        """One picker per input name (kept when the count is the same: only the labels change); each takes the layer
        whose name fits its input (:func:`match_inputs`), else the first follows the selection."""
        self.inputs = tuple(names)
        self.modalities = tuple(modalities) if modalities is not None else (None,) * len(names)
        if len(names) == len(self.boxes):
            for box, name in zip(self.boxes, names, strict=True):
                label = self.form.labelForField(box)
                if label is not None:
                    label.setText(name)
            if not self.match():
                self.follow_selection()
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
        if not self.match():
            self.follow_selection()

    def _on_inserted(self, *_: Any) -> None:
        self.refresh()
        self.match()

    def match(self) -> bool:
        """Give the inputs of a several-input model the layers whose names fit them (a picker whose layer already fits
        keeps it); True when any input was matched by name."""
        if len(self.boxes) < 2:
            return False
        images = [layer.name for layer in self.viewer.layers if layer.__class__.__name__ == "Image"]
        found = match_inputs(self.inputs, self.modalities, images)
        for box, name in zip(self.boxes, found, strict=True):
            if name is not None:
                box.setCurrentText(name)
        taken = {name for name in found if name is not None}
        for box, name in zip(self.boxes, found, strict=True):  # the others keep distinct layers
            if name is None and box.currentText() in taken:
                free = [lay for lay in images if lay not in taken]
                box.setCurrentText(free[0] if free else "")
                taken.add(box.currentText())
        return any(name is not None for name in found)

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
