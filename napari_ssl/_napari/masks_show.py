"""Put a finished segmentation's masks on the canvas without a long pause of the GUI thread.

Measured on the first Segment click in a viewer (2 slow cores): ``viewer.add_layer`` of a new ``Labels`` layer
ran ~190 ms on the GUI thread, ~110 ms of it building the vispy visuals of the layer's two *editing*
overlays (the polygon tool's outline, whose line visual computes a dash atlas, and the brush stroke), which
show nothing until the user picks those tools. So the layer is shown in steps, one event-loop turn each:

1. in the worker thread, :func:`hide_edit_overlays` sets those overlays' ``visible`` to False (napari only
   builds the visual of a visible overlay; for a hidden one it waits on its ``visible`` event);
2. on the GUI thread, :class:`StagedShow` adds the layer (its image visual only) and, in the following
   turns, makes each overlay visible again: napari builds its visual then. The final layer is the one
   napari would have made (same data, colours, overlays, all visible).

A re-run on the same grid moves the new data into the dock's earlier layer (:func:`move_into`): no new
visuals at all. :func:`warm_up` does once per process, in a thread at dock open, what the first result
would otherwise pay for while the user waits (importing pandas and scikit-image for ``Labels``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

__all__ = [
    "EDIT_OVERLAYS",
    "StagedShow",
    "hide_edit_overlays",
    "move_into",
    "same_grid",
    "start_warm_up",
    "warm_up",
]

#: the Labels layer's overlays that only show while painting or drawing polygons
EDIT_OVERLAYS = ("polygon", "brush_stroke")


def hide_edit_overlays(layer: Any) -> tuple[str, ...]:
    """Hide ``layer``'s editing overlays (worker thread, layer not in a viewer yet); returns the keys hidden.

    napari builds no visual for a hidden overlay until it is made visible (:class:`StagedShow` does that,
    one overlay per event-loop turn). A napari without these overlays leaves the layer as it is.
    """
    overlays = getattr(layer, "_overlays", None)
    hidden = []
    for key in EDIT_OVERLAYS:
        overlay = overlays.get(key) if overlays is not None else None
        if overlay is not None and getattr(overlay, "visible", False):
            overlay.visible = False
            hidden.append(key)
    return tuple(hidden)


def same_grid(a: Any, b: Any) -> bool:
    """Whether two layers have the same shape and world placement (so data can move from one to the other)."""
    return (
        a.data.shape == b.data.shape
        and np.allclose(a.scale, b.scale)
        and np.allclose(a.translate, b.translate)
        and np.allclose(a.affine.affine_matrix, b.affine.affine_matrix)
    )


def _same_colors(a: dict, b: dict) -> bool:
    """Whether two label colour dictionaries (values are RGBA arrays) are equal."""
    return a.keys() == b.keys() and all(np.allclose(a[k], b[k]) for k in a)


def move_into(earlier: Any, new: Any) -> None:
    """Give the layer ``earlier`` (in the viewer) the colours, features, metadata and data of ``new``."""
    if not _same_colors(earlier.colormap.color_dict, new.colormap.color_dict):
        earlier.colormap = new.colormap
    earlier.features = new.features
    earlier.metadata = new.metadata
    earlier.data = new.data


class StagedShow(QObject):
    """Add a layer to ``viewer`` in event-loop turns: the layer first, then each hidden overlay.

    ``show(layer, hidden)`` adds ``layer`` now and returns it; the overlays named in ``hidden`` (from
    :func:`hide_edit_overlays`) become visible one per later turn; ``done`` is emitted after the last.
    ``pending`` counts the steps left; ``finish()`` runs them at once (a new result, or the dock closing).
    If the layer was removed meanwhile, its overlays are still made visible again (napari builds no visual
    for a layer outside the viewer).
    """

    done = Signal()

    def __init__(self, viewer: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self._steps: list[Callable[[], None]] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._next)

    @property
    def pending(self) -> int:
        return len(self._steps)

    def show(self, layer: Any, hidden: tuple[str, ...] = ()) -> Any:
        self.finish()
        added = self.viewer.add_layer(layer)
        overlays = getattr(layer, "_overlays", {})
        for key in hidden:
            if key in overlays:
                self._steps.append(lambda overlay=overlays[key]: setattr(overlay, "visible", True))
        if self._steps:
            self._timer.start()
        else:
            self.done.emit()
        return added

    def finish(self) -> None:
        """Run the steps left now (emits ``done`` if there were any)."""
        self._timer.stop()
        if self._steps:
            while self._steps:
                self._steps.pop(0)()
            self.done.emit()

    def _next(self) -> None:
        if self._steps:
            self._steps.pop(0)()
        if self._steps:
            self._timer.start()
        else:
            self.done.emit()


_WARM: list[bool] = []
#: set once :func:`warm_up` has run (benchmarks wait on it)
WARMED = threading.Event()


def warm_up(collect: Callable[[], bool] = lambda: True) -> None:
    """Once per process (in a thread): build a tiny masks layer, then collect garbage if ``collect()``.

    Building the layer imports what ``Labels`` needs (pandas, parts of scikit-image): ~30k objects that the
    first result would otherwise allocate. Python's full garbage collection walks every object of napari's
    process (~280k, ~120 ms on 2 slow cores, not divisible, and it holds the GIL from any thread); it runs
    when enough objects have survived since the last one, and napari's start-up and the scan's loading
    leave it close to due, so it used to land in the first masks' add. Collecting here, while the user
    picks a model, leaves the first runs far from the next one. ``collect`` says whether it is still a
    good time (not when a segmentation has started meanwhile).
    """
    if _WARM:
        return
    _WARM.append(True)
    import gc

    from napari.layers import Labels

    from napari_ssl._napari.segment_info import masks_layer_kwargs

    try:
        layer = Labels(np.zeros((2, 2, 2), np.uint8), **masks_layer_kwargs({0: "background", 1: "x"}, {1: "#f00"}))
        hide_edit_overlays(layer)
        del layer
        if collect():
            gc.collect()
    finally:
        WARMED.set()


def start_warm_up(collect: Callable[[], bool] = lambda: True) -> Any:
    """Run :func:`warm_up` in a napari thread worker (once per process); returns the worker or None."""
    if _WARM:
        return None
    from napari.qt.threading import create_worker

    return create_worker(warm_up, collect, _start_thread=True, _ignore_errors=True)
