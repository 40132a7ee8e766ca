"""Run an event generator in a child process (spawn) and relay its events; used by the napari docks.

Training inside the viewer's process holds GPU memory and makes the GUI stutter, so the docks start
the engine here and relay the events from a ``thread_worker``::

    runner = Runner("napari_ssl.engine:pretrain", config).start()
    for event in runner:          # blocks; ends after the generator ends
        ...                       # Started, Progress, Saved, Finished, or Stopped after runner.stop()
    runner.stop()                 # from another thread: close the generator (it saves), then end

- ``target`` is ``"module:function"``; ``function(config)`` must return an iterator of picklable events
  (``config`` must be picklable too: a frozen dataclass of plain values and arrays).
- :meth:`Runner.stop` asks the child to close the generator after its current event (the engine saves a
  checkpoint in its ``finally`` block) and to send :class:`~napari_ssl.events.Stopped`; if the child has not
  ended ``stop_timeout`` seconds later it is terminated.
- An exception in the child is raised in the parent as :class:`RunnerError` (type, message and the child's
  traceback); a child that dies (killed from outside, out of memory) raises :class:`ChildCrashed`
  instead of hanging. The child also closes its generator and exits when the parent process dies.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import multiprocessing as mp
import pickle
import queue
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from napari_ssl.events import Stopped

_LIVE: weakref.WeakSet[Runner] = weakref.WeakSet()


class RunnerError(RuntimeError):
    """The child raised ``error_type: message``; ``child_traceback`` is its formatted traceback."""

    def __init__(self, error_type: str, message: str, child_traceback: str = "") -> None:
        super().__init__(f"{error_type}: {message}" if error_type else message)
        self.error_type = error_type
        self.message = message
        self.child_traceback = child_traceback


class ChildCrashed(RunnerError):
    """The child process ended without finishing (killed, crashed, out of memory)."""


def resolve_target(target: str) -> Any:
    """The function named ``"package.module:function"``."""
    module_name, sep, attr = str(target).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"target must be 'module:function', got {target!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"target {target!r} is not callable")
    return obj


def _child_main(target: str, config: Any, channel: Any, stop: Any) -> None:  # pragma: no cover - in child
    """Body of the child process: iterate ``target(config)`` and send every event."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides (stop / terminate)
    parent = mp.parent_process()

    def send(*message: Any) -> None:
        channel.put(message)

    gen = None
    try:
        gen = resolve_target(target)(config)
        for event in gen:
            try:
                payload = pickle.dumps(event)
            except Exception as exc:
                raise TypeError(f"event {event!r} cannot be sent to the parent: {exc}") from exc
            send("event", payload)
            orphaned = parent is not None and not parent.is_alive()
            if stop.is_set() or orphaned:
                gen.close()  # the generator's finally block saves
                out = config.get("out") if isinstance(config, Mapping) else getattr(config, "out", None)
                send("event", pickle.dumps(Stopped(path=None if out is None else str(out))))
                break
    except BaseException as exc:  # report everything, including SystemExit from the target
        send("error", type(exc).__name__, str(exc), traceback.format_exc())
    finally:
        send("done")
        channel.close()
        channel.join_thread()


