"""Plane grid: every imaging plane as a 2D tile with its target heatmaps, intersection lines and slice position.

What the imaging-planes network sees (the plane) and must predict (one heatmap per other plane, and the
relative position of a stack slice), painted with QPainter into one RGB mosaic that the explorer shows in the
canvas in 2D (an RGB Image layer beside the scan). Plane ``k``'s frame has plane ``k``'s colour and the line /
heatmap where plane ``j`` cuts it has plane ``j``'s colour, the same colours as the outlines in the 3D view;
the selected plane's tile is framed in white. Names sit on a dark plate, readable on any tissue.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFont, QImage, QPainter, QPen, QPixmap

from napari_ssl.pretext._explore import PlaneView, colour

__all__ = ["TILE", "grid_shape", "mosaic", "plane_rgb", "render_plane"]

TILE = 256  # tile size (pixels) in the canvas grid
GAP = 8
HEAT_ALPHA = 0.65
BACKGROUND = (38, 41, 48)


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


def render_plane(plane: PlaneView, index: int, size: int = TILE, selected: bool = False) -> QPixmap:
    """One tile: the plane with heatmaps and intersection lines, its name and slice position on a plate."""
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
        pen.setWidthF(max(1.5, size / 120))
        painter.setPen(pen)
        # pixel (row, col) -> widget (x, y); pixel centres at +0.5
        a = QPointF((p0[1] + 0.5) * scale, (p0[0] + 0.5) * scale)
        b = QPointF((p1[1] + 0.5) * scale, (p1[0] + 0.5) * scale)
        painter.drawLine(a, b)
    frame = QPen(QColor("white") if selected else QColor.fromRgbF(*colour(index)))
    border = max(3, size // 40) * (2 if selected else 1)
    frame.setWidth(border)
    painter.setPen(frame)
    painter.drawRect(QRectF(border / 2, border / 2, pix.width() - border, pix.height() - border))
    text = plane.name + (f" · {plane.slice_position:.2f}" if plane.slice_position is not None else "")
    font = QFont()
    font.setPixelSize(max(10, size // 11))
    painter.setFont(font)
    metrics = painter.fontMetrics()
    box = QRectF(border + 2, border + 2, metrics.horizontalAdvance(text) + 10, metrics.height() + 4)
    painter.fillRect(box, QColor(0, 0, 0, 170))
    painter.setPen(QColor.fromRgbF(*(0.45 + 0.55 * colour(index)[:3])))
    painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
    painter.end()
    return pix


def grid_shape(n: int) -> tuple[int, int]:
    """Rows and columns of the plane grid: about square, wider than tall."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


def mosaic(planes: list[PlaneView], focus: int | None = None, tile: int = TILE) -> np.ndarray:
    """All planes as one ``(H, W, 3)`` uint8 image, row by row; ``focus`` is the selected plane's index."""
    rows, cols = grid_shape(len(planes))
    cell = tile + GAP
    image = QImage(cols * cell + GAP, rows * cell + GAP, QImage.Format.Format_RGB888)
    image.fill(QColor(*BACKGROUND))
    painter = QPainter(image)
    for k, plane in enumerate(planes):
        pix = render_plane(plane, k, tile, selected=k == focus)
        x = GAP + (k % cols) * cell + (tile - pix.width()) // 2
        y = GAP + (k // cols) * cell + (tile - pix.height()) // 2
        painter.drawPixmap(x, y, pix)
    painter.end()
    return qimage_rgb(image)


def qimage_rgb(image: Any) -> np.ndarray:
    """A copy of a ``Format_RGB888`` QImage as an ``(H, W, 3)`` uint8 array."""
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    rows = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : 3 * image.width()].reshape(image.height(), image.width(), 3).copy()
