"""The Pretext explorer dock: see exactly what a pretext does to the user's own scan, in 2D and 3D.

Pick an Image layer (or, for imaging planes, all the acquired views at once), a pretext, its parameters
and a seed; every change schedules a preview (debounced), computed in a napari ``thread_worker`` by
:func:`~napari_ssl._napari.explorer.preview.compute_preview` and drawn by
:mod:`~napari_ssl._napari.explorer.overlays` / :mod:`~napari_ssl._napari.explorer.planes` as layers named
``<scan> · <pretext> ...`` placed like the source. The source layer is never modified.
"""

from __future__ import annotations

from typing import Any

import napari
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QWidget

from napari_ssl._napari.explorer.controls import ExplorerControls
from napari_ssl._napari.explorer.overlays import (
    SEP,
    box_layer_specs,
    explorer_layers,
    recycle,
    remove_previews,
    upsert,
)
from napari_ssl._napari.explorer.preview import compute_preview
from napari_ssl._napari.explorer.sources import (
    SourceError,
    displayed_extent,
    go_to,
    sliced_axis,
    source_names,
    source_request,
)
from napari_ssl._napari.explorer.view import frame, restore_slice, show_boxes
from napari_ssl._napari.gl_context import make_canvas_current
from napari_ssl._napari.widgets import pretext_labels
from napari_ssl.pretext import registry
from napari_ssl.pretext._explore import Preview, PreviewRequest

__all__ = ["ALL_VIEWS", "PretextExplorer", "SourceError", "make_explorer"]

#: the source entry that stands for every acquired view (planes and stacks) in the viewer
ALL_VIEWS = "All views (native multi-view)"
DEBOUNCE_MS = 250


