"""What the Fine-tune dock reads from its inputs: the classes present in a Labels layer (and the list that offers
them), folder pairs, the backbone a pretrained checkpoint fixes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidget, QListWidgetItem

from napari_ssl._napari.proxy import holds

__all__ = ["ClassPicker", "PairList", "checkpoint_backbone", "folder_pairs", "label_values"]


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


class ClassPicker(QListWidget):
    """The label values of a Labels layer, each a tickable item ``name (value)``; ticks survive a refresh."""

    def show_layer(self, layer: Any) -> None:
        """Offer the values present in ``layer`` (new ones ticked, earlier ticks kept)."""
        ticked = {self.item(i).data(Qt.ItemDataRole.UserRole): self.item(i).checkState() for i in range(self.count())}
        self.clear()
        for value, label in label_values(layer).items():
            item = QListWidgetItem(f"{label} ({value})" if not label.startswith("label ") else label)
            item.setData(Qt.ItemDataRole.UserRole, value)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(ticked.get(value, Qt.CheckState.Checked))
            self.addItem(item)

    def chosen(self) -> tuple[str, ...]:
        """``NAME=ID`` of every ticked class (``ID`` alone when it has no name)."""
        out = []
        for i in range(self.count()):
            item = self.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                value = int(item.data(Qt.ItemDataRole.UserRole))
                text = item.text()
                name = text.rsplit(" (", 1)[0] if text.endswith(f"({value})") else ""
                safe = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in name)
                out.append(f"{safe}={value}" if safe else str(value))
        return tuple(out)


def checkpoint_backbone(path: str | None) -> str | None:
    """Backbone size recorded in the checkpoint folder ``path`` (None: no folder, or not a checkpoint)."""
    from napari_ssl import checkpoint

    if not path or not Path(path).is_dir():
        return None
    try:
        meta = checkpoint.read_meta(path)
    except (ValueError, OSError):
        return None
    return (meta.get("model") or {}).get("backbone") or (meta.get("backbone") or {}).get("size")


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
