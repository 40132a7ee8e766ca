"""What the Fine-tune dock reads from its inputs: the classes present in a Labels layer (and the list that offers
them, with the presets of :mod:`napari_ssl.classes`), the modality layers of one case, folder pairs, the backbone a
pretrained checkpoint fixes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidget, QListWidgetItem, QPushButton, QVBoxLayout

from napari_ssl._napari.proxy import holds, kind, same_layer
from napari_ssl.classes import class_presets, named_values

__all__ = [
    "ClassPicker", "PairList", "case_layers", "channels_text", "checkpoint_backbone", "folder_cases", "folder_pairs",
    "label_values",
]


def _modality(layer: Any) -> tuple[str, str, str | None] | None:
    """``(modality, case prefix, source folder)`` of an Image layer that names a modality, else None: from its file
    name when it came from a file (``Brats18_X_flair.nii.gz`` in ``Brats18_X/``), else from its layer name."""
    from napari_ssl.io import READ_SUFFIXES, scan_suffix
    from napari_ssl.training.cases import modality_of, split_modality

    path = ((layer.metadata or {}).get("napari_ssl") or {}).get("path")
    name, folder = str(layer.name), None
    if path:
        suffix = scan_suffix(path)
        name = Path(path).name[: -len(suffix)] if suffix in READ_SUFFIXES else Path(path).name
        folder = str(Path(path).parent)
    split = split_modality(name)
    if split is not None:
        return split[1], split[0].lower(), folder
    word = modality_of(name)
    return None if word is None else (word, name.lower().replace(word, "", 1).strip("_-./ "), folder)


def _same_grid(a: Any, b: Any) -> bool:
    return (tuple(a.data.shape) == tuple(b.data.shape) and np.allclose(a.scale, b.scale)
            and np.allclose(a.translate, b.translate)
            and np.allclose(a.affine.affine_matrix, b.affine.affine_matrix))


def case_layers(picked: Any, layers: Any) -> list[Any]:
    """The channels of the case of the Image layer ``picked``: itself and the Image layers of its case's other
    modalities on its grid (same shape, scale, translate; from the same folder and with the same name before the
    modality: ``flair`` and ``t1`` of a case folder, ``X_flair`` and ``X_t1``), in the order of
    :func:`napari_ssl.training.cases.find_cases` (flair, t1, t1ce, t2); ``[picked]`` when it names no modality."""
    own = _modality(picked)
    if own is None:
        return [picked]
    found = {own[0]: picked}
    for layer in layers:
        if kind(layer) != "Image" or same_layer(layer, picked):
            continue
        other = _modality(layer)
        if other is None or other[0] in found or other[1:] != own[1:] or not _same_grid(layer, picked):
            continue
        found[other[0]] = layer
    return [found[word] for word in sorted(found)]


def channels_text(channels: Any) -> str:
    """``flair+t1+t1ce+t2``: the first channel's name, then the modality of each other channel (its name without)."""
    from napari_ssl.training.cases import modality_of

    first, *rest = channels
    return "+".join([str(first.name), *[modality_of(str(c.name)) or str(c.name) for c in rest]])


class PairList(QListWidget):
    """The training pairs added so far, ``pairs`` as (Image layers: the case's channels, Labels layer): each row shows
    the layers' current names (``flair+t1+t1ce+t2  +  seg``), and a pair goes when one of its layers leaves the viewer
    (so no removed layer's data is kept alive)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.pairs: list[tuple[tuple[Any, ...], Any]] = []

    def add(self, channels: Any, labels: Any) -> None:
        channels = tuple(channels) if isinstance(channels, (list, tuple)) else (channels,)
        self.pairs.append((channels, labels))
        self.addItem(f"{channels_text(channels)}  +  {labels.name}")

    def remove_current(self) -> None:
        row = self.currentRow()
        if row >= 0:
            self.takeItem(row)
            del self.pairs[row]

    def names(self) -> list[tuple[str, str]]:
        return [(channels_text(channels), labels.name) for channels, labels in self.pairs]

    def refresh(self, present: list[Any]) -> list[tuple[str, str]]:
        """Show renames; drop the pairs of layers not in ``present``; returns the dropped pairs' names."""
        dropped = []
        for row in reversed(range(len(self.pairs))):
            channels, labels = self.pairs[row]
            if all(holds(present, layer) for layer in (*channels, labels)):
                self.item(row).setText(f"{channels_text(channels)}  +  {labels.name}")
                continue
            del self.pairs[row]
            self.takeItem(row)
            dropped.append((channels_text(channels), labels.name))
        return dropped


def _item_text(name: str, ids: tuple[int, ...]) -> str:
    return f"{name} ({'+'.join(map(str, ids))})"


_ITEM = re.compile(r"^\s*(?P<name>.*?)\s*\((?P<ids>\s*\d+(?:\s*\+\s*\d+)*\s*)\)\s*$")


class ClassPicker(QListWidget):
    """The classes to learn: ``name (ids)`` items, tickable and renamable (double-click), each a label value or a
    merged group of values (``whole_tumor (1+2+4)``, offered at once for BraTS-like labels; :meth:`merge_ticked`
    makes one). Ticks and names survive a refresh of the same Labels layer; another layer starts from its own presets
    (a BraTS layer's unticked single labels do not untick an organ layer's labels of the same values)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setToolTip("the classes to learn: tick them; double-click to rename; merge ticked labels into one class")
        self._shown: str | None = None  # the name of the layer whose classes are offered (napari hands out proxies)

    def _items(self) -> list[QListWidgetItem]:
        return [self.item(i) for i in range(self.count())]

    def show_layer(self, layer: Any) -> None:
        """Offer the values present in ``layer`` and their presets (earlier ticks, names and groups kept)."""
        values = named_values(label_values(layer))
        same = self._shown == layer.name
        kept = {self.ids(item): (item.checkState(), self.name(item)) for item in self._items()} if same else {}
        self._shown = layer.name
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


def folder_cases(images: str | None, labels: str | None) -> Any:
    """The cases of the folder ``images`` when no label folder is given
    (:class:`~napari_ssl.training.cases.FoundCases`: BraTS-like case folders), None otherwise; a folder without usable
    cases raises ``ValueError`` with the hint of the other form."""
    from napari_ssl.training.cases import find_cases

    if not images or labels:
        return None
    try:
        return find_cases(images)
    except ValueError as exc:
        raise ValueError(f"{exc}; for a folder of scans, choose the folder of their label files too") from None
