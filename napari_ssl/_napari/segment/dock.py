"""The Segment dock: pick a model and an Image layer, one click gives a Labels layer ``<scan> masks``.

- Any model of :mod:`napari_ssl.inference.segmenter`: a napari-ssl checkpoint, an nnU-Net v2 results folder, a MONAI
  bundle, a TorchScript file with its sidecar. A format whose loading runs code stored with the model (nnU-Net's
  pickles, a bundle's config expressions) shows "I trust this model" with the reason; it runs only when ticked, and
  the tick is given to that model only.

- Models (:mod:`~napari_ssl._napari.segment.models`, the *Model* section): the last ones used (``QSettings``), every
  model the Fine-tune dock finishes (the checkpoint hub: listed and selected at once), and the bundled demonstration
  model (:mod:`napari_ssl.inference.bundled`: the sample phantom's lesion), chosen on a first launch when nothing else
  is known. The dock shows what the model is (:mod:`~napari_ssl._napari.segment.info`: classes, inputs, plan, steps, held-out Dice,
  a warning when that Dice is low), read from ``meta.json`` only.
- Before running, the scan is compared with the model's training data (:mod:`napari_ssl.inference.scan_check`: modality,
  channels, voxel size, intensities, on at most ~2M voxels: a tenth of a second): a mismatch is one sentence in a
  warning and on the status line, and the run goes on. An error (a bad model or layer, a failed run) replaces the
  status line too.
- The scan defaults to the selected Image layer. A model with several inputs (e.g. FLAIR + T1ce) shows one
  layer picker per input. A layer the model cannot use (2D, 4D, RGB, multiscale, too small) is refused with a
  sentence naming it before anything starts; the dock stays usable.
- Loading the model and segmenting run in a child process (:mod:`~napari_ssl._napari.jobs`, the same relay
  as training: warm start, GPU memory freed after the run); progress reaches the GUI at most 10 times a second
  and repaints the bar and napari's activity dock together. Cancel stops before the next window.
- The Labels layer has the scan's geometry (scale, translate, affine), the checkpoint's colours, and a
  ``class`` feature, so napari's status bar names the class under the cursor. The user's layers are only read.
  It is built in the worker thread and shown in event-loop turns (:mod:`~napari_ssl._napari.segment.masks`);
  what the first result would import is imported while the user picks a model.
- ``Save masks`` (:mod:`~napari_ssl._napari.segment.save`) writes the selected masks layer (NIfTI / NRRD / MHA) with
  its geometry, next to the scan.
- ``Learn from my corrections`` (:mod:`~napari_ssl._napari.segment.learn`): the masks layer as the user corrected
  it and its scan become a case of the model (stored beside it), training continues from the model's weights for the
  minutes set, a new version is saved (the model itself only read) and segments the scan again.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_ssl._napari.activity import Activity
from napari_ssl._napari.checks import scan_problem
from napari_ssl._napari.dock import JobDock
from napari_ssl._napari.hub import checkpoint_hub
from napari_ssl._napari.jobs import CORRECT, SEGMENT, ModelLoaded, SegmentRequest
from napari_ssl._napari.relay import Relay, RunFailed
from napari_ssl._napari.segment.info import (
    MaskTarget,
    ModelInfo,
    PreparedMasks,
    masks_layer_kwargs,
    prepare_masks,
    read_model_info,
    remember_model,
)
from napari_ssl._napari.segment.learn import Edits, LearnRow, correction_request, masks_to_learn
from napari_ssl._napari.segment.masks import StagedShow, start_warm_up
from napari_ssl._napari.segment.models import ModelPicker
from napari_ssl._napari.segment.options import RunOptions
from napari_ssl._napari.segment.save import save_masks
from napari_ssl._napari.segment.scans import ScanPickers
from napari_ssl._napari.widgets import ProgressBar, scrolled
from napari_ssl.inference.bundled import bundled_name
from napari_ssl.inference.scan_check import check_scan, summarize_scan

if TYPE_CHECKING:
    import napari

__all__ = ["UPDATE_MS", "SegmentDock", "masks_layer_kwargs"]

#: progress repaints at most this often (ms)
UPDATE_MS = 100


class SegmentDock(JobDock):
    """The Segment dock (see the module docstring). ``info`` describes the chosen model, ``relay`` the job."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.info: ModelInfo | None = None
        self.relay: Relay | None = None
        self.last_masks: Any = None
        self.timings: dict[str, float] = {}
        self._source: Any = None
        self._caution = ""  # the scan check's warning, kept on the status line through the run
        self._fraction: float | None = None
        self._activity: Activity | None = None
        self._t0 = 0.0
        self.edits = Edits()  # the model's own masks, to tell the user's corrections
        self._new_version: str | None = None  # the version a correction round saved
        self._learning_since = 0.0
        self.learn_steps: int | None = None  # a step budget for a correction round besides the minutes (scripts)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(UPDATE_MS)
        self._timer.timeout.connect(self._show_progress)
        self.staged = StagedShow(viewer, self)
        self._warm_timer = start_warm_up(self, lambda: self.relay is None)  # imports, a GC while a model is picked

        self.picker = ModelPicker()
        self.picker.chosen.connect(self.load_model)
        self.model_box = self.picker.model_box
        self.scans = ScanPickers(viewer)
        self.options = RunOptions()

        self.run_button = QPushButton("Segment")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = ProgressBar()  # setValue repaints with the rest (one composite)
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.save_button = QPushButton("Save masks…")
        self.save_button.clicked.connect(lambda: self.save_masks())
        self.learn_row = LearnRow()
        self.learn_row.button.clicked.connect(lambda: self.learn())

        form = QWidget()
        inner = QVBoxLayout(form)
        inner.setContentsMargins(0, 0, 0, 0)
        inner.addWidget(self.picker)
        inner.addWidget(QLabel("<b>Scan</b>"))
        inner.addWidget(self.scans)
        inner.addWidget(self.options)
        inner.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(scrolled(form), 1)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.save_button)
        layout.addWidget(self.learn_row)

        checkpoint_hub().published.connect(self._on_published)
        self._choose_first_model()

    def _choose_first_model(self) -> None:
        """Open with the model the user most likely wants: the last one fine-tuned in this session, else the last one
        used, else (a first launch) the demonstration model. A folder that no longer reads as a model is passed over
        in silence here."""
        for i in range(self.model_box.count()):
            path = self.model_box.path_of(self.model_box.itemText(i))
            try:
                info = read_model_info(path)
            except (ValueError, OSError):
                continue
            self._use_model(info, quiet=True)
            return

    @property
    def channel_boxes(self) -> list[QComboBox]:
        """The Image-layer picker of each model input."""
        return self.scans.boxes

    # ------------------------------------------------------------ model
    def _on_published(self, path: str, kind: str) -> None:
        if kind != "segment":
            return
        if self.model_box.findText(path) < 0:
            self.model_box.insertItem(0, path)
        if self.relay is None:
            self.load_model(path, quiet=True)

    def _fail(self, message: str) -> None:
        """An error in words: a notification and the status line (no earlier result's text stays there)."""
        show_error(f"Segment: {message}")
        self.status.setText(f"failed: {message}")

    def load_model(self, path: str | Path, *, quiet: bool = False) -> bool:
        """Choose the model at ``path`` (a folder, or a bundled model's name or list text; its ``meta.json`` is
        read, the weights load in the child at Segment).

        A bad folder gives a notification and keeps the previous model.
        """
        path = self.model_box.path_of(str(path))
        if not path:
            show_warning("Segment: choose a fine-tuned model folder first")
            self.status.setText("choose a model first")
            return False
        try:
            info = read_model_info(path)
        except (ValueError, OSError) as exc:
            self._fail(f"cannot use model: {exc}")
            return False
        self._use_model(info, quiet=quiet)
        return True

    def _use_model(self, info: ModelInfo, *, quiet: bool) -> None:
        """Make the model ``info`` describes the dock's choice (remembered unless bundled; its inputs' pickers)."""
        self.info = info
        if bundled_name(info.path) is None:
            remember_model(info.path)
        self.picker.show_model(info)
        if info.low_dice and not quiet:
            show_warning(
                f"Segment: this model's held-out Dice is {info.mean_dice:.2f}; expect wrong masks "
                "(train longer or on more cases)"
            )
        self.scans.set_inputs(info.channels, modalities=[c.modality for c in info.segmenter.channels])
        self.options.show_model(info)

    # ------------------------------------------------------------ run
    def run(self) -> Any:
        """Segment the chosen layer(s); returns the relay's worker (or None when the input is refused)."""
        from napari_ssl._napari.layers import layer_to_volume

        if self.relay is not None:
            show_warning("Segment: a segmentation is already running")
            return None
        path = self.model_box.path_of()
        if (self.info is None or self.info.path != path) and not self.load_model(path):
            return None
        info = self.info
        assert info is not None
        if info.needs_trust and not self.picker.trusted(info):
            reason = info.segmenter.trust_reason.strip().rstrip(".") or "opening it runs code stored with it"
            self._fail(f"this model is not trusted yet: {reason}; tick 'I trust this model' to run it, only if you "
                       "trust where it comes from")
            return None
        layers = {layer.name: layer for layer in self.viewer.layers}
        chosen = self.scans.chosen()
        if not chosen or any(name not in layers for name in chosen) or len(set(chosen)) != len(chosen):
            active = self.viewer.layers.selection.active
            hint = f" ({scan_problem(active, what='segmentation')})" if active is not None and not chosen[0] else ""
            self._fail(
                f"the model takes {len(info.channels)} input(s) ({', '.join(info.channels)}); "
                f"pick a different Image layer for every input{hint}"
            )
            return None
        for name in chosen:
            problem = scan_problem(layers[name], what="segmentation")
            if problem:
                self._fail(problem)
                return None
        volumes = tuple(layer_to_volume(layers[name]) for name in chosen)  # no copy: written to file off-thread
        check = check_scan(info.trained_on, summarize_scan(volumes))
        if check.error:
            self._fail(check.error)
            return None
        self._caution = f"warning: {check.warning}\n" if check.warning else ""
        if check.warning:
            show_warning(f"Segment: {check.warning}")
        self._source = layers[chosen[0]]
        request = SegmentRequest(
            model=info.path,
            volumes=volumes,
            device=self.options.device_name,
            options=self.options.segment_options(),
            threads=self.options.threads,
            trust=info.needs_trust and self.picker.trusted(info),
            open_options=self.options.open_options(info),
        )
        target = MaskTarget(
            name=f"{self._source.name} masks",
            scan_path=(self._source.metadata.get("napari_ssl") or {}).get("path"),
            model_path=info.path,
            scans=tuple(chosen),
        )
        self._start(Relay(SEGMENT, request, label="Segmentation", stop_timeout=10.0,
                          prepare=functools.partial(prepare_masks, target=target)),
                    f"{self._caution}segmenting {chosen[0]}: starting…", f"Segmenting {chosen[0]}")
        return self.relay.worker

    def _start(self, relay: Relay, status: str, activity: str) -> None:
        relay.worker.yielded.connect(self._on_event)
        relay.worker.errored.connect(self._on_error)
        relay.worker.finished.connect(self._on_finished)
        self.relay = relay
        self.run_button.setEnabled(False)
        self.learn_row.button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self._fraction = None
        self._new_version = None
        self.status.setText(status)
        self._activity = Activity(activity, total=100)
        self._t0 = time.monotonic()
        self.timings = {}
        relay.start()

    def learn(self) -> Any:
        """One round of the correction loop on the selected (else the last) masks layer Segment made; returns the
        relay's worker, or None when refused (one sentence, nothing written)."""
        if self.relay is not None:
            show_warning("Segment: a run is already going")
            return None
        layer = masks_to_learn(self.viewer, self.last_masks)
        try:
            request, target = correction_request(
                self.viewer, layer, self.edits, minutes=self.learn_row.minutes_set, steps=self.learn_steps,
                device=self.options.device_name, threads=self.options.threads, options=self.options.segment_options())
        except (ValueError, OSError) as exc:
            self._fail(f"cannot learn from the corrections: {exc}")
            return None
        self._source = self.viewer.layers[request.scan_name]
        self._caution = ""
        self._start(Relay(CORRECT, request, label="Learning from corrections", stop_timeout=30.0,
                          prepare=functools.partial(prepare_masks, target=target)),
                    f"learning from {layer.name}: storing it beside the model…", f"Learning from {layer.name}")
        return self.relay.worker

    def cancel(self) -> None:
        """Stop the running segmentation before its next window (no layer is added); returns at once."""
        if self.relay is not None:
            self.status.setText("cancelling…")
            self.relay.stop()

    def _on_event(self, event: Any) -> None:
        from napari_ssl.events import Finished, Progress, Started, Stopped
        from napari_ssl.inference.segment import SegmentProgress

        if isinstance(event, Started):  # a correction round's training
            self._learning_since = time.monotonic()
            self.status.setText(f"learning on {event.device} from {event.n_train} case(s) "
                                f"(the corrections and the model's own training scans)…")
        elif isinstance(event, Progress):  # the minutes usually end a round before its steps: the larger share
            spent = (time.monotonic() - self._learning_since) / (60.0 * self.learn_row.minutes_set)
            self._fraction = min(1.0, max(event.step / max(1, event.total), spent))
            if not self._timer.isActive():
                self._timer.start()
        elif isinstance(event, Finished):
            self._new_version = event.path
            self.status.setText(f"new version saved in {event.path} (step {event.step}); segmenting "
                                f"{self._source.name} again…")
            self._fraction = 0.0
        elif isinstance(event, SegmentProgress):
            self._fraction = event.fraction
            if not self._timer.isActive():
                self._timer.start()
        elif isinstance(event, ModelLoaded):
            self.timings["model"] = time.monotonic() - self._t0
            self.status.setText(f"{self._caution}segmenting {self._source.name} on {event.device}…")
        elif isinstance(event, PreparedMasks):
            self.timings["result"] = time.monotonic() - self._t0
            self._add_masks(event)
        elif isinstance(event, Stopped):
            saved = f"; the training so far is saved in {event.path}" if event.path and self._new_version is None \
                and self._fraction else ""
            self.status.setText(f"cancelled{saved}")
            show_info(f"Segment: cancelled{saved}")

    def _show_progress(self) -> None:
        if self._fraction is None:
            return
        value = round(100 * self._fraction)
        self.progress.setValue(value)
        if self._activity is not None:
            self._activity.set(value)

    def _add_masks(self, prepared: PreparedMasks) -> None:
        """Show the masks built in the worker thread (:meth:`StagedShow.place`: a re-run on the same grid moves the
        new data into the dock's earlier layer; a new layer's visuals are built in the next event-loop turns, so no
        single turn holds the GUI for long)."""
        self.last_masks = self.staged.place(prepared.layer, prepared.steps)
        self.edits.remember(self.last_masks)
        counts = prepared.counts
        self.status.setText(self._caution + "found " + ", ".join(f"{n}: {c} voxels" for n, c in counts.items()))
        self.progress.setValue(100)

    def _on_error(self, exc: Exception) -> None:
        self._fail(str(exc) if isinstance(exc, RunFailed) else f"Segmentation failed: {exc}")

    def _on_finished(self) -> None:
        self._timer.stop()
        if self._activity is not None:
            self._activity.close()
            self._activity = None
        self.timings["done"] = time.monotonic() - self._t0
        if self.status.text() == "cancelling…":  # cancelled before the child ran: nothing was relayed
            self.status.setText("cancelled")
            show_info("Segment: cancelled")
        self.relay = None
        self.run_button.setEnabled(True)
        self.learn_row.button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        new, self._new_version = self._new_version, None
        if new:  # the version a correction round saved is the dock's model from now on (and listed)
            checkpoint_hub().publish(new, "segment")
            self.load_model(new, quiet=True)

    # ------------------------------------------------------------ save
    def save_masks(self, path: str | Path | None = None) -> Path | None:
        """Write the selected masks layer (or the last one made) with its geometry; returns the path."""
        out = save_masks(self, self.viewer, self.last_masks, path)
        if out is not None:
            self.status.setText(f"saved {out}")
        return out

    def shutdown(self) -> None:
        """Closing: no warm-up left pending, the masks' staged turns done, the job stopped."""
        if self._warm_timer is not None:
            self._warm_timer.stop()
        self.staged.finish()
        super().shutdown()
