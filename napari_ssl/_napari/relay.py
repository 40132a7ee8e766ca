"""Relay a child-process run to the GUI: a napari ``thread_worker`` that reads :class:`~napari_ssl.runner.Runner`.

The docks never train or segment in the viewer's process (GPU memory would stay held, the GUI would stutter).
They run ``"module:function"(config)`` in a child process through :class:`~napari_ssl.runner.Runner` (the
same code path as the CLI; a clean entry point, forked from a warm worker where possible) and a thin
generator worker relays each event to the GUI thread::

    relay = Relay("napari_ssl.training.pretrain:pretrain", config, label="Pretraining")
    relay.worker.yielded.connect(on_event)       # Started / Progress / Saved / Finished / Stopped
    relay.worker.errored.connect(on_error)       # RunFailed: the child raised, crashed or was killed
    relay.worker.finished.connect(on_done)       # always last; the child has ended by then
    relay.start()                                # connect first, then start
    ...
    relay.stop()       # cancel: the child closes its generator (which saves), else terminated after stop_timeout
    relay.shutdown()   # viewer closing: stop, wait a bounded time, terminate; returns when the child is gone

Generic: the Fine-tune and Segment docks use it too. Nothing here touches a widget; the worker thread only
waits on the child's socket (releasing the GIL) and unpickles small events. Nothing on the GUI thread waits:
:meth:`Relay.stop` and :meth:`Relay.terminate` only set flags that the worker thread acts on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker

from napari_ssl.events import Stopped
from napari_ssl.runner import ChildCrashed, Runner, RunnerError

__all__ = ["Relay", "RelayWorker", "RunFailed"]


class RunFailed(Exception):
    """A relayed run failed; the message says why in words (this is what the napari notification shows).

    Not a ``RuntimeError`` on purpose: superqt's generator worker treats a ``RuntimeError`` as "the worker
    was deleted" and would skip the ``finished`` signal.

    Attributes
    ----------
    error_type : str
        The child's exception type (``"FileNotFoundError"``, ``"ChildCrashed"``, ...).
    reason : str
        The child's message.
    crashed : bool
        True when the child died without reporting (killed from outside, out of memory).
    child_traceback : str
        The child's formatted traceback ("" for a crash).
    """

    def __init__(self, label: str, error: RunnerError) -> None:
        self.error_type = error.error_type
        self.reason = error.message
        self.crashed = isinstance(error, ChildCrashed)
        self.child_traceback = error.child_traceback
        if self.crashed:
            text = f"{label} failed: {error.message}"
        else:
            text = (
                f"{label} failed: {error.error_type}: {error.message}"
                if error.error_type
                else f"{label} failed: {error.message}"
            )
        super().__init__(text)


class RelayWorker(GeneratorWorker):
    """A generator worker whose :meth:`quit` means *stop and save*, not *drop the relay*.

    napari cancels running tasks with ``worker.quit()`` when its window closes; an abort would leave the
    child running unattended, so here quit asks the child to stop (it saves) and the worker keeps relaying
    until the child has ended. ``relay`` is set by :class:`Relay`.
    """

    relay: Relay | None = None

    def quit(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        else:  # pragma: no cover - a bare RelayWorker
            super().quit()


def _relay_events(relay: Relay) -> Iterator[Any]:
    """Body of the worker thread: build the config, start the child, yield its events, leave no child behind."""
    runner: Runner | None = None
    try:
        config = relay.make_config() if relay.make_config is not None else relay.config
        if relay._cancel_before_start:
            return
        runner = Runner(relay.target, config, stop_timeout=relay.stop_timeout, poll_interval=relay.poll_interval)
        relay.runner = runner
        if relay._terminated:  # a cancel raced with the line above: the flags are read again by the runner
            runner.request_kill()
        elif relay._cancel_before_start:
            runner.stop()
        relay.started_at = time.monotonic()
        runner.start()  # hands the config over by file; a cancel meanwhile ends it early
        relay.config = config
        if relay.prepare is None:
            yield from runner.events()
        else:  # e.g. build a result's napari layer here, off the GUI thread
            for event in runner.events():
                yield relay.prepare(event)
    except RunnerError as exc:
        if relay._terminated:  # killed on purpose (cancel before anything was trained, or shutdown)
            yield Stopped(path=None)
            return
        relay.error = RunFailed(relay.label, exc)
        raise relay.error from None
    except (ValueError, OSError) as exc:  # the config was refused before any process started
        relay.error = RunFailed(relay.label, RunnerError(type(exc).__name__, str(exc)))
        raise relay.error from None
    finally:
        try:
            if runner is not None and runner.is_alive():  # the generator was closed early: no orphan
                runner.stop()
                runner.join(timeout=relay.stop_timeout)
                runner.terminate()
        finally:
            relay._done.set()


def _notify_error(exc: BaseException) -> None:
    from napari.utils.notifications import show_error

    show_error(str(exc))


class Relay:
    """One child-process run relayed to the GUI thread by a napari generator worker.

    Parameters
    ----------
    target : str
        ``"module:function"`` run in the child, e.g. ``"napari_ssl.training.pretrain:pretrain"``.
    config : object
        Picklable argument of ``target`` (a frozen config dataclass; in-memory volumes travel pickled with it).
    make_config : callable, optional
        Instead of ``config``: called in the worker thread to build it, so a slow validation (imports) never
        blocks the GUI; a ``ValueError`` / ``OSError`` it raises is reported like a child's error.
    label : str
        Names the run in error messages (``"Pretraining failed: ..."``).
    stop_timeout : float
        Seconds a stop request waits for the child to save and end before it is terminated.
    poll_interval : float
        How often the worker checks that the child is alive while waiting for an event.
    notify : bool
        Also show a failure as a napari error notification with the reason (``"Pretraining failed: ..."``);
        leave False when the ``errored`` slot shows it.
    prepare : callable, optional
        Called in the worker thread on each event before it is yielded (its return value is yielded): slow
        work on a result (building a napari layer, counting voxels) stays off the GUI thread.

    Attributes
    ----------
    worker : RelayWorker
        Connect ``yielded`` (each event), ``errored`` (:class:`RunFailed`), ``finished`` before :meth:`start`.
    runner : napari_ssl.runner.Runner or None
        Created in the worker thread, just before the child is spawned.
    error : RunFailed or None
        Set when the run failed.
    """

    def __init__(
        self,
        target: str,
        config: Any = None,
        *,
        make_config: Callable[[], Any] | None = None,
        label: str = "Run",
        stop_timeout: float = 10.0,
        poll_interval: float = 0.1,
        notify: bool = False,
        prepare: Callable[[Any], Any] | None = None,
    ) -> None:
        if ":" not in str(target):
            raise ValueError(f"target must be 'module:function', got {target!r}")
        if (config is None) == (make_config is None):
            raise ValueError("give either config or make_config")
        self.target = str(target)
        self.config = config
        self.make_config = make_config
        self.prepare = prepare
        self.label = label
        self.stop_timeout = float(stop_timeout)
        self.poll_interval = float(poll_interval)
        self.runner: Runner | None = None
        self.error: RunFailed | None = None
        self.started_at: float | None = None
        self._done = threading.Event()
        self._cancel_before_start = False
        self._terminated = False
        self._started = False
        worker = create_worker(
            _relay_events, self, _start_thread=False, _worker_class=RelayWorker, _ignore_errors=True
        )
        worker.relay = self
        # napari's notifying mixin is not wired for generator workers here: show the reason in words ourselves
        if notify:
            worker.errored.connect(_notify_error)
        self.worker: RelayWorker = worker  # type: ignore[assignment]

    # ------------------------------------------------------------ control (GUI thread)
    def start(self) -> Relay:
        """Start the worker thread (which spawns the child). Connect the worker's signals first."""
        self._started = True
        self.worker.start()
        return self

    @property
    def pid(self) -> int | None:
        """The child's process id once started."""
        return None if self.runner is None else self.runner.pid

    @property
    def done(self) -> bool:
        """True once the worker has left its generator (the child has ended)."""
        return self._done.is_set()

    def is_alive(self) -> bool:
        """True while the child process runs."""
        return self.runner is not None and self.runner.is_alive()

    def stop(self) -> None:
        """Cancel: ask the child to close its generator (it saves a checkpoint); returns at once.

        Only sets flags (no lock, no pipe write), so a GUI slot may call it. The worker thread sends the
        request; the child is terminated if it has not ended ``stop_timeout`` seconds later. Before the
        child runs (a server starting, a large input being handed over) the run simply does not start.
        """
        self._cancel_before_start = True
        runner = self.runner
        if runner is not None:
            runner.stop()

    def terminate(self) -> None:
        """Kill the child (nothing is saved); returns at once: the worker kills it, reports
        :class:`Stopped` and finishes."""
        self._terminated = True
        self._cancel_before_start = True
        runner = self.runner
        if runner is not None:
            runner.request_kill()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker is done with the child (True) or ``timeout`` seconds pass (False)."""
        return self._done.wait(timeout)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop, wait up to ``timeout`` (default ``stop_timeout`` + 2 s) for the save, then terminate.

        For a closing viewer: bounded, and no child is left behind when it returns.
        """
        if not self._started or self.done:
            return
        self.stop()
        if not self.wait(self.stop_timeout + 2.0 if timeout is None else timeout):
            self.terminate()
            self.wait(5.0)