class Runner:
    """One child process running ``target(config)``; iterate it for the events.

    Parameters
    ----------
    target : str
        ``"module:function"``, e.g. ``"napari_ssl.engine:pretrain"`` or ``"napari_ssl.engine:finetune"``.
    config : object
        Picklable argument of the function.
    stop_timeout : float
        Seconds :meth:`stop` waits for the child to save and end before terminating it.
    poll_interval : float
        How often (seconds) the iterator checks that the child is alive while waiting.
    """

    def __init__(
        self, target: str, config: Any, *, stop_timeout: float = 120.0, poll_interval: float = 0.2
    ) -> None:
        if ":" not in str(target):
            raise ValueError(f"target must be 'module:function', got {target!r}")
        self.target = str(target)
        self.config = config
        self.stop_timeout = float(stop_timeout)
        self.poll_interval = float(poll_interval)
        self._ctx = mp.get_context("spawn")
        self._channel: Any = None
        self._stop: Any = None
        self._process: Any = None
        self._stop_requested_at: float | None = None
        self._done = False
        self._deadline: float | None = None
        self._lock = threading.Lock()
        self.exitcode: int | None = None

    # ------------------------------------------------------------ control
    def start(self) -> Runner:
        """Start the child process (returns ``self``)."""
        if self._process is not None:
            raise RuntimeError("this runner was already started")
        self._channel = self._ctx.Queue()
        self._stop = self._ctx.Event()
        self._process = self._ctx.Process(
            target=_child_main,
            args=(self.target, self.config, self._channel, self._stop),
            name="napari-ssl-runner",
        )
        self._process.start()
        _LIVE.add(self)
        return self

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def is_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def stop(self) -> None:
        """Ask the child to close its generator (which saves) and end; it is terminated after ``stop_timeout``.

        Safe to call from any thread; returns at once. Iterate the runner (or :meth:`join`) to wait.
        """
        with self._lock:
            if self._stop is not None and self._stop_requested_at is None:
                self._stop.set()
                self._stop_requested_at = time.monotonic()

    def terminate(self) -> None:
        """Kill the child now (no checkpoint is saved)."""
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
        self._finish()

    def join(self, timeout: float | None = None) -> int | None:
        """Wait for the child to end, relaying nothing (events are drained and dropped); returns the exit code."""
        self._deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for _ in self:
                pass
        except RunnerError:
            pass
        finally:
            self._deadline = None
        return self.exitcode

    def _finish(self) -> None:
        if self._process is not None and not self._process.is_alive():
            self._process.join(1)
            self.exitcode = self._process.exitcode
        self._done = True

    # ------------------------------------------------------------ events
    def __iter__(self) -> Iterator[Any]:
        return self.events()

    def events(self) -> Iterator[Any]:
        """Yield the child's events until it ends; raise :class:`RunnerError` / :class:`ChildCrashed`."""
        if self._process is None:
            self.start()
        stopped_seen = False
        while not self._done:
            try:
                message = self._channel.get(timeout=self.poll_interval)
            except queue.Empty:
                if self._deadline is not None and time.monotonic() > self._deadline:
                    return  # join(timeout) ran out; the child keeps running
                if (
                    self._stop_requested_at is not None
                    and time.monotonic() - self._stop_requested_at > self.stop_timeout
                ):
                    self.terminate()
                    if not stopped_seen:
                        yield Stopped(path=None)
                    return
                if not self._process.is_alive():
                    message = self._drain_one()
                    if message is None:
                        self._finish()
                        code = self.exitcode
                        how = (
                            f"killed by signal {-code}"
                            if code is not None and code < 0
                            else f"exit code {code}"
                        )
                        raise ChildCrashed(
                            "ChildCrashed",
                            f"the training process ended unexpectedly ({how}) without finishing",
                        ) from None
                else:
                    continue
            kind = message[0]
            if kind == "event":
                event = pickle.loads(message[1])  # our own child: trusted
                stopped_seen = stopped_seen or isinstance(event, Stopped)
                yield event
            elif kind == "error":
                self._process.join(10)
                self._finish()
                raise RunnerError(message[1], message[2], message[3])
            elif kind == "done":
                self._process.join(30)
                if self._process.is_alive():  # pragma: no cover - a hung interpreter shutdown
                    self._process.terminate()
                    self._process.join(5)
                self._finish()

    def _drain_one(self) -> Any:
        try:
            return self._channel.get(timeout=0.5)
        except queue.Empty:
            return None

    # ------------------------------------------------------------ context manager
    def __enter__(self) -> Runner:
        if self._process is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.is_alive():
            self.stop()
            deadline = time.monotonic() + self.stop_timeout
            try:
                for _ in self:
                    if time.monotonic() > deadline:
                        break
            except RunnerError:
                pass
            self.terminate()


@atexit.register
def _terminate_all() -> None:  # pragma: no cover - interpreter exit
    for runner in list(_LIVE):
        with contextlib.suppress(Exception):
            runner.terminate()


__all__ = ["ChildCrashed", "Runner", "RunnerError", "resolve_target"]
