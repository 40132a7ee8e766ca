"""The Pretrain dock: pretraining from napari in a child process, with progress, live losses, cancel and resume.

The dock never trains in the viewer's process. Start collects the form's values
(:mod:`~napari_ssl._napari.pretrain.form`) and hands them to a :class:`~napari_ssl._napari.relay.Relay`:
:mod:`napari_ssl.runner` starts a child from a clean entry point, forked from a warm worker where possible
(the CLI's code path: :func:`napari_ssl.training.pretrain.pretrain`, see :mod:`~napari_ssl._napari.jobs`) and
a napari thread worker relays its events to slots on the GUI thread, which update the progress bar (step, samples/s, ETA), the live loss plot
(:class:`~napari_ssl._napari.plot.CurvePlot`, one curve per pretext), the metrics and the last checkpoint.

- Cancel asks the child to stop at its next step; it saves a checkpoint and ends (terminated if it has not
  within ``STOP_TIMEOUT`` s). Before the first step there is nothing to save and the child is ended at once.
- Resume continues the last checkpoint (or the one in *resume from*) up to *steps*.
- Closing the viewer stops the run the same way and waits (bounded) for the child to save and end.
- Errors in the child (bad folder, unreadable scan, out of memory, a crash) become a napari notification with
  the reason; the dock returns to ready. No child process is left behind in any case.
- A finished run shows a notification and is published on the checkpoint hub
  (:mod:`~napari_ssl._napari.hub`), where the Fine-tune dock picks it up as its starting point.
- Each pretext keeps one colour in the loss plot (after Resume too); held-out metrics are shown in words;
  with ``NAPARI_SSL_ACTIVITY=1`` the run also appears in napari's activity dock.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_ssl._napari.activity import Activity
from napari_ssl._napari.dock import JobDock
from napari_ssl._napari.hub import checkpoint_hub
from napari_ssl._napari.jobs import PRETRAIN, ConfigRequest
from napari_ssl._napari.plot import CurvePlot
from napari_ssl._napari.pretrain.form import PretrainForm
from napari_ssl._napari.relay import Relay, RunFailed
from napari_ssl._napari.widgets import (
    ProgressBar,
    TextLine,
    metric_words,
    pretext_colors,
    scrolled,
)
from napari_ssl.events import Finished, Preparing, Progress, Saved, Started, Stopped
from napari_ssl.plan import DEFAULT_BATCH

if TYPE_CHECKING:
    import napari

__all__ = ["STOP_TIMEOUT", "UPDATE_MS", "PretrainDock"]

#: the bar, texts and plot are refreshed together at most this often (ms), as one repaint: every repaint of a
#: dock widget recomposites napari's window (OpenGL canvas included; 20-40 ms in software GL), so the refresh
#: asks for no synchronous repaint and no layout (widgets.ProgressBar, widgets.TextLine): one composite a tick
UPDATE_MS = 500
#: seconds a cancelled child may take to save and end before it is terminated
STOP_TIMEOUT = 10.0


def _clock(seconds: float) -> str:
    seconds = int(max(0, round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _CloseWatcher(QObject):
    """Event filter on the viewer's main window: stops the run when the window really closes."""

    def __init__(self, dock: PretrainDock) -> None:
        super().__init__(dock)
        self.dock = dock
        self._closing = False

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind == QEvent.Type.Close:
            if event.spontaneous():  # the user: napari may still ask to confirm; act once it hides
                self._closing = True
            else:  # programmatic (viewer.close()): it will close
                self.dock.shutdown()
        elif kind == QEvent.Type.Hide and self._closing and not event.spontaneous():
            self.dock.shutdown()
        elif kind == QEvent.Type.Show:
            self._closing = False
        return False


