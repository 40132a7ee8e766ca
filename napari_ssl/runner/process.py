"""Run an event generator in a child process and relay its events; used by the napari docks.

Training inside the viewer's process holds GPU memory and makes the GUI stutter, so the docks start
the engine here and relay the events from a ``thread_worker``::

    runner = Runner("napari_ssl.training.pretrain:pretrain", config).start()
    for event in runner:          # blocks; ends after the generator ends
        ...                       # Started, Progress, Saved, Finished, or Stopped after runner.stop()
    runner.stop()                 # from any thread, returns at once: close the generator (it saves), then end

- Children start from a clean entry point (:mod:`napari_ssl.runner.server`), never through
  ``multiprocessing``'s spawn: a user's napari script without ``if __name__ == "__main__"`` is never re-run.
- Warm start: on Linux one server process per viewer process imports torch, MONAI and the engine once
  (:data:`PRELOAD`) and forks a fresh child per run; the child exits after its run, so its GPU memory is
  given back. Elsewhere (or with ``NAPARI_SSL_WARM=0``) each run starts its own process.
- ``target`` is ``"module:function"``; ``function(config)`` must return an iterator of picklable events.
  ``config`` travels by a temporary file written by :meth:`Runner.start` (large arrays out of band, in
  chunks), so a cancel while a large in-memory scan is being handed over is noticed at once.
- :meth:`Runner.stop` and :meth:`Runner.request_kill` only set flags (no lock, no pipe write): safe on a GUI
  thread. The thread iterating the runner sends the stop request, and terminates the child if it has not
  ended ``stop_timeout`` seconds later.
- An exception in the child is raised in the parent as :class:`RunnerError` (type, message and the child's
  traceback); a child that dies (killed from outside, out of memory) raises :class:`ChildCrashed`
  instead of hanging. The child also closes its generator (saving) when the parent process dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from napari_ssl.events import Stopped
from napari_ssl.runner.pool import (
    ChildCrashed,
    RunnerError,
    Server,
    prewarm,
    shutdown_server,
    warm_allowed,
    warm_server,
)
from napari_ssl.runner.server import InputCancelled, resolve_target, write_input

__all__ = ["ChildCrashed", "Runner", "RunnerError", "prewarm", "resolve_target", "shutdown_server"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True


# ---------------------------------------------------------------- the runner
class Runner:
    """One child process running ``target(config)``; iterate it for the events.

    Parameters
    ----------
    target : str
        ``"module:function"``, e.g. ``"napari_ssl.training.pretrain:pretrain"`` or ``"napari_ssl.training.finetune:finetune"``.
    config : object
        Picklable argument of the function (large numpy arrays are fine: they travel by file).
    stop_timeout : float
        Seconds a stop request waits for the child to save and end before terminating it.
    poll_interval : float
        How often (seconds) the iterating thread checks flags and the child while waiting for an event.
    warm : bool, optional
        Use the shared warm server (default: where fork is available, see the module docstring).

    Attributes
    ----------
    exitcode : int or None
        The child's exit code once it has ended.
    timings : dict
        ``"ready"``: seconds from :meth:`start` to the child running the target (before its first event).
    """

    def __init__(
        self,
        target: str,
        config: Any,
        *,
        stop_timeout: float = 120.0,
        poll_interval: float = 0.2,
        warm: bool | None = None,
    ) -> None:
        if ":" not in str(target):
            raise ValueError(f"target must be 'module:function', got {target!r}")
        self.target = str(target)
        self.config = config
        self.stop_timeout = float(stop_timeout)
        self.poll_interval = float(poll_interval)
        self.warm = warm_allowed() if warm is None else bool(warm) and warm_allowed()
        self.exitcode: int | None = None
        self.timings: dict[str, float] = {}
        self._server: Server | None = None
        self._conn: Connection | None = None
        self._pid: int | None = None
        self._started = False
        self._done = False
        self._cancelled_early = False
        self._deadline: float | None = None
        # flags set from any thread (a GUI slot included): plain attributes, read by the iterating thread
        self._stop_requested_at: float | None = None
        self._kill_requested = False
        self._stop_sent = False

    # ------------------------------------------------------------ control
    def start(self) -> Runner:
        """Start the child and hand it the config (returns ``self``; a stop asked meanwhile ends it early).

        Blocks while a server starts (imports) and while the config is written: call it off the GUI thread.
        """
        if self._started:
            raise RuntimeError("this runner was already started")
        self._started = True
        t0 = time.monotonic()
        server = warm_server() if self.warm else Server(False, ())
        self._server = server
        if not server.wait_ready(self._stopping):
            return self._end_early()
        conn = self._conn = server.connect()
        _hello, pid = conn.recv()
        self._pid = int(pid)
        path = server.folder / f"input-{uuid.uuid4().hex}.pkl"
        try:
            write_input(self.config, path, self._stopping)
        except InputCancelled:
            return self._end_early()
        try:
            conn.send(("run", self.target, str(path), list(sys.path)))
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self.timings["ready"] = time.monotonic() - t0
        return self

    def _stopping(self) -> bool:
        return self._stop_requested_at is not None or self._kill_requested

    def _end_early(self) -> Runner:
        """Cancelled before the target ran: the child (if any) exits on the closed connection."""
        self._cancelled_early = True
        self._close_conn()
        if self._pid is not None:
            self._wait_gone(5.0)
            self.exitcode = self._exit_code()
        elif self._server is not None and not self._server.fork:
            self._server.close()
        self._done = True
        return self

    @property
    def pid(self) -> int | None:
        return self._pid

    def is_alive(self) -> bool:
        if self._pid is None:
            return False
        if self._server is not None and self._server.exit_code(self._pid) is not None:
            return False
        return _pid_alive(self._pid)

    def stop(self) -> None:
        """Ask the child to close its generator (which saves) and end; returns at once, from any thread."""
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()

    def request_kill(self) -> None:
        """Ask the iterating thread to kill the child now (nothing saved); returns at once."""
        self._kill_requested = True

    def terminate(self) -> None:
        """Kill the child now (no checkpoint is saved); waits until it is gone (bounded)."""
        if self._pid is not None and self.is_alive():
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._pid, sig)
                if self._wait_gone(wait):
                    break
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

    def _exit_code(self) -> int | None:
        if self._server is None or self._pid is None:
            return None
        return self._server.exit_code(self._pid)

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.is_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        # the server writes the exit code right after reaping: give it a moment
        while self._exit_code() is None and time.monotonic() < deadline and self._server is not None:
            time.sleep(0.01)
        return True

    def _close_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None

    def _finish(self) -> None:
        self._close_conn()
        if self._pid is not None:
            self.exitcode = self._exit_code()
        if self._server is not None and not self._server.fork:
            self._server.close()
        self._done = True

    # ------------------------------------------------------------ events
    def __iter__(self) -> Iterator[Any]:
        return self.events()

    def events(self) -> Iterator[Any]:
        """Yield the child's events until it ends; raise :class:`RunnerError` / :class:`ChildCrashed`."""
        if not self._started:
            self.start()
        if self._cancelled_early:
            self._cancelled_early = False
            yield Stopped(path=None)
            return
        stopped_seen = False
        while not self._done:
            conn = self._conn
            assert conn is not None
            if self._kill_requested:
                self.terminate()
                if not stopped_seen:
                    yield Stopped(path=None)
                return
            if self._stop_requested_at is not None:
                if not self._stop_sent:
                    self._stop_sent = True
                    with contextlib.suppress(OSError):
                        conn.send(("stop",))
                if time.monotonic() - self._stop_requested_at > self.stop_timeout:
                    self.terminate()
                    if not stopped_seen:
                        yield Stopped(path=None)
                    return
            if self._deadline is not None and time.monotonic() > self._deadline:
                return  # join(timeout) ran out; the child keeps running
            try:
                if not conn.poll(self.poll_interval):
                    continue
                message = conn.recv()
            except (EOFError, OSError):
                self._wait_gone(2.0)
                self._finish()
                code = self.exitcode
                how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                raise ChildCrashed(
                    "ChildCrashed", f"the training process ended unexpectedly ({how}) without finishing"
                ) from None
            kind = message[0]
            if kind == "event":
                stopped_seen = stopped_seen or isinstance(message[1], Stopped)
                yield message[1]
            elif kind == "error":
                self._wait_gone(10.0)
                self._finish()
                raise RunnerError(message[1], message[2], message[3])
            elif kind == "done":
                if not self._wait_gone(30.0):  # pragma: no cover - a hung interpreter shutdown
                    self.terminate()
                self._finish()

    # ------------------------------------------------------------ context manager
    def __enter__(self) -> Runner:
        if not self._started:
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
