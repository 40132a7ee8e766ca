"""See what the network learned: the Pretext explorer's preview answered by a pretraining checkpoint.

A row under the explorer's parameters picks a pretraining checkpoint (those the Pretrain dock published in this
session, through :mod:`~napari_ssl._napari.hub`, or any folder through "Choose..."). With one chosen, every
preview is followed by the network's answer on that same sample, computed in a ``thread_worker``
(:func:`~napari_ssl._napari.jobs.answer_job`, in a child process like every model load) and drawn as layers named
``<scan> · network ...``. What is computed and drawn comes from the pretext's registry record
(``ExplorerSpec.answer``, an :class:`~napari_ssl.pretext.registry.AnswerSpec`); a pretext without one gets a status
line saying so. The built-ins:

- context restoration and Models Genesis: the restored volume beside the corrupted one (the explorer's layer,
  over the scan), then the original, left to right; their PSNRs in words on the canvas;
- Rubik's cube: each cube outlined green when the network put it in the right place *and* turned it right, red
  otherwise (wireframes in 3D, contours in 2D); predicted vs true permutation on the canvas;
- imaging planes (2D view): a second grid of tiles under the explorer's, each plane with the network's line
  heatmaps and the true lines drawn over them, and its predicted slice position.

The layers carry ``metadata["napari_ssl_learned"]``, so the explorer's own bookkeeping never touches them; the
"Remove previews" button removes them too. A bad checkpoint is a notification, never a traceback.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_ssl._napari.explorer.learned_compute import (
    LearnedAnswer,
    answer_request,
    checkpoint_label,
    pretrain_meta,
)
from napari_ssl._napari.explorer.overlays import _set_shapes
from napari_ssl._napari.hub import checkpoint_hub
from napari_ssl._napari.jobs import ANSWER, Answered
from napari_ssl._napari.proxy import kind
from napari_ssl._napari.relay import Relay, RunFailed
from napari_ssl.pretext import registry

__all__ = ["LEARNED", "LearnedPanel", "attach_learned", "learned_layers"]

LEARNED = "napari_ssl_learned"
NONE = "(no network)"


def learned_layers(viewer: Any) -> list[Any]:
    """The layers this panel added, in viewer order."""
    return [layer for layer in viewer.layers if isinstance(layer.metadata, dict) and LEARNED in layer.metadata]


class LearnedPanel(QWidget):
    """Checkpoint picker and the network's answer on every preview of ``explorer``.

    Attributes
    ----------
    worker : FunctionWorker or None
        The latest answer's worker (tests wait on ``worker.finished``).
    last_answer : LearnedAnswer or None
        The answer drawn last.
    """

    answer_ready = Signal(object)

    def __init__(self, explorer: Any) -> None:
        super().__init__()
        self.explorer = explorer
        self.viewer = explorer.viewer
        self.worker: Any = None
        self.relay: Any = None  # the child answering now
        self.last_answer: LearnedAnswer | None = None
        self._pending: Any = None
        self._running = False
        self._warned = ""  # the last message shown as a popup
        self.network = QComboBox()
        self.network.addItem(NONE, "")
        # long checkpoint names must not widen the dock beyond a laptop screen
        self.network.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.network.setMinimumContentsLength(8)
        self.network.setToolTip("A pretraining checkpoint: the preview also shows its answer on the same sample")
        self.choose = QPushButton("Choose...")
        self.choose.setToolTip("A checkpoint folder written by napari-ssl pretrain (meta.json + model.safetensors)")
        self.match = QPushButton("Use its parameters")
        self.match.setToolTip("Set the pretext's parameters to those the network was trained with")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("network"))
        row.addWidget(self.network, 1)
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.choose)
        buttons.addWidget(self.match)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        self.match.setVisible(False)

        hub = checkpoint_hub()
        for path in hub.paths("pretrain"):
            self.add_checkpoint(path, select=False, quiet=True)
        explorer.preview_ready.connect(self._on_preview)  # dies with the explorer, which owns this panel
        # a Qt signal to a bound slot of this QObject: Qt breaks the connection when the panel dies. Never disconnect
        # it by hand from `destroyed`: at interpreter exit the hub may be deleted first, and a disconnect through a
        # stale bound signal segfaults (issue 21)
        hub.published.connect(self._on_published)
        dims = self.viewer.dims.events
        links = [(dims.ndisplay, self._redraw), (dims.order, self._redraw)]  # napari events: pure Python
        for signal, slot in links:
            signal.connect(slot)
        self.destroyed.connect(lambda *_: _disconnect(links))  # the viewer outlives the dock
        explorer.remove_button.clicked.connect(self.remove_layers)
        explorer.pretext.currentIndexChanged.connect(self._sync_match)
        self.network.currentIndexChanged.connect(self._on_network)
        self.choose.clicked.connect(self._browse)
        self.match.clicked.connect(self.use_network_parameters)

    # ------------------------------------------------------------------------------------ checkpoints
    @property
    def path(self) -> str:
        return str(self.network.currentData() or "")

    def add_checkpoint(self, path: str, select: bool = True, quiet: bool = False) -> bool:
        """List (and select) the pretraining checkpoint ``path``; a notification and False for anything else."""
        try:
            meta = pretrain_meta(str(path))
        except (ValueError, OSError) as exc:
            if not quiet:
                self._notify(str(exc))
            return False
        index = self.network.findData(str(path))
        if index < 0:
            self.network.addItem(checkpoint_label(str(path), meta), str(path))
            index = self.network.count() - 1
        self.network.setItemData(index, meta, role=_META_ROLE)
        if select and index == self.network.currentIndex():
            self._on_network()  # chosen again (perhaps trained further): answer again
        elif select:
            self.network.setCurrentIndex(index)
        return True

    def _on_published(self, path: str, kind: str) -> None:
        if kind == "pretrain":
            self.add_checkpoint(path, select=False, quiet=True)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Pretraining checkpoint folder")
        if folder:
            self.add_checkpoint(folder)

    def _meta(self) -> Any:
        """The chosen network's typed :class:`~napari_ssl.meta.PretrainCheckpoint` (an empty one when none)."""
        from napari_ssl.meta import PretrainCheckpoint

        return self.network.currentData(_META_ROLE) or PretrainCheckpoint()

    def _sync_match(self, *_: Any) -> None:
        options = self._meta().pretext_options
        self.match.setVisible(bool(self.path) and self.explorer.pretext_name in options)

    def use_network_parameters(self) -> None:
        """Set the current pretext's parameters to the ones the network was trained with (a new preview)."""
        name = self.explorer.pretext_name
        options = self._meta().pretext_options.get(name, {})
        widget = self.explorer.params[name]
        known = {spec.name for spec in widget.specs}
        values = {k: (v[0] if isinstance(v, (list, tuple)) else v) for k, v in options.items() if k in known}
        spacing = self._meta().spacing
        lengths = [k for k in registry.get(name).explorer.mm_params if k in values]
        if spacing and lengths and values.get("unit", "voxel") == "voxel":
            # trained in voxels of the checkpoint's grid: the same lengths in mm on the user's scan
            values.update({k: float(values[k]) * float(np.mean(spacing)) for k in lengths}, unit="mm")
        widget.set_values(values)

    def _on_network(self, *_: Any) -> None:
        self._warned = ""
        self._sync_match()
        if not self.path:
            self.remove_layers()
            self.status.setText("")
            return
        preview = self.explorer.last_preview
        if preview is None:
            self.status.setText("preview a pretext to see the network's answer")
        else:
            self.compute(preview)

    # ------------------------------------------------------------------------------------ worker
    def _on_preview(self, preview: Any) -> None:
        self._drop_other_pretexts(preview.request.pretext)
        for layer in learned_layers(self.viewer):  # the last answer is not this sample's: hidden until redrawn
            layer.visible = False
        if self.path:
            self.compute(preview)

    def compute(self, preview: Any) -> Any:
        """Start the network's answer on ``preview`` in a worker (returned; None without a checkpoint)."""
        if not self.path:
            return None
        spec = registry.get(preview.request.pretext)
        if spec.explorer.answer is None:  # a status line, no popup on every preview
            self.remove_layers()
            self.status.setText(f"{spec.label} has no network answer view: the explorer shows only its samples")
            return None
        learned = self._meta().pretexts
        if preview.request.pretext not in learned:  # nothing to ask it: say so, no popup on every preview
            self.remove_layers()
            self.status.setText(f"this network learned {', '.join(learned)}, not this pretext")
            return None
        if self._running:
            self._pending = preview
            return self.worker
        try:
            request = answer_request(self.path, preview)
        except ValueError as exc:
            self._on_errored(exc)
            return None
        path = self.path
        relay = Relay(ANSWER, request, label="The network's answer", stop_timeout=5.0)  # a child, as every model load
        relay.worker.yielded.connect(
            lambda event: self._on_returned(LearnedAnswer(preview, path, dict(event.result), event.summary))
            if isinstance(event, Answered) else None)
        relay.worker.errored.connect(self._on_errored)
        relay.worker.finished.connect(self._on_finished)
        self.relay, self.worker = relay, relay.worker
        self._running = True
        self.status.setText("the network is answering ...")
        QTimer.singleShot(0, relay.start)  # the caller can still connect to the worker's signals
        return relay.worker

    def _on_finished(self) -> None:
        self._running = False
        self.relay = None
        if self._pending is not None:
            preview, self._pending = self._pending, None
            if preview is self.explorer.last_preview:
                self.compute(preview)

    def _on_errored(self, exc: BaseException) -> None:
        self.remove_layers()
        if isinstance(exc, RunFailed) and exc.error_type in ("ValueError", "OSError", "FileNotFoundError",
                                                             "CheckpointError", "CheckpointKindError"):
            self._notify(exc.reason)  # the child's own sentence: the network, the pretext, the parameters
        elif isinstance(exc, (ValueError, OSError)):  # our own sentences: checkpoint, pretext, parameters
            self._notify(str(exc))
        else:
            self._notify(f"{type(exc).__name__}: {exc}", error=True)

    def _notify(self, message: str, error: bool = False) -> None:
        self.status.setText(message)
        if message != self._warned:  # the same refusal on every preview: one popup is enough
            (show_error if error else show_warning)(f"Pretext explorer: {message}")
        self._warned = message

    def _on_returned(self, result: LearnedAnswer) -> None:
        if result.preview is not self.explorer.last_preview or self._pending is not None or not self.path:
            return  # stale: the preview changed while the network was answering
        if result.preview.request.source not in self.viewer.layers:
            return
        self.last_answer = result
        self._warned = ""
        self._draw(result)
        self.status.setText(result.summary)
        self.answer_ready.emit(result)

    # ------------------------------------------------------------------------------------ drawing
    def remove_layers(self, *_: Any) -> int:
        """Remove every layer this panel added and its canvas text; returns how many layers."""
        doomed = learned_layers(self.viewer)
        for layer in doomed:
            self.viewer.layers.remove(layer)
        self.last_answer = None
        self.viewer.text_overlay.visible = False
        return len(doomed)

    def _drop_other_pretexts(self, pretext: str) -> None:
        for layer in learned_layers(self.viewer):
            if layer.metadata[LEARNED].get("pretext") != pretext or not self.path:
                self.viewer.layers.remove(layer)
        if self.last_answer is not None and self.last_answer.pretext != pretext:
            self.viewer.text_overlay.visible = False

    def _redraw(self, *_: Any) -> None:
        if self.last_answer is not None and self.last_answer.preview.request.source in self.viewer.layers:
            self._draw(self.last_answer)

    def _draw(self, result: LearnedAnswer) -> None:
        from napari_ssl._napari.explorer import learned_draw as draw

        source = result.preview.request.source
        specs = draw.answer_layers(self.viewer, result, self.viewer.layers[source])
        active = self.viewer.layers.selection.active
        names = set()
        for name, layer_type, data, kwargs, role in specs:
            _put(self.viewer, name, layer_type, data, kwargs, {"source": source, "pretext": result.pretext,
                                                               "role": role})
            names.add(name)
        for layer in learned_layers(self.viewer):
            if layer.name not in names:
                self.viewer.layers.remove(layer)
        overlay = self.viewer.text_overlay
        overlay.text = draw.canvas_text(result)
        overlay.position = registry.get(result.pretext).explorer.answer.text_position  # clear of its drawing
        overlay.font_size = 9
        overlay.color = "white"
        overlay.visible = True
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active


