"""The child side of :mod:`napari_ssl.runner`: a clean entry point that serves runs over a local socket.

Started as ``python -m napari_ssl.runner serve FOLDER [MODULE ...]`` (never by ``multiprocessing``'s
spawn, which re-runs the user's ``__main__``: a napari script without a main guard would open a second
viewer in the child and hang). It imports the ``MODULE`` s once (torch, MONAI, the engine), listens on
``FOLDER/sock`` and writes ``ready`` on stdout. Then, for every connection:

- ``serve`` (Linux): forks a child per run, so a warm run starts without imports and its GPU memory is given
  back when that child exits; the server never touches a GPU and reaps each child, writing its exit code to
  ``FOLDER/<pid>.exit``. It exits when its stdin closes (the viewer's process ended).
- ``once`` (other systems): runs the one connection in-process, then exits.

The protocol of one run (pickled tuples, trusted: both ends are this package, and the parent first sends the
secret token it gave the server on stdin): child ``("hello", pid)``; parent ``("run", target, input_file, sys_path)``; child ``("event", event)`` ...,
``("error", type, message, traceback)``, ``("done",)``. The parent sends ``("stop",)`` to cancel, or just closes
the connection; either way the child closes the generator (which saves) and ends.
"""

from __future__ import annotations

import contextlib
import hmac
import importlib
import os
import pickle
import select
import signal
import socket
import struct
import sys
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from napari_ssl.events import Stopped

__all__ = ["CHILD_NICE", "CHUNK", "InputCancelled", "read_input", "resolve_target", "serve", "write_input",
           "yield_cpu_to_gui"]

#: bytes written between two checks of a cancel request while an input is written to its file
CHUNK = 8 << 20
_HEADER = struct.Struct("<QQ")


class InputCancelled(Exception):
    """Writing a run's input was cancelled."""


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


# ---------------------------------------------------------------- inputs by file
def write_input(obj: Any, path: str | Path, cancelled: Callable[[], bool] = lambda: False) -> Path:
    """Write ``obj`` for :func:`read_input`: large arrays go out of band, in chunks, checking ``cancelled``.

    Pickle protocol 5 hands the arrays' memory over without a copy, so the calling thread writes it with
    the GIL released most of the time; a cancel is noticed within one :data:`CHUNK`. Raises
    :class:`InputCancelled` (and removes the file) when cancelled.
    """
    path = Path(path)
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    try:
        with open(path, "wb") as f:
            f.write(_HEADER.pack(len(head), len(views)))
            f.write(struct.pack(f"<{len(views)}Q", *(v.nbytes for v in views)))
            f.write(head)
            for view in views:
                for start in range(0, view.nbytes, CHUNK):
                    if cancelled():
                        raise InputCancelled("cancelled")
                    f.write(view[start : start + CHUNK])
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    finally:
        for view in views:
            view.release()
    return path


def read_input(path: str | Path, *, remove: bool = True) -> Any:
    """The object written by :func:`write_input` (arrays come back writable); the file is removed."""
    path = Path(path)
    with open(path, "rb") as f:
        n_head, n_buffers = _HEADER.unpack(f.read(_HEADER.size))
        sizes = struct.unpack(f"<{n_buffers}Q", f.read(8 * n_buffers))
        head = f.read(n_head)
        buffers = []
        for size in sizes:
            buf = bytearray(size)
            f.readinto(buf)
            buffers.append(buf)
    if remove:
        with contextlib.suppress(OSError):
            path.unlink()
    return pickle.loads(head, buffers=buffers)  # our own parent's file: trusted


# ---------------------------------------------------------------- one run
#: niceness added to a run's process: the viewer's event loop wins the cores whenever it needs them, so a run that
#: uses every core it was given cannot delay a repaint (a background job's priority, as ``nice`` gives it)
CHILD_NICE = 10


