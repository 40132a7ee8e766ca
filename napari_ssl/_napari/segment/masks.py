"""Put a finished segmentation's masks on the canvas without a long pause of the GUI thread.

Measured on the first Segment click in a viewer (2 slow cores): ``viewer.add_layer`` of a new ``Labels`` layer
held the GUI thread ~190 ms in one event-loop turn, plus a full garbage collection that happened to land
there (see :func:`warm_up`). Of those ~190 ms, ~50 ms was vispy computing its dash patterns for the first
antialiased line in the process (the editing overlays' outlines; cached afterwards), ~25 ms building the
polygon tool's and ~10 ms the brush's visuals, ~20 ms slicing and drawing the data, the rest adding the layer
itself (its visual, layer controls, selection). So:

1. :func:`warm_up` (at dock open) computes vispy's dash patterns and imports what ``Labels`` needs in a thread,
   then collects garbage on the GUI thread while the user picks a model;
2. in the worker thread, :func:`stage` hides the new layer and its two editing overlays (napari builds no
   visual for a hidden overlay until it is made visible, and does not slice a hidden layer);
3. on the GUI thread, :class:`StagedShow` adds the layer (its visual and controls; napari selects it, which
   switches the layer controls), then in the following event-loop turns makes it visible (slice, upload, draw)
   and each overlay visible (napari builds its visual then), one per turn. (An earlier version also deferred the
   selection through napari's private ``_activate_on_insert``; a plugin dock may not reach it.)

The layer ends as napari's own add leaves it (same data, colours, mode, selection, overlays and their visuals).
Measured after (bench_segment_dock, quiet machine): no turn of the first segmentation over ~55 ms. A re-run on
the same grid moves the new data into the dock's earlier layer (:func:`move_into`): no new visuals at all. (Removing a layer costs a full collection:
napari's canvas calls ``gc.collect()`` on every layer removal.)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from napari_ssl._napari.napari_private import layer_overlays

__all__ = ["EDIT_OVERLAYS", "StagedShow", "collect_if_due", "masks_layer_kwargs", "move_into", "prepare_warm_up",
           "same_grid", "stage", "start_warm_up", "warm_up"]

#: the Labels layer's editing overlays (they show only while painting or drawing a polygon)
EDIT_OVERLAYS = ("polygon", "brush_stroke")


def masks_layer_kwargs(names: dict[int, str], colors: dict[int, str]) -> dict[str, Any]:
    """Labels-layer keyword arguments: colours from the checkpoint and a ``class`` feature per label value."""
    import pandas as pd
    from napari.utils.colormaps import DirectLabelColormap

    color_dict: dict[Any, Any] = {0: "transparent", None: "transparent"}
    color_dict.update({int(k): v for k, v in colors.items()})
    values = sorted(names)
    return {
        "colormap": DirectLabelColormap(color_dict=color_dict),
        "features": pd.DataFrame({"index": values, "class": [names[v] for v in values]}),
        "opacity": 0.6,
    }


def stage(layer: Any) -> tuple[str, ...]:
    """Hide ``layer`` and its editing overlays for :class:`StagedShow` (worker thread, before it is added).

    Returns the steps left for the GUI thread, in order: ``"visible"`` (the layer itself), then the keys of
    the overlays hidden. A napari without these overlays leaves them as they are.
    """
    steps = []
    if layer.visible:
        layer.visible = False
        steps.append("visible")
    overlays = layer_overlays(layer)
    for key in EDIT_OVERLAYS:
        overlay = overlays.get(key)
        if overlay is not None and getattr(overlay, "visible", False):
            overlay.visible = False
            steps.append(key)
    return tuple(steps)


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
    """Add a layer to ``viewer`` in event-loop turns: the layer now, then each step from :func:`stage`.

    ``show(layer, steps)`` adds ``layer`` now (napari selects it) and returns it; in the later turns, one per turn,
    ``"visible"`` makes the layer visible, an overlay key makes that overlay visible; ``done`` is emitted after
    the last.
    ``pending`` counts the steps left; ``finish()`` runs them at once (a new result, or the dock closing).
    If the layer was removed meanwhile, the steps still run (napari builds no visual for a layer outside the
    viewer), so the layer is left as it would have been.
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

    def show(self, layer: Any, steps: tuple[str, ...] = ()) -> Any:
        self.finish()
        added = self.viewer.add_layer(layer)  # napari selects it in this turn (the layer controls switch)
        overlays = layer_overlays(layer)
        for key in steps:
            target = layer if key == "visible" else overlays.get(key)
            if target is not None:
                self._steps.append(lambda target=target: setattr(target, "visible", True))
        if self._steps:
            self._timer.start()
        else:
            self.done.emit()
        return added

    def place(self, new: Any, steps: tuple[str, ...] = ()) -> Any:
        """Show the masks layer ``new``, returning the layer that holds them: an earlier layer of its name that a
        Segment run made (its metadata names a model) gets the new data in place when on the same grid (no new
        visuals), or is replaced when not; otherwise ``new`` is added in steps (:meth:`show`). A layer of the same
        name the user made is never touched."""
        earlier = next((layer for layer in self.viewer.layers if layer.name == new.name), None)
        ours = earlier is not None and bool(earlier.metadata.get("napari_ssl", {}).get("model"))
        if ours and same_grid(earlier, new):
            move_into(earlier, new)
            return earlier
        if ours:
            self.viewer.layers.remove(earlier)  # our own earlier result on another grid is replaced
        return self.show(new, steps)

    def finish(self) -> None:
        """Run the steps left now (emits ``done`` if there were any). As in the staged turns, a step that raises
        still lets the others run; the first error is raised after ``done``."""
        self._timer.stop()
        if not self._steps:
            return
        errors: list[Exception] = []
        while self._steps:
            try:
                self._steps.pop(0)()
            except Exception as exc:  # re-raised below, after the other steps and done
                errors.append(exc)
        self.done.emit()
        if errors:
            raise errors[0]

    def _next(self) -> None:
        try:
            if self._steps:
                self._steps.pop(0)()
        finally:  # a step that raised still lets the others run, and done comes
            if self._steps:
                self._timer.start()
            else:
                self.done.emit()


