"""The worker servers behind :class:`napari_ssl.runner.Runner` (parent side; the child side is
:mod:`napari_ssl.runner.server`).

One warm server per viewer process where fork is available (Linux): it imports :data:`PRELOAD` once and forks
a fresh child per run. Elsewhere, or with ``NAPARI_SSL_WARM=0``, each run gets its own ``once`` server.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

__all__ = [
    "PRELOAD",
    "READY_TIMEOUT",
    "ChildCrashed",
    "RunnerError",
    "Server",
    "prewarm",
    "shutdown_server",
    "warm_allowed",
    "warm_server",
]

#: what the warm server imports before its first run: torch._dynamo is what torch's optimisers import on
#: their first construction (~5 s on a busy 2-core CPU); the rest is what the engine imports inside functions
PRELOAD = (
    "torch",
    "torch._dynamo",
    "monai",
    "monai.networks.nets",
    "safetensors.torch",
    "napari_ssl.checkpoint",
    "napari_ssl.models",
    "napari_ssl.pretext",
    "napari_ssl.training.pretrain",
    "napari_ssl.training.finetune",
    "napari_ssl.inference.segment",
    "napari_ssl.inference.formats.native",
    "napari_ssl.training.trainer",
    "napari_ssl.plan",
    "napari_ssl.training.augment",
    "monai.transforms",
    "monai.losses",
    "monai.inferers",
)
#: seconds to wait for a server to be ready (imports on a busy machine)
READY_TIMEOUT = 300.0


class RunnerError(RuntimeError):
    """The child raised ``error_type: message``; ``child_traceback`` is its formatted traceback."""

    def __init__(self, error_type: str, message: str, child_traceback: str = "") -> None:
        super().__init__(f"{error_type}: {message}" if error_type else message)
        self.error_type = error_type
        self.message = message
        self.child_traceback = child_traceback


class ChildCrashed(RunnerError):
    """The child process ended without finishing (killed, crashed, out of memory)."""


def warm_allowed() -> bool:
    return (
        hasattr(os, "fork")
        and sys.platform.startswith("linux")
        and os.environ.get("NAPARI_SSL_WARM", "1") != "0"
    )


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    import napari_ssl

    # the folder holding this napari_ssl (not napari_ssl itself, whose io/, metrics.py, ... would shadow top-level
    # modules), so the child imports this copy whatever its own path says
    root = str(Path(napari_ssl.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Server:
    """A :mod:`~napari_ssl.runner.server` process: ``serve`` (forks a child per run) or ``once``."""

    def __init__(self, fork: bool, modules: tuple[str, ...]) -> None:
        self.fork = fork
        self.folder = Path(tempfile.mkdtemp(prefix="napari-ssl-runner-"))
        self.address: str | None = None
        self.ready = threading.Event()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "napari_ssl.runner",  # its __main__: the server
                "serve" if fork else "once",
                str(self.folder),
                *modules,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_child_env(),
        )
        self.token = secrets.token_hex(32).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.token + b"\n")  # a few bytes into an empty pipe: never blocks
        self.proc.stdin.flush()
        threading.Thread(target=self._await_ready, name="napari-ssl-server-ready", daemon=True).start()

    def _await_ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode(errors="replace").split()
        if len(line) == 2 and line[0] == "ready":
            self.address = line[1]
        self.ready.set()  # also on EOF: the waiter sees no address

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, cancelled: Any) -> bool:
        """True once ready; False when ``cancelled()`` turned true first. Raises when the server died."""
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready.wait(0.05):
            if cancelled():
                return False
            if time.monotonic() > deadline:
                raise ChildCrashed(
                    "ChildCrashed", f"the worker process was not ready after {READY_TIMEOUT:.0f} s"
                )
        if self.address is None:
            self.proc.wait(5)
            raise ChildCrashed(
                "ChildCrashed", f"the worker process could not start (exit code {self.proc.returncode})"
            )
        return True

    def connect(self) -> Connection:
        import socket

        assert self.address is not None
        if hasattr(socket, "AF_UNIX"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.address)
        else:  # pragma: no cover - Windows
            host, port = self.address.rsplit(":", 1)
            sock = socket.create_connection((host, int(port)))
        conn = Connection(sock.detach())
        conn.send_bytes(self.token)
        return conn

    def exit_code(self, pid: int) -> int | None:
        """The exit code of a forked run (written by the server when it reaped it), or of a ``once`` server."""
        if not self.fork:
            return self.proc.poll()
        path = self.folder / f"{pid}.exit"
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the server leaves its loop; running children go on to their end
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.folder, ignore_errors=True)


_SERVER: Server | None = None
_SERVER_LOCK = threading.Lock()  # taken by worker threads only (never by a GUI slot)


def warm_server() -> Server:
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None or not _SERVER.alive():
            _SERVER = Server(True, PRELOAD)
        return _SERVER


def prewarm() -> None:
    """Start the warm server now (returns at once), so the first run starts without imports."""
    if warm_allowed():
        threading.Thread(target=warm_server, name="napari-ssl-prewarm", daemon=True).start()


def shutdown_server() -> None:
    """End the warm server (running children finish on their own)."""
    global _SERVER
    with _SERVER_LOCK:
        server, _SERVER = _SERVER, None
    if server is not None:
        server.close()


@atexit.register
def _close_at_exit() -> None:  # pragma: no cover - interpreter exit
    with contextlib.suppress(Exception):
        shutdown_server()