def yield_cpu_to_gui() -> None:
    """Lower this process's CPU priority by :data:`CHILD_NICE` (``NAPARI_SSL_CHILD_NICE`` overrides; where the
    system has no ``os.nice``, nothing)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        os.nice(int(os.environ.get("NAPARI_SSL_CHILD_NICE", CHILD_NICE)))


def run_job(conn: Connection, token: bytes = b"") -> int:
    """Serve one run on ``conn`` (see the module docstring); returns the exit code for the process.

    The first message must be the server's ``token`` (given by the parent on stdin): only the process that
    started the server can hand it work.
    """
    try:
        if not conn.poll(10) or not hmac.compare_digest(conn.recv_bytes(256), token):
            return 0
    except (EOFError, OSError):
        return 0
    conn.send(("hello", os.getpid()))
    yield_cpu_to_gui()
    try:
        message = conn.recv()
    except (EOFError, OSError):
        return 0  # the parent gave up before the run (cancelled)
    if not message or message[0] != "run":
        return 0
    _, target, input_file, sys_path = message
    for entry in sys_path:  # the parent's import path (its user modules), after our own
        if entry not in sys.path:
            sys.path.append(entry)

    def send(*msg: Any) -> None:
        with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
            conn.send(msg)

    def stop_asked() -> bool:
        try:
            if not conn.poll(0):
                return False
            conn.recv()  # ("stop",)
        except (EOFError, OSError):
            pass  # the parent closed the connection or died: stop and save too
        return True

    gen = None
    code = 0
    try:
        config = read_input(input_file)
        out = config.get("out") if isinstance(config, dict) else getattr(config, "out", None)
        gen = resolve_target(target)(config)
        for event in gen:
            try:
                pickle.dumps(event)
            except Exception as exc:
                raise TypeError(f"event {event!r} cannot be sent to the parent: {exc}") from exc
            send("event", event)
            if stop_asked():
                gen.close()  # the generator's finally block saves
                send("event", Stopped(path=None if out is None else str(out)))
                break
    except BaseException as exc:  # report everything, including SystemExit from the target
        send("error", type(exc).__name__, str(exc), traceback.format_exc())
        code = 1
    finally:
        send("done")
        with contextlib.suppress(OSError):
            conn.close()
    return code


# ---------------------------------------------------------------- the server
def _listen(folder: Path) -> tuple[socket.socket, str]:
    if hasattr(socket, "AF_UNIX"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address = str(folder / "sock")
        sock.bind(address)
    else:  # pragma: no cover - no AF_UNIX (Windows): loopback TCP (the token keeps other processes out), untested
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    sock.listen(16)
    return sock, address


def _reap(folder: Path) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        tmp = folder / f"{pid}.exit.tmp"
        tmp.write_text(str(code))
        os.replace(tmp, folder / f"{pid}.exit")


def _warm(modules: Sequence[str]) -> None:
    for name in modules:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def serve(folder: str | Path, modules: Sequence[str] = (), *, fork: bool = True) -> int:
    """The server's main loop (see the module docstring)."""
    folder = Path(folder)
    token = sys.stdin.buffer.readline().strip()  # the parent's secret, first line of stdin
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the terminal: the viewer's process decides
    _warm(modules)
    sock, address = _listen(folder)
    wake_r, wake_w = os.pipe()
    if fork:
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
    sys.stdout.write(f"ready {address}\n")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nobody reads our stdout from now on
    stdin = sys.stdin.fileno()
    while True:
        readable, _, _ = select.select([sock, stdin, wake_r], [], [], 1.0)
        if wake_r in readable:
            os.read(wake_r, 4096)
        if fork:
            _reap(folder)
        if stdin in readable and not os.read(stdin, 4096):
            break  # the viewer's process closed our stdin (or ended)
        if sock not in readable:
            continue
        client, _ = sock.accept()
        if not fork:
            return run_job(Connection(client.detach()), token)
        pid = os.fork()
        if pid == 0:  # the run's own process
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (wake_r, wake_w, stdin):
                    os.close(fd)
                sock.close()
                code = run_job(Connection(client.detach()), token)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        client.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] not in {"serve", "once"}:
        sys.stderr.write("usage: python -m napari_ssl.runner serve|once FOLDER [MODULE ...]\n")
        return 2
    return serve(args[1], args[2:], fork=args[0] == "serve")
