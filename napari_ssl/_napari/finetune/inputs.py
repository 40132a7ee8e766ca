"""What the Fine-tune dock reads from its inputs: the classes present in a Labels layer (and the list that offers
them), folder pairs, the backbone a pretrained checkpoint fixes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidget, QListWidgetItem, QPushButton, QVBoxLayout

from napari_ssl._napari.proxy import holds

__all__ = [
    "ClassPicker", "PairList", "checkpoint_backbone", "class_presets", "folder_classes", "folder_pairs", "label_values",
]


class PairList(QListWidget):
    """The training pairs added so far, ``pairs`` as (Image layer, Labels layer): each row shows the layers' current
    names, and a pair goes when one of its layers leaves the viewer (so no removed layer's data is kept alive)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.pairs: list[tuple[Any, Any]] = []

    def add(self, image: Any, labels: Any) -> None:
        self.pairs.append((image, labels))
        self.addItem(f"{image.name}  +  {labels.name}")

    def remove_current(self) -> None:
        row = self.currentRow()
        if row >= 0:
            self.takeItem(row)
            del self.pairs[row]

    def names(self) -> list[tuple[str, str]]:
        return [(image.name, labels.name) for image, labels in self.pairs]

    def refresh(self, present: list[Any]) -> list[tuple[str, str]]:
        """Show renames; drop the pairs of layers not in ``present``; returns the dropped pairs' names."""
        dropped = []
        for row in reversed(range(len(self.pairs))):
            image, labels = self.pairs[row]
            if all(holds(present, layer) for layer in (image, labels)):
                self.item(row).setText(f"{image.name}  +  {labels.name}")
                continue
            del self.pairs[row]
            self.takeItem(row)
            dropped.append((image.name, labels.name))
        return dropped


#: BraTS label ids -> names (1 necrotic / non-enhancing core, 2 oedema, 4 enhancing; 3 in older releases)
BRATS_NAMES = {1: "necrotic_core", 2: "edema", 3: "non_enhancing", 4: "enhancing"}


def brats_like(values: set[int]) -> bool:
    """Labels that look like BraTS's: only ids 1-4, oedema (2) among them, and a core id (1 or 4)."""
    return bool(values) and values <= set(BRATS_NAMES) and 2 in values and bool(values & {1, 4})


def named_values(values: dict[int, str]) -> dict[int, str]:
    """Label values with the names a class list shows: the layer's own names, BraTS's for BraTS-like labels that
    have none, else ``class_N`` (the CLI's name for an id alone)."""
    brats = brats_like(set(values))
    return {v: n if n != f"label {v}" else BRATS_NAMES[v] if brats else f"class_{v}" for v, n in values.items()}


def class_presets(values: dict[int, str]) -> list[tuple[str, tuple[int, ...], bool]]:
    """The classes offered for label values ``values`` (value -> name), as (name, ids, ticked).

    Each value is offered alone (ticked). For BraTS-like labels the usual merged regions come first: whole tumour
    (every tumour id) ticked, tumour core unticked, and the single labels unticked, so Start learns whole tumour.
    """
    singles = [(name, (value,)) for value, name in values.items()]
    present = set(values)
    if not brats_like(present):
        return [(name, ids, True) for name, ids in singles]
    core = tuple(v for v in (1, 3, 4) if v in present)
    groups = [("whole_tumor", tuple(sorted(present)), True)]
    if len(core) > 1:
        groups.append(("tumor_core", core, False))
    return groups + [(name, ids, False) for name, ids in singles]


def _item_text(name: str, ids: tuple[int, ...]) -> str:
    return f"{name} ({'+'.join(map(str, ids))})"


_ITEM = re.compile(r"^\s*(?P<name>.*?)\s*\((?P<ids>\s*\d+(?:\s*\+\s*\d+)*\s*)\)\s*$")


class ClassPicker(QListWidget):
    """The classes to learn: ``name (ids)`` items, tickable and renamable (double-click), each a label value or a
    merged group of values (``whole_tumor (1+2+4)``, offered at once for BraTS-like labels; :meth:`merge_ticked`
    makes one). Ticks and names survive a refresh."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setToolTip("the classes to learn: tick them; double-click to rename; merge ticked labels into one class")

    def _items(self) -> list[QListWidgetItem]:
        return [self.item(i) for i in range(self.count())]

    def show_layer(self, layer: Any) -> None:
        """Offer the values present in ``layer`` and their presets (earlier ticks, names and groups kept)."""
        values = named_values(label_values(layer))
        kept = {self.ids(item): (item.checkState(), self.name(item)) for item in self._items()}
        self.clear()
        offered = class_presets(values)
        offered_ids = {ids for _, ids, _ in offered}
        # the user's own merged groups stay while their ids are all present
        own = [(name, ids, state == Qt.CheckState.Checked) for ids, (state, name) in kept.items()
               if ids not in offered_ids and len(ids) > 1 and set(ids) <= set(values)]
        for name, ids, ticked in own + offered:
            state, name = kept.get(ids, (Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked, name))
            self._add(name, ids, state)

    def _add(self, name: str, ids: tuple[int, ...], state: Any) -> QListWidgetItem:
        item = QListWidgetItem(_item_text(name, ids))
        item.setData(Qt.ItemDataRole.UserRole, ids)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEditable)
        item.setCheckState(state)
        self.addItem(item)
        return item

    @staticmethod
    def ids(item: QListWidgetItem) -> tuple[int, ...]:
        return tuple(int(v) for v in item.data(Qt.ItemDataRole.UserRole))

    @staticmethod
    def name(item: QListWidgetItem) -> str:
        """The class name as the user left it (the text before ``(ids)``; the whole text if they removed it)."""
        text = item.text().strip()
        match = _ITEM.match(text)
        name = match.group("name") if match else text
        return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in name.strip()).strip("_")

    def with_merge_button(self) -> QVBoxLayout:
        """This list with its *Merge ticked* button under it (beside it, the list was too narrow for the names)."""
        merge = QPushButton("Merge ticked")
        merge.setToolTip("one class from the ticked labels (e.g. whole tumour = 1+2+4); double-click it to rename")
        merge.clicked.connect(self._merge_clicked)
        layout = QVBoxLayout()
        layout.setSpacing(2)
        layout.addWidget(self, 1)
        layout.addWidget(merge, 0, Qt.AlignmentFlag.AlignRight)
        return layout

    def _merge_clicked(self) -> None:
        if self.merge_ticked() is None:
            from napari.utils.notifications import show_info

            show_info("Fine-tune: tick two or more labels to merge them into one class")

    def merge_ticked(self, name: str = "merged") -> QListWidgetItem | None:
        """One class from every ticked item's ids (ticked, first in the list); the merged items are unticked.
        None when fewer than two label values are ticked."""
        ticked = [item for item in self._items() if item.checkState() == Qt.CheckState.Checked]
        ids = tuple(sorted({i for item in ticked for i in self.ids(item)}))
        if len(ids) < 2:
            return None
        for item in ticked:
            item.setCheckState(Qt.CheckState.Unchecked)
        existing = next((item for item in self._items() if self.ids(item) == ids), None)
        if existing is not None:
            existing.setCheckState(Qt.CheckState.Checked)
            return existing
        item = self._add(name, ids, Qt.CheckState.Checked)
        self.takeItem(self.row(item))
        self.insertItem(0, item)
        return item

    def chosen(self) -> tuple[str, ...]:
        """``NAME=ID+ID`` of every ticked class (``ID`` alone for an unnamed single value), for
        :func:`napari_ssl.classes.parse_classes`."""
        out = []
        for item in self._items():
            if item.checkState() != Qt.CheckState.Checked:
                continue
            ids, name = self.ids(item), self.name(item)
            if name.isdigit() or not name:
                name = "" if len(ids) == 1 else "merged"
            out.append(f"{name}={'+'.join(map(str, ids))}" if name else str(ids[0]))
        return tuple(out)


def checkpoint_backbone(path: str | None) -> str | None:
    """Backbone size recorded in the checkpoint folder ``path`` (None: no folder, or not a checkpoint)."""
    from napari_ssl import checkpoint

    if not path or not Path(path).is_dir():
        return None
    try:
        spec = checkpoint.open_checkpoint(path).backbone  # a pretraining run's: its 3D, else its 2D backbone
    except (ValueError, OSError):
        return None
    return None if spec is None else spec.size


def label_values(layer: Any) -> dict[int, str]:
    """Label values present in ``layer`` (background 0 left out) -> name (from its features or metadata)."""
    data = np.asarray(layer.data)
    if data.dtype.kind not in "biu":
        return {}
    flat = data.ravel()
    if flat.size and flat.min() >= 0 and flat.max() < 65536:
        present = np.nonzero(np.bincount(flat.astype(np.int64, copy=False)))[0]
    else:
        present = np.unique(flat)
    names: dict[int, str] = {}
    features = getattr(layer, "features", None)
    if features is not None and {"index", "class"} <= set(features.columns):
        names = {int(i): str(c) for i, c in zip(features["index"], features["class"], strict=True)}
    for key, value in ((layer.metadata.get("napari_ssl") or {}).get("classes") or {}).items():
        names.setdefault(int(key), str(value))
    return {int(v): names.get(int(v), f"label {int(v)}") for v in present if v != 0}


def folder_classes(label_file: str) -> tuple[str, ...]:
    """The classes a folder run learns when no Labels layer offers them: those ticked by default for the values of
    its first label file (:func:`class_presets`: whole tumour for BraTS-like labels, else every value)."""
    from napari_ssl import io

    present = np.unique(np.asarray(io.read(label_file).array))
    values = named_values({int(v): f"label {int(v)}" for v in present if v > 0})
    chosen = tuple(f"{name}={'+'.join(map(str, ids))}" for name, ids, ticked in class_presets(values) if ticked)
    if not chosen:
        raise ValueError(f"{label_file} holds no label: nothing to learn")
    return chosen


def folder_pairs(images: str, labels: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Scans in ``images`` paired with the label file of the same name in ``labels``."""
    from napari_ssl.io import find_scans

    found = {p.name: p for p in find_scans(labels)}
    imgs, labs = [], []
    for scan in find_scans(images):
        if scan.name in found:
            imgs.append(str(scan))
            labs.append(str(found[scan.name]))
    if not imgs:
        raise ValueError(f"no scan in {images} has a label file of the same name in {labels}")
    return tuple(imgs), tuple(labs)