class PretrainDock(JobDock):
    """Dock widget: the form, Start / Cancel / Resume, progress, live loss plot, metrics, checkpoint.

    Attributes
    ----------
    form : PretrainForm
    relay : Relay or None
        The running relay (``relay.worker.finished`` is what tests wait on); ``None`` when ready.
    plot : CurvePlot
    last_checkpoint : str or None
        The last checkpoint saved by a run of this dock.
    outcome : str
        ``"ready"``, ``"running"``, ``"finished"``, ``"cancelled"`` or ``"failed"``.
    events : list
        The events of the current (or last) run, in order.
    run_started, run_ended : Signal
        ``run_started(Relay)`` after Start; ``run_ended(str outcome)`` once the child has ended.
    """

    run_started = Signal(object)
    run_ended = Signal(str)

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.relay: Relay | None = None
        self.last_checkpoint: str | None = None
        self.outcome = "ready"
        self.events: list[Any] = []
        self._closed = False
        self._watcher: _CloseWatcher | None = None
        self._batch = 1
        self._world = 1
        self._trained = False
        self._rate = ""  # the last "N samples/s" shown, kept on the bar when the run ends
        self._t0 = 0.0
        self._latest: Progress | None = None
        self._text_timer = QTimer(self)
        self._text_timer.setSingleShot(True)
        self._text_timer.setInterval(UPDATE_MS)
        self._text_timer.timeout.connect(self._show_progress)

        self.form = PretrainForm(viewer)
        self.start_button = QPushButton("Start")
        self.cancel_button = QPushButton("Cancel")
        self.resume_button = QPushButton("Resume")
        self.start_button.setToolTip("Start pretraining in a background process")
        self.cancel_button.setToolTip("Stop at the next step and save a checkpoint")
        self.resume_button.setToolTip("Continue the last checkpoint up to 'steps'")
        self.start_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(self.cancel)
        self.resume_button.clicked.connect(self.resume)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.cancel_button, self.resume_button):
            buttons.addWidget(button)

        self.progress = ProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("ready")
        self.progress.setTextVisible(True)
        self.status = QLabel("ready")
        self.status.setWordWrap(True)
        # changes twice a second: a QLabel would lay the window's dock area out again each time (TextLine)
        self.losses_label = TextLine()
        self.metrics_label = QLabel("")
        self.metrics_label.setWordWrap(True)
        self.checkpoint_label = QLabel("checkpoint: none yet")
        self.checkpoint_label.setWordWrap(True)
        self.checkpoint_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.plot = CurvePlot(
            ylabel="loss", title="training loss per pretext", auto=False, series_colors=pretext_colors(), height=120
        )
        self._activity: Activity | None = None

        # one scroll area: the run's outputs under the form (Start scrolls to them), so the dock stays short
        # enough to share a laptop screen's height with another dock until it joins them as a tab
        inner = QWidget()
        inner_layout = QVBoxLayout(inner)
        inner_layout.setContentsMargins(0, 0, 0, 0)
        inner_layout.addWidget(self.form)
        for widget in (self.plot, self.metrics_label, self.checkpoint_label):
            inner_layout.addWidget(widget)
        self.scroll = scrolled(inner, 150)
        layout = QVBoxLayout(self)
        layout.addWidget(self.scroll, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.losses_label)
        layout.addWidget(self.status)
        self._set_running(False)

    # ------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        return self.relay is not None

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.resume_button.setEnabled(not running and self.last_checkpoint is not None)
        self.cancel_button.setEnabled(running)
        # the form stays editable (its values are read at Start only): disabling it re-polishes every child
        # widget under napari's style sheet, a ~0.3 s stall on a busy 2-core CPU

    # ------------------------------------------------------------ control
    def start(self, *, resume: str | None = None) -> Relay | None:
        """Start a run from the form (``resume``: continue that checkpoint). Returns the relay, or ``None``
        when the inputs are refused (a notification says why) or a run is already going."""
        if self.relay is not None or self._closed:
            return None
        try:
            kwargs = self.form.collect(resume=resume)
        except (ValueError, OSError) as exc:
            show_error(f"Pretrain: {exc}")
            return None
        self._watch_window()
        self.events = []
        self._batch, self._world, self._trained = kwargs["batch_size"] or DEFAULT_BATCH, 1, False  # auto: see Started
        self._latest = None
        self._rate = ""
        self.plot.clear()
        if kwargs["resume"]:
            self._load_history(kwargs["resume"])
        self.plot.set_xrange(0, kwargs["steps"])
        self.plot.redraw()
        self.metrics_label.setText("")
        self.losses_label.setText("")
        # the config is built in the child: validating it imports MONAI, which would stall this process
        relay = Relay(
            PRETRAIN, ConfigRequest(kwargs), label="Pretraining", stop_timeout=STOP_TIMEOUT, notify=True
        )
        worker = relay.worker
        worker.yielded.connect(self._on_event)  # connect before start
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.relay = relay
        self.outcome = "running"
        self._set_running(True)
        # not Qt's animated busy bar: each of its ~20 frames a second recomposites the whole window
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("starting the training process…")
        self.status.setText(f"starting the training process ({', '.join(kwargs['pretexts'])}) …")
        self._t0 = time.monotonic()
        self.scroll.ensureWidgetVisible(self.plot)
        self._activity = Activity("Pretraining", total=kwargs["steps"])
        relay.start()
        self.run_started.emit(relay)
        return relay

    def resume(self) -> Relay | None:
        """Continue the last checkpoint (or the form's *resume from*) up to *steps*."""
        path = self.last_checkpoint or self.form.resume.path
        if not path:
            show_error("Pretrain: nothing to resume (no checkpoint yet)")
            return None
        return self.start(resume=path)

    def cancel(self) -> None:
        """Stop at the next step and save; before the first step the child is simply ended."""
        if self.relay is None:
            return
        self.cancel_button.setEnabled(False)
        self.outcome = "cancelled"
        if self._trained:
            self.status.setText("stopping: saving a checkpoint …")
            self.relay.stop()
        else:
            self.status.setText("cancelled before training started")
            self.relay.terminate()

    def shutdown(self) -> None:
        """The viewer is closing: stop the run, let the child save (bounded wait), leave no process behind."""
        if self._closed:
            return
        self._closed = True
        self._text_timer.stop()
        if self._activity is not None:
            self._activity.close()
            self._activity = None
        relay, self.relay = self.relay, None
        if relay is None:
            return
        for signal, slot in (
            (relay.worker.yielded, self._on_event),
            (relay.worker.errored, self._on_error),
            (relay.worker.finished, self._on_finished),
        ):
            with contextlib.suppress(TypeError, RuntimeError):  # already gone
                signal.disconnect(slot)
        relay.shutdown()

    def _watch_window(self) -> None:
        window = self.window()
        if self._watcher is None and window is not None and window is not self:
            self._watcher = _CloseWatcher(self)
            window.installEventFilter(self._watcher)

    # ------------------------------------------------------------ events (GUI thread)
    def _on_preparing(self, event: Preparing) -> None:
        """The prepared dataset's build, a stage of its own: the bar counts scans, with an ETA; the last event says
        what was built, reused and skipped (the skipped files' reasons in a notification and ``skipped.txt``)."""
        total = max(1, event.total)
        self.progress.setRange(0, total)
        self.progress.setValue(event.done)
        eta = f" · ETA {_clock(event.eta_s)}" if event.eta_s > 0 and event.done < event.total else ""
        self.progress.setFormat(f"preparing scans {event.done}/{event.total}{eta}")
        reused = event.done - event.built - event.skipped
        words = f"prepared {event.built} scan(s), reused {max(0, reused)}"
        if event.skipped:
            words += f", skipped {event.skipped}"
        self.status.setText(f"{words} (kept in {event.folder} for the next run)" if event.final and event.folder
                            else f"preparing the scans once for every run: {event.done} of {event.total}")
        if event.final and event.skipped and event.summary:
            show_warning(f"Pretrain: {event.summary}")

    def _on_event(self, event: Any) -> None:
        if self._closed:
            return
        self.events.append(event)
        if isinstance(event, Progress):
            self._on_progress(event)
        elif isinstance(event, Preparing):
            self._on_preparing(event)
        elif isinstance(event, Started):
            self._world = max(1, event.world_size)
            self._batch = int(event.batch_size or self._batch)  # the batch the run uses (auto resolved)
            self.progress.setRange(event.start_step, event.total)
            self.progress.setValue(event.start_step)
            self.progress.setFormat(f"step {event.start_step}/{event.total}")
            self.plot.set_xrange(0, event.total)
            startup = time.monotonic() - self._t0
            self.status.setText(
                f"training on {event.device}: {event.n_train} scan(s), {event.n_val} held out, "
                f"{event.n_parameters:,} parameters (ready in {startup:.1f} s)"
            )
        elif isinstance(event, Saved):
            self._set_checkpoint(event.path, f"step {event.step}")
        elif isinstance(event, Finished):
            self._show_progress()
            self.outcome = "finished"
            if event.step < self.progress.maximum():  # a time budget ended it early: the bar and curves end there
                self.progress.setMaximum(max(event.step, self.progress.minimum() + 1))
                self.plot.set_xrange(0, max(event.step, 1))
            self.progress.setValue(event.step)
            if event.metrics:
                self.metrics_label.setText(
                    "held out: " + "; ".join(metric_words(k, v) for k, v in event.metrics.items())
                )
            if event.path:
                self._set_checkpoint(event.path, f"step {event.step}, finished")
                checkpoint_hub().publish(event.path, "pretrain")
            show_info(f"Pretraining finished at step {event.step}; checkpoint: {event.path}")
        elif isinstance(event, Stopped):
            self._show_progress()
            self.outcome = "cancelled"
            if event.path and self._trained:
                self._set_checkpoint(event.path, f"step {self.progress.value()}, cancelled")
                self.status.setText(
                    f"cancelled at step {self.progress.value()}; checkpoint saved (Resume continues it)"
                )

    def _on_progress(self, event: Progress) -> None:
        self._trained = True
        curves = {k: v for k, v in event.losses.items() if "/" not in k} or {"loss": event.loss}
        self.plot.add_many(event.step, curves)
        self._latest = event
        if not self._text_timer.isActive():  # bar, texts and plot: one grouped repaint per UPDATE_MS
            self._text_timer.start()

    def _show_progress(self) -> None:
        event, self._latest = self._latest, None
        if event is None or self._closed:
            return
        self.plot.redraw()
        self.progress.setMaximum(event.total)
        self.progress.setValue(event.step)
        rate = event.samples_per_s
        steps_per_s = rate / (self._batch * self._world) if rate > 0 else 0.0
        eta = _clock((event.total - event.step) / steps_per_s) if steps_per_s > 0 else "?"
        self._rate = f"{rate:.1f} samples/s"
        self.progress.setFormat(f"step {event.step}/{event.total} · {self._rate} · ETA {eta}")
        if self._activity is not None:
            self._activity.set(event.step, event.total)
        parts = " · ".join(f"{k} {v:.3g}" for k, v in event.losses.items())
        self.losses_label.setText(
            f"loss {event.loss:.4g}" + (f" ({parts})" if parts else "") + f" · lr {event.lr:.2g}"
        )

    def _set_checkpoint(self, path: str, what: str) -> None:
        self.last_checkpoint = str(path)
        self.checkpoint_label.setText(f"checkpoint ({what}): {path}")

    def _on_error(self, exc: BaseException) -> None:
        # the relay already shows the notification (the reason in words)
        if self._closed:
            return
        self.outcome = "failed"
        self.status.setText(str(exc) if isinstance(exc, RunFailed) else f"Pretraining failed: {exc}")

    def _on_finished(self) -> None:
        if self._closed:
            return
        self._text_timer.stop()
        self._show_progress()
        self.plot.redraw()
        if self._activity is not None:
            self._activity.close()
            self._activity = None
        relay, self.relay = self.relay, None
        if self.outcome == "running":  # ended without Finished / Stopped / error
            self.outcome = "cancelled"
        self.progress.setRange(0, max(1, self.progress.maximum()))
        if self.outcome == "failed":
            self.progress.setFormat("failed")
        elif self.outcome == "cancelled" and not self._trained:
            self.progress.setFormat("cancelled")
        elif self.outcome in ("cancelled", "finished"):  # the last rate stays; no ETA on a run that ended
            self.progress.setFormat(" · ".join(filter(None, [f"{self.outcome} at step {self.progress.value()}", self._rate])))
        if self.outcome == "finished":
            self.status.setText(f"finished in {_clock(time.monotonic() - self._t0)}; ready")
        self._set_running(False)
        del relay
        self.run_ended.emit(self.outcome)

    def _load_history(self, path: str) -> None:
        """Show the loss history of the checkpoint being resumed."""
        from napari_ssl import checkpoint

        try:
            history = checkpoint.open_checkpoint(path).history
        except (ValueError, OSError):
            return  # the child reports a bad checkpoint in words
        for name, values in history.items():
            if "/" not in name and name != "loss":
                self.plot.set_series(name, list(range(1, len(values) + 1)), list(values))