class PretextExplorer(ExplorerControls):
    """Dock widget: controls, debounced thread-worker previews, preview layers (planes: a grid in 2D).

    Attributes
    ----------
    worker : napari.qt.threading.FunctionWorker or None
        The worker of the latest preview (connect to ``finished`` in tests).
    preview_ready : Signal(object)
        Emitted on the GUI thread with the :class:`Preview` once its layers are drawn.
    view_ready : Signal()
        Emitted after a return to 2D once the slice and the view are settled (after napari's own update).
    last_preview : Preview or None
    """

    preview_ready = Signal(object)
    view_ready = Signal()

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        viewer = napari_viewer  # from the Plugins menu, a PublicOnlyProxy: public napari only
        self.viewer = viewer
        self.worker: Any = None
        self.last_preview: Preview | None = None
        self._pending: PreviewRequest | None = None
        self._latest: PreviewRequest | None = None
        self._running = False
        self._point_2d: tuple[float, ...] | None = None  # the 2D slice left for 3D

        self._build_controls()
        self._goto = True  # move the view to the current swap on the next context preview

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.preview)

        self.pretext.currentIndexChanged.connect(self._on_pretext)
        for w in self.params.values():
            w.changed.connect(self._on_param)
        self.seed.valueChanged.connect(self._schedule)
        self.new_sample.clicked.connect(lambda: self.seed.setValue((self.seed.value() + 1) % (2**31 - 1)))
        self.restore.toggled.connect(self._schedule)
        self.foreground.toggled.connect(self._schedule)
        self.step.valueChanged.connect(self._on_step)
        self.source.currentIndexChanged.connect(self._on_source)
        self.preview_button.clicked.connect(self.preview)
        self.remove_button.clicked.connect(self.remove_previews)
        links = [
            (viewer.layers.events.inserted, self._refresh_sources),
            (viewer.layers.events.removed, self._refresh_sources),
            (viewer.layers.events.renamed, self._refresh_sources),
            (viewer.dims.events.ndisplay, self._on_view_change),
            (viewer.dims.events.order, self._on_view_change),
            (viewer.layers.events.removing, self._before_removal),  # see gl_context
        ]
        for emitter, callback in links:
            emitter.connect(callback)
        # a closed dock must not keep answering viewer events
        self.destroyed.connect(lambda *_: [emitter.disconnect(cb) for emitter, cb in links])
        self._refresh_sources()
        self._on_pretext(schedule=False)  # opening the dock previews nothing until the user acts
        from napari_ssl._napari.explorer.learned import attach_learned

        self.learned = attach_learned(self)  # a pretraining checkpoint's answer on every preview

    # ------------------------------------------------------------------------------------ controls
    @property
    def pretext_name(self) -> str:
        return str(self.pretext.currentData())

    @staticmethod
    def _shows(name: str | None) -> registry.ExplorerSpec:
        """How the explorer shows pretext ``name`` (its registry record's ``explorer``)."""
        return registry.get(name).explorer if name and name in registry.names() else registry.ExplorerSpec()

    @property
    def _planes(self) -> bool:
        """The current pretext draws imaging planes."""
        return self._shows(self.pretext_name).planes

    def set_pretext(self, name: str) -> None:
        """Select a pretext by its registry key (``"rubik"``, ``"genesis"``, ...)."""
        index = self.pretext.findData(name)
        if index < 0:
            raise ValueError(f"unknown pretext {name!r}; available: {list(self.params)}")
        self.pretext.setCurrentIndex(index)

    def set_source(self, name: str) -> None:
        """Select the source by layer name (or :data:`ALL_VIEWS`)."""
        index = self.source.findText(name)
        if index < 0:
            raise ValueError(f"no layer called {name!r} in the source list")
        self.source.setCurrentIndex(index)

    def _on_pretext(self, *_: Any, schedule: bool = True) -> None:
        name = self.pretext_name
        for key, w in self.params.items():
            w.visible = key == name
        shows = self._shows(name)
        self.restore.setVisible(shows.restore)
        self.foreground.setVisible(self.source.currentText() != ALL_VIEWS)
        self.step_box.setVisible(shows.step is not None)
        self.step_name.setText(shows.step or "swap")
        self._goto = True
        self.step.blockSignals(True)  # a new pretext starts at all swaps (context) or the first plane
        self.step.setValue(self.step.maximum() if shows.step == "swap" else 0)
        self.step.blockSignals(False)
        self._sync_step_range()
        self._refresh_sources()
        if schedule:
            self._schedule()

    def _sync_step_range(self) -> None:
        """Swaps: 0 .. n_swaps (the maximum shows all swaps); planes: one position per plane."""
        shows = self._shows(self.pretext_name)
        if shows.step == "plane":
            n = len(self.last_preview.planes) if self._planes_shown() else 0
            self.step.blockSignals(True)
            self.step.setRange(0, max(0, n - 1))
            self.step.blockSignals(False)
            self._step_text()
            return
        values = self.params[self.pretext_name].values() if shows.step_param else {}
        n = int(values.get(shows.step_param or "", 0))
        at_end = self.step.value() >= self.step.maximum()
        self.step.blockSignals(True)
        self.step.setRange(0, n)
        if at_end:
            self.step.setValue(n)
        self.step.blockSignals(False)
        self._step_text()

    def _planes_shown(self) -> bool:
        preview = self.last_preview
        return preview is not None and self._shows(preview.request.pretext).planes

    def _step_text(self) -> None:
        value = self.step.value()
        if self._planes:
            shown = self._planes_shown() and value < len(self.last_preview.planes)
            self.step_label.setText(self.last_preview.planes[value].name if shown else "")
        else:
            self.step_label.setText(f"{value} / {self.step.maximum()}")

    def _on_source(self, *_: Any) -> None:
        self.foreground.setVisible(self.source.currentText() != ALL_VIEWS)  # acquired views are not placed
        self._goto = True
        self._schedule()

    def _on_param(self, *_: Any) -> None:
        if self._shows(self.pretext_name).step == "swap":
            self._sync_step_range()
        self._schedule()

    def _on_step(self, value: int) -> None:
        self._step_text()
        if self._planes:  # a new selected plane: redraw, nothing to compute
            if self._planes_shown():
                self._draw(self.last_preview)
            return
        self._goto = True
        self._schedule()

    def _refresh_sources(self, event: Any = None) -> None:
        names, default = source_names(self.viewer, self._planes, ALL_VIEWS)
        if names == [self.source.itemText(i) for i in range(self.source.count())]:
            return
        current = self.source.currentText()
        self.source.blockSignals(True)
        self.source.clear()
        self.source.addItems(names)
        pick = current if current in names else default
        index = getattr(event, "index", None) if getattr(event, "type", None) == "renamed" else None
        if current not in names and isinstance(index, int) and 0 <= index < len(self.viewer.layers):
            pick = self.viewer.layers[index].name  # the chosen source was renamed: keep it
        if pick in names:
            self.source.setCurrentIndex(names.index(pick))
        self.source.blockSignals(False)

    def _schedule(self, *_: Any) -> None:
        if self.auto.isChecked():
            self._timer.start()

    # ------------------------------------------------------------------------------------ requests
    def build_request(self) -> PreviewRequest:
        """The request for the current controls; :class:`SourceError` for a bad selection."""
        name = self.source.currentText()
        common = {
            "pretext": self.pretext_name,
            "values": self.params[self.pretext_name].values(),
            "seed": int(self.seed.value()),
            "restore": self.restore.isChecked(),
            "step": int(self.step.value()) if self.step.value() < self.step.maximum() else None,
            "foreground": self.foreground.isChecked(),
        }
        return source_request(self.viewer, name if name != ALL_VIEWS else None, self._planes, common)

    def preview(self) -> Any:
        """Compute and draw the preview (in a thread worker); returns the worker, or None on a bad selection.

        The worker starts on the next turn of the Qt event loop, so ``qtbot.waitSignal(worker.finished)``
        entered right after this call cannot miss its signal.
        """
        self._timer.stop()
        try:
            request = self.build_request()
        except SourceError as exc:
            self._notify(str(exc))
            return None
        self._latest = request
        if self._running:
            self._pending = request
            return self.worker
        return self._start(request)

    def _start(self, request: PreviewRequest) -> Any:
        worker = thread_worker(compute_preview, start_thread=False, ignore_errors=True)(request)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._running = True
        self.status.setText(f"computing {pretext_labels().get(request.pretext, request.pretext)} ...")
        # start on the next event-loop turn: the caller can still connect to the returned worker's signals
        QTimer.singleShot(0, worker.start)
        return worker

    def _on_finished(self) -> None:
        self._running = False
        if self._pending is not None:
            request, self._pending = self._pending, None
            self._start(request)

    def _on_errored(self, exc: BaseException) -> None:
        if isinstance(exc, ValueError):  # the pretext's own words: parameter, value and limit
            self._notify(str(exc))
        else:
            self._notify(f"{type(exc).__name__}: {exc}", error=True)

    def _notify(self, message: str, error: bool = False) -> None:
        self.status.setText(message)
        (show_error if error else show_warning)(f"Pretext explorer: {message}")

    # ------------------------------------------------------------------------------------ drawing
    @staticmethod
    def _base_name(request: PreviewRequest) -> tuple[str, str]:
        return request.source, f"{request.source}{SEP}{request.pretext}"

    def _on_returned(self, preview: Preview) -> None:
        if preview.request is not self._latest or self._pending is not None:
            return  # stale: a newer request is on its way
        if not preview.world and preview.request.source not in self.viewer.layers:
            self._notify(f"'{preview.request.source}' was removed before its preview was ready")
            return
        self.last_preview = preview
        grid = f"{self._base_name(preview.request)[1]} grid"
        new_grid = grid not in self.viewer.layers
        if self._shows(preview.request.pretext).planes:
            self._sync_step_range()
        self._draw(preview)
        if new_grid and grid in self.viewer.layers:  # drawn beside the scan, off the view: show it
            frame(self.viewer)
        if preview.focus is not None and self._goto:
            self._goto = False
            go_to(self.viewer, self.viewer.layers[preview.request.source], preview.focus)
        self.status.setText(preview.summary)
        self.preview_ready.emit(preview)

    def _draw(self, preview: Preview) -> None:
        source, base = self._base_name(preview.request)
        active = self.viewer.layers.selection.active
        tag = {"source": source, "pretext": preview.request.pretext}
        if self._shows(preview.request.pretext).planes:
            from napari_ssl._napari.explorer.planes import plane_layer_specs

            source_layer = None if preview.world else self.viewer.layers[source]
            focus = min(self.step.value(), len(preview.planes) - 1)
            specs = plane_layer_specs(
                preview,
                base,
                source_layer,
                self.viewer.dims.ndisplay,
                focus,
                displayed_extent(self.viewer, source_layer),
            )
        else:
            source_layer = self.viewer.layers[source]
            specs = box_layer_specs(
                preview, base, source_layer, self.viewer.dims.ndisplay, sliced_axis(self.viewer)
            )
        recycle(self.viewer, source, specs)
        names = set()
        for name, layer_type, data, kwargs, role in specs:
            upsert(self.viewer, name, layer_type, data, kwargs, {**tag, "role": role})
            names.add(name)
        for layer in explorer_layers(
            self.viewer, source
        ):  # one preview per scan: drop stale / other pretexts
            if layer.name not in names:
                self.viewer.layers.remove(layer)
        keep = active if active is not None and active in self.viewer.layers else None
        if source in self.viewer.layers:  # keep the user's scan as the active layer
            keep = self.viewer.layers[source]
        if keep is not None:
            self.viewer.layers.selection.active = keep

    def _on_view_change(self, event: Any = None) -> None:
        """2D <-> 3D: boxes as wireframes in 3D, as contours with per-slice text in 2D; planes as layers in
        3D, as a grid of tiles in 2D (redrawn from the last preview, nothing recomputed). Back in 2D, the slice
        the user left and (planes) a view of the grid once napari's own 2D update is done: :attr:`view_ready`."""
        preview = self.last_preview
        if preview is None:
            return
        if getattr(event, "type", None) == "ndisplay":
            if self.viewer.dims.ndisplay == 3:
                self._point_2d = tuple(self.viewer.dims.point)
            else:
                QTimer.singleShot(0, self._settle_2d)
        planes = self._shows(preview.request.pretext).planes
        drawn = preview.world or preview.request.source in self.viewer.layers
        if drawn and (planes or preview.body_3d is not None):  # body_3d: each view its own volume
            self._draw(preview)
        if not planes:
            show_boxes(self.viewer, preview)

    def _settle_2d(self) -> None:
        """After 3D -> 2D: the 2D slice back where it was; the view fitted to a planes grid."""
        point, self._point_2d = self._point_2d, None
        if self.viewer.dims.ndisplay == 2:
            restore_slice(self.viewer, point)
            if self._planes_shown():
                frame(self.viewer)
        self.view_ready.emit()

    def _before_removal(self, *_: Any) -> None:
        # napari deletes the layer's GL objects at once: in the canvas's context, not Qt's (issue 21)
        make_canvas_current(self)

    def remove_previews(self) -> int:
        """Remove every layer the explorer added (one click); returns how many."""
        self.last_preview = None
        count = remove_previews(self.viewer)
        self.status.setText(f"removed {count} preview layers")
        return count


def make_explorer(napari_viewer: napari.viewer.Viewer) -> PretextExplorer:
    """The Pretext explorer dock for ``napari_viewer`` (the manifest points at the class itself, which napari
    instantiates with the viewer; this function is for scripts)."""
    return PretextExplorer(napari_viewer)