_META_ROLE = 0x0101  # Qt.ItemDataRole.UserRole + 1: the typed checkpoint beside its path


def _disconnect(links: list[tuple[Any, Any]]) -> None:
    for signal, slot in links:
        with contextlib.suppress(TypeError, RuntimeError, ValueError):
            signal.disconnect(slot)


def _put(viewer: Any, name: str, layer_type: str, data: Any, kwargs: dict[str, Any], tag: dict[str, Any]) -> Any:
    """Update our layer ``name`` in place, or add it (a user's layer of that name is never touched)."""
    kwargs = {**kwargs, "metadata": {LEARNED: dict(tag)}}
    contour = kwargs.pop("contour", None)
    layer = viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401 (LayerList has no .get)
    if layer is not None and (LEARNED not in layer.metadata or kind(layer).lower() != layer_type):
        if LEARNED not in layer.metadata:
            return None
        viewer.layers.remove(layer)
        layer = None
    shape_kw = {k: kwargs.pop(k) for k in ("shape_type", "edge_color", "edge_width") if k in kwargs}
    if layer is None:
        if layer_type == "shapes":
            layer = viewer.add_shapes(name=name, ndim=3, **kwargs)
        else:
            layer = getattr(viewer, f"add_{layer_type}")(data, name=name, **kwargs)
    else:
        for key in ("scale", "translate", "rotate", "affine", "metadata", "contrast_limits", "colormap", "opacity"):
            if key in kwargs:
                setattr(layer, key, kwargs[key])
        layer.visible = kwargs.get("visible", True)
        if layer_type != "shapes":
            layer.data = data
    if layer_type == "shapes":
        _set_shapes(layer, data, shape_kw)
    if contour is not None:
        layer.contour = contour
    return layer


def attach_learned(explorer: Any) -> LearnedPanel:
    """Add the panel to ``explorer`` (above its status line) and return it."""
    panel = LearnedPanel(explorer)
    layout = explorer.status.parentWidget().layout()
    layout.insertWidget(layout.indexOf(explorer.status), panel)
    return panel