_WARM: list[bool] = []
#: the warm-up starts this long after the dock is made (ms)
WARM_UP_DELAY_MS = 300
#: set once the warm-up has run, its collection included (benchmarks wait on it)
WARMED = threading.Event()


def prepare_warm_up() -> int:
    """The thread part of the warm-up (see :func:`warm_up`); returns the count of full collections before it."""
    import gc

    full = gc.get_stats()[-1]["collections"]
    with contextlib.suppress(Exception):  # optional: a napari or vispy without these names only loses the warm-up
        from napari.layers import Labels
        from vispy.visuals.line.dash_atlas import DashAtlas

        layer = Labels(np.zeros((2, 2, 2), np.uint8), **masks_layer_kwargs({0: "background", 1: "x"}, {1: "#f00"}))
        stage(layer)
        del layer
        DashAtlas()
    return full


def collect_if_due(full: int, collect: Callable[[], bool] = lambda: True) -> bool:
    """The GUI-thread part of the warm-up: one full garbage collection unless one ran since ``full`` was counted
    or ``collect()`` says no. On the GUI thread because a collection destroys whatever cyclic garbage exists, Qt
    objects included, and Qt objects must die on their own thread. Returns whether it collected."""
    import gc

    try:
        if gc.get_stats()[-1]["collections"] == full and collect():
            gc.collect()
            return True
        return False
    finally:
        WARMED.set()


def warm_up(collect: Callable[[], bool] = lambda: True) -> bool:
    """Once per process: what the first masks layer would pay for, done while the user picks a model.

    - a tiny masks layer: imports what ``Labels`` needs (pandas, parts of scikit-image), ~30k objects;
    - vispy's dash patterns (pure numpy, ~50 ms, cached for the process), which vispy computes for its first
      antialiased line, i.e. the first Labels layer's editing overlays;
    - then a full garbage collection, unless one ran meanwhile (these imports often set one off) or
      ``collect()`` says no (a segmentation has started). It walks every object of napari's process
      (~280k: ~120 ms on 2 slow cores, not divisible, holding the GIL from any thread) and runs when enough
      objects have survived since the last one; napari's start-up and the scan's loading leave it close
      to due, so it used to land in the first masks' add. Run here, while the user picks a model, the next
      one is far off (a segmentation leaves ~5k objects; one is due after ~70k).

    :func:`start_warm_up` runs the first two in a thread and the collection on the GUI thread; this function runs
    all three in the calling thread. Returns whether it collected (False when it already ran in this process).
    """
    if _WARM:
        return False
    _WARM.append(True)
    return collect_if_due(prepare_warm_up(), collect)


def start_warm_up(parent: QObject, collect: Callable[[], bool] = lambda: True,
                  delay_ms: int = WARM_UP_DELAY_MS) -> QTimer | None:
    """Start the warm-up ``delay_ms`` after now, once per process: its imports in a napari thread worker, then its
    collection on the GUI thread. Returns the timer (None when the warm-up already ran), which the dock stops when
    it closes.

    The delay keeps the thread from sharing the GIL with the dock's own construction and first paint (it
    doubled that turn, to ~140 ms). A dock that is no longer in a window when the timer fires (closed, removed,
    or never docked) starts none.
    """
    if _WARM:
        return None
    from napari.qt.threading import create_worker

    def fire() -> None:
        if _WARM or parent.window() is parent:  # closed, removed or never docked: not now
            return
        _WARM.append(True)
        worker = create_worker(prepare_warm_up, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda full: collect_if_due(full, collect))
        worker.start()

    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.timeout.connect(fire)
    timer.start(delay_ms)
    return timer
