"""Plane gallery: each imaging plane as a 2D image with its target heatmaps, intersection lines and slice position.

What the imaging-planes network sees (the plane) and must predict (one heatmap per other plane, and the
relative position of a stack slice), drawn with QPainter into thumbnails inside the dock: plane ``k``'s
frame has plane ``k``'s colour, and the line / heatmap where plane ``j`` cuts it has plane ``j``'s colour,
the same colours as the outlines in the 3D view.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QImage, QPainter, QPen, QPixmap
from qtpy.QtWidgets import QGridLayout, QLabel, QScrollArea, QVBoxLayout, QWidget

from napari_ssl._napari.explorer_compute import PlaneView, colour

__all__ = ["PlaneGallery", "render_plane"]

TILE = 120  # thumbnail size (pixels)
COLUMNS = 2
HEAT_ALPHA = 0.65


def _grey(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    finite = img[np.isfinite(img)]
    lo, hi = np.percentile(finite, (1, 99.5)) if finite.size else (0.0, 1.0)
    return np.clip((img - lo) / (hi - lo if hi > lo else 1.0), 0, 1)


def plane_rgb(plane: PlaneView) -> np.ndarray:
    """(H, W, 3) uint8: the plane in grey, tinted by each other plane's heatmap in that plane's colour."""
    g = _grey(plane.image)[..., None]
    rgb = np.repeat(g, 3, axis=2)
    if plane.heatmaps is not None:
        for heat, j in zip(plane.heatmaps, plane.heat_index, strict=False):
            a = (HEAT_ALPHA * np.clip(heat, 0, 1))[..., None]
            rgb = rgb * (1 - a) + a * colour(j)[None, None, :3]
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def render_plane(plane: PlaneView, index: int, size: int = TILE) -> QPixmap:
    """A thumbnail of one plane: heatmaps, intersection lines, name and slice position."""
    rgb = np.ascontiguousarray(plane_rgb(plane))
    h, w = rgb.shape[:2]
    qimage = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    scale = size / max(h, w)
    pix = QPixmap.fromImage(qimage).scaled(
        max(1, round(w * scale)),
        max(1, round(h * scale)),
        Qt.AspectRatioMode.KeepAspectRatio,
        Qt.TransformationMode.SmoothTransformation,
    )
    painter = QPainter(pix)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    for j, p0, p1 in plane.lines:
        pen = QPen(QColor.fromRgbF(*colour(j)))
        pen.setWidthF(1.5)
        painter.setPen(pen)
        # pixel (row, col) -> widget (x, y); pixel centres at +0.5
        a = QPointF((p0[1] + 0.5) * scale, (p0[0] + 0.5) * scale)
        b = QPointF((p1[1] + 0.5) * scale, (p1[0] + 0.5) * scale)
        painter.drawLine(a, b)
    frame = QPen(QColor.fromRgbF(*colour(index)))
    frame.setWidth(3)
    painter.setPen(frame)
    painter.drawRect(1, 1, pix.width() - 3, pix.height() - 3)
    painter.setPen(QColor("white"))
    text = plane.name + (f"  pos {plane.slice_position:.2f}" if plane.slice_position is not None else "")
    painter.drawText(6, 14, text)
    painter.end()
    return pix


class PlaneGallery(QWidget):
    """Scrollable grid of plane thumbnails (one :class:`QLabel` each, in ``tiles``)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._inner = QWidget()
        self._grid = QGridLayout(self._inner)
        self._grid.setSpacing(4)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self._inner)
        scroll.setMinimumHeight(2 * TILE + 24)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)
        self.tiles: list[QLabel] = []

    def clear(self) -> None:
        """Remove every thumbnail."""
        for tile in self.tiles:
            self._grid.removeWidget(tile)
            tile.deleteLater()
        self.tiles = []

    def to_image(self) -> QImage:
        """All thumbnails in one image (the grid as laid out), e.g. for a screenshot of the targets."""
        if not self.tiles:
            return QImage(1, 1, QImage.Format.Format_RGB32)
        pixmaps = [tile.pixmap() for tile in self.tiles]
        cell_w = max(p.width() for p in pixmaps) + 4
        cell_h = max(p.height() for p in pixmaps) + 4
        rows = (len(pixmaps) + COLUMNS - 1) // COLUMNS
        image = QImage(cell_w * min(COLUMNS, len(pixmaps)), cell_h * rows, QImage.Format.Format_RGB32)
        image.fill(QColor(38, 41, 48))
        painter = QPainter(image)
        for k, pix in enumerate(pixmaps):
            painter.drawPixmap((k % COLUMNS) * cell_w + 2, (k // COLUMNS) * cell_h + 2, pix)
        painter.end()
        return image

    def show_planes(self, preview: Any) -> None:
        """Replace the thumbnails by the planes of ``preview``."""
        self.clear()
        for k, plane in enumerate(preview.planes):
            tile = QLabel()
            tile.setPixmap(render_plane(plane, k))
            tile.setToolTip(
                f"{plane.name}: {plane.image.shape[0]}x{plane.image.shape[1]} px; lines with "
                + (", ".join(preview.planes[j].name for j, *_ in plane.lines) or "no other plane")
            )
            self._grid.addWidget(tile, k // COLUMNS, k % COLUMNS)
            self.tiles.append(tile)
