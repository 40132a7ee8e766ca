"""Plane gallery: each imaging plane as a 2D image with its target heatmaps, intersection lines and slice position."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QGridLayout, QLabel, QWidget

__all__ = ["PlaneGallery"]


class PlaneGallery(QWidget):
    """A grid of plane thumbnails drawn with QPainter (no extra viewer, no matplotlib)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._grid = QGridLayout(self)
        self.tiles: list[QLabel] = []

    def clear(self) -> None:
        for tile in self.tiles:
            self._grid.removeWidget(tile)
            tile.deleteLater()
        self.tiles = []

    def show_planes(self, preview: Any) -> None:
        self.clear()
