"""The Fine-tune dock: train a segmenter from image / label layer pairs (or folders) in a child process.

The inputs (pairs or folders, classes, budget, device) are :class:`~napari_ssl._napari.finetune.form.FinetuneForm`'s.
Like the Pretrain dock, the run (:func:`napari_ssl.training.finetune.finetune`, its config built in the child by
:mod:`~napari_ssl._napari.jobs`) happens in a child process through :class:`~napari_ssl._napari.relay.Relay`;
the dock shows progress, the loss and the held-out Dice per class live (:class:`~napari_ssl._napari.plot.CurvePlot`),
and Cancel saves a valid checkpoint. The pretrained starting point is the last checkpoint the Pretrain dock published
on the hub; a finished model is published there for the Segment dock. Inputs are checked before any process starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_ssl._napari.activity import Activity
from napari_ssl._napari.dock import JobDock
from napari_ssl._napari.finetune.form import FinetuneForm
from napari_ssl._napari.hub import checkpoint_hub
from napari_ssl._napari.jobs import FINETUNE, ConfigRequest
from napari_ssl._napari.plot import CurvePlot
from napari_ssl._napari.relay import Relay, RunFailed
from napari_ssl._napari.widgets import ProgressBar, scrolled

if TYPE_CHECKING:
    import napari

__all__ = ["FinetuneDock"]


class FinetuneDock(JobDock):
    """The Fine-tune dock (see the module docstring); ``form`` holds the inputs, ``relay`` is the running job."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.relay: Relay | None = None
        self.last_path: str | None = None
        self._activity: Activity | None = None
        self._step: int | None = None
        self._timer = QTimer(self)  # the bar is repainted at most 4 times a second, however fast the steps
        self._timer.setSingleShot(True)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._show_step)
        self.form = FinetuneForm(viewer)

        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(lambda: self.start())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        self.progress = ProgressBar()  # setValue repaints with the rest (one composite)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.plan_label = QLabel("")  # the run's plan from the data (spacing, patch, normalisation, steps)
        self.plan_label.setStyleSheet("font-size: 10px")
        self.plan_label.setWordWrap(True)  # unwrapped, a long plan widened the dock past a laptop screen
        self.plan_label.setVisible(False)
        self.loss_plot = CurvePlot(ylabel="loss", title="Dice + CE loss", height=110)
        self.dice_plot = CurvePlot(ylabel="Dice", ylim=(0.0, 1.0), title="held-out Dice", height=110)

        inner = QWidget()
        inner_layout = QVBoxLayout(inner)
        inner_layout.setContentsMargins(0, 0, 0, 0)
        inner_layout.addWidget(self.form)
        inner_layout.addWidget(self.plan_label)
        inner_layout.addWidget(self.loss_plot)
        inner_layout.addWidget(self.dice_plot)
        inner_layout.addStretch(1)
        self.scroll = scrolled(inner)
        layout = QVBoxLayout(self)
        layout.addWidget(self.scroll, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

        checkpoint_hub().published.connect(self._on_published)

    def _on_published(self, path: str, kind: str) -> None:
        if kind == "pretrain" and self.relay is None:  # a new pretrained start, unless a run is using the form's
            self.form.pretrained.path = path

    # ------------------------------------------------------------ run
    def start(self) -> Relay | None:
        """Start fine-tuning in a child process; returns the relay (None when the form is refused)."""
        if self.relay is not None:
            show_warning("Fine-tune: a run is already going")
            return None
        try:
            kwargs = self.form.collect()
        except (ValueError, OSError) as exc:
            show_error(f"Fine-tune: {exc}")
            return None
        relay = Relay(FINETUNE, ConfigRequest(kwargs), label="Fine-tuning", stop_timeout=30.0)
        relay.worker.yielded.connect(self._on_event)
        relay.worker.errored.connect(self._on_error)
        relay.worker.finished.connect(self._on_finished)
        self.relay = relay
        steps = kwargs["steps"] or 1  # the plan's budget arrives with Started
        self.loss_plot.clear()
        self.dice_plot.clear()
        self._set_total(steps)
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        self._step = None
        self.status.setText("starting the training process…")
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._activity = Activity("Fine-tuning", total=steps)
        self.scroll.ensureWidgetVisible(self.loss_plot)
        relay.start()
        return relay

    def _set_total(self, steps: int) -> None:
        self.loss_plot.set_xrange(0, steps)
        self.dice_plot.set_xrange(0, steps)
        self.progress.setRange(0, steps)
        if getattr(self, "_activity", None) is not None:
            self._activity.set(self._step or 0, total=steps)

    def cancel(self) -> None:
        """Stop the run; the child saves a checkpoint of the steps done. Returns at once."""
        if self.relay is not None:
            self.relay.stop()
            self.status.setText("stopping (saving)…")

    def _on_event(self, event: Any) -> None:
        from napari_ssl.events import Finished, Progress, Started, Stopped
        from napari_ssl.training.finetune import Validated

        if isinstance(event, Started):
            self._set_total(event.total)
            self.plan_label.setText(event.plan_text)
            self.plan_label.setVisible(bool(event.plan_text))
            held = f"{event.n_val} held out" if event.n_val else "none held out: the last weights are kept"
            self.status.setText(f"training on {event.device}: {event.n_train} case(s), {held}")
        elif isinstance(event, Progress):
            self._step = event.step
            self.loss_plot.add("loss", event.step, event.loss)
            if not self._timer.isActive():
                self._timer.start()
        elif isinstance(event, Validated):
            self.dice_plot.add_many(event.step, event.dice)
            self.status.setText(
                f"step {event.step}: held-out Dice " + ", ".join(f"{k} {v:.2f}" for k, v in event.dice.items())
            )
        elif isinstance(event, Finished):
            self.last_path = event.path
            planned = self.progress.maximum()
            if 0 < event.step < planned:  # the minutes ran out first: the bar and curves end at the last step
                self._set_total(event.step)
            self._step = event.step
            self._show_step()
            self.progress.setFormat(f"finished: step {event.step}")
            budget = f" (the {self.form.minutes.value():g}-minute budget ended it before step {planned})" \
                if event.step < planned else ""
            self.status.setText(f"finished at step {event.step}{budget}; model in {event.path}")
            self._offer(event.path)
            show_info(f"Fine-tune: finished; model in {event.path}")
        elif isinstance(event, Stopped):
            self.last_path = event.path
            self._show_step()
            self.progress.setFormat(f"cancelled at step {self.progress.value()}/{self.progress.maximum()}")
            self.status.setText(f"cancelled; checkpoint in {event.path}")
            self._offer(event.path)

    def _show_step(self) -> None:
        if self._step is None:
            return
        self.progress.setValue(self._step)
        if self._activity is not None:
            self._activity.set(self._step)

    def _offer(self, path: str | None) -> None:
        from napari_ssl.checkpoint import is_checkpoint

        if path and is_checkpoint(path):
            checkpoint_hub().publish(path, "segment")

    def _on_error(self, exc: Exception) -> None:
        self.status.setText("failed")
        show_error(str(exc) if isinstance(exc, RunFailed) else f"Fine-tune failed: {exc}")

    def _on_finished(self) -> None:
        self._timer.stop()
        self._show_step()
        if self._activity is not None:
            self._activity.close()
            self._activity = None
        self.relay = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
