"""The child-process runner: events relayed, stop-and-save, errors, crashes, termination (no Qt)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from napari_ssl.events import Finished, Preparing, Progress, Saved, Started, Stopped
from napari_ssl.runner import ChildCrashed, Runner, RunnerError, resolve_target

HERE = "test_runner"  # this module, importable in the spawned child (pytest puts tests/ on sys.path)


@dataclass(frozen=True)
class Job:
    steps: int = 3
    out: str = ""
    delay: float = 0.0
    fail_at: int = -1


def counting(job: Job):
    """A stand-in training generator: Progress per step, saves in ``finally`` when closed early."""
    step = 0
    try:
        for step in range(1, job.steps + 1):
            if step == job.fail_at:
                raise ValueError(f"bad value at step {step}")
            time.sleep(job.delay)
            yield Progress(step=step, total=job.steps, loss=1.0 / step)
        yield Finished(step=step, metrics={"acc": 1.0})
    finally:
        if job.out and step < job.steps:
            Path(job.out).write_text(f"saved at {step}")


def stubborn(job: Job):
    """Ignores close(): sleeps in its finally block far beyond any stop timeout."""
    try:
        while True:
            yield Progress(step=1, total=1, loss=0.0)
            time.sleep(0.05)
    finally:
        time.sleep(60)


def pid_then_wait(job: Job):
    yield Started(total=1, device=str(os.getpid()))
    time.sleep(60)
    yield Finished(step=1)


def origin(job: Job):
    """Where the run's process came from: its parent, and which of the warm server's modules it already held."""
    import sys

    from napari_ssl.runner.pool import PRELOAD

    held = [name for name in PRELOAD if name in sys.modules]
    yield Started(total=1, device=f"{os.getppid()} {','.join(held)}")


def niceness(job: Job):
    yield Started(total=1, device=str(os.nice(0)))


def test_a_run_yields_the_cpu_to_the_viewer() -> None:
    """The run's process is niced, so the GUI's event loop wins the cores (no stalls while it trains)."""
    from napari_ssl.runner.server import CHILD_NICE

    for warm in (True, False):
        (started,) = list(Runner(f"{HERE}:niceness", Job(), warm=warm).start())
        assert int(started.device) == min(19, os.nice(0) + CHILD_NICE)


def test_resolve_target() -> None:
    assert resolve_target("napari_ssl.training.pretrain:pretrain").__name__ == "pretrain"
    with pytest.raises(ValueError, match="module:function"):
        resolve_target("napari_ssl.training.pretrain")


def test_events_are_relayed_in_order() -> None:
    events = list(Runner(f"{HERE}:counting", Job(steps=3)).start())
    assert [type(e).__name__ for e in events] == ["Progress", "Progress", "Progress", "Finished"]
    assert [e.step for e in events] == [1, 2, 3, 3]


def test_child_exception_is_raised_with_type_and_traceback() -> None:
    runner = Runner(f"{HERE}:counting", Job(steps=5, fail_at=2)).start()
    seen = []

    def consume() -> None:
        seen.extend(runner)

    with pytest.raises(RunnerError, match="ValueError: bad value at step 2") as info:
        consume()
    assert info.value.error_type == "ValueError"
    assert "counting" in info.value.child_traceback
    assert len(seen) == 1
    assert not runner.is_alive()


def test_stop_closes_the_generator_which_saves(tmp_path: Path) -> None:
    marker = tmp_path / "saved.txt"
    runner = Runner(f"{HERE}:counting", Job(steps=1000, delay=0.05, out=str(marker))).start()
    events = []
    for event in runner:
        events.append(event)
        if len(events) == 2:
            runner.stop()
    assert isinstance(events[-1], Stopped)
    assert events[-1].path == str(marker)
    assert marker.read_text().startswith("saved at")
    assert runner.exitcode == 0


def test_stop_terminates_after_timeout() -> None:
    runner = Runner(f"{HERE}:stubborn", Job(), stop_timeout=1.0, poll_interval=0.05).start()
    start = None
    events = []
    for event in runner:
        events.append(event)
        if start is None:
            start = time.monotonic()
            runner.stop()
    assert time.monotonic() - start < 20
    assert isinstance(events[-1], Stopped)
    assert not runner.is_alive()


def test_child_killed_from_outside_raises_instead_of_hanging() -> None:
    runner = Runner(f"{HERE}:pid_then_wait", Job(), poll_interval=0.05).start()
    events = iter(runner)
    first = next(events)
    assert int(first.device) == runner.pid
    os.kill(runner.pid, signal.SIGKILL)
    with pytest.raises(ChildCrashed, match="killed by signal 9"):
        next(events)


@pytest.mark.slow
def test_pretrain_in_child_stop_and_save(tmp_path: Path) -> None:
    """The real engine in a spawned child: stop after two steps leaves a checkpoint that loads, at the step the
    child last reported."""
    from synthetic import write_ct

    from napari_ssl import checkpoint
    from napari_ssl.training.pretrain import PretrainConfig

    out = tmp_path / "ck"
    config = PretrainConfig(
        pretexts=("context",),
        data=(str(write_ct(tmp_path / "scans")),),
        out=str(out),
        steps=10_000,
        batch_size=1,
        patch_size=32,
        backbone="tiny",
        num_threads=1,
        save_every=0,
        val_samples=1,
    )
    runner = Runner("napari_ssl.training.pretrain:pretrain", config).start()
    seen = []
    for event in runner:
        seen.append(event)
        if sum(isinstance(e, Progress) for e in seen) == 2:
            runner.stop()
    kinds = [type(e) for e in seen if not isinstance(e, Preparing)]  # the prepared dataset's build comes first
    assert kinds[0] is Started
    assert kinds[-1] is Stopped and seen[-1].path == str(out)
    assert Saved not in kinds
    state, meta = checkpoint.load(out)
    last = [e.step for e in seen if isinstance(e, Progress)]
    assert last[:2] == [1, 2] and meta.step == last[-1]  # saved where it stopped: no step lost, none unreported
    assert state


def test_join_with_timeout_returns_while_the_child_runs() -> None:
    runner = Runner(f"{HERE}:pid_then_wait", Job(), poll_interval=0.05).start()
    next(iter(runner))  # the child is up and waiting
    start = time.monotonic()
    assert runner.join(timeout=1.0) is None
    assert time.monotonic() - start < 10
    assert runner.is_alive()
    runner.terminate()
    assert not runner.is_alive() and runner.exitcode is not None


def from_kwargs(kwargs):
    """A target taking a plain dict, as the napari dock's child entry point does."""
    yield from counting(Job(**kwargs))


def test_stop_with_a_dict_config_reports_its_out(tmp_path: Path) -> None:
    marker = tmp_path / "saved.txt"
    runner = Runner(f"{HERE}:from_kwargs", {"steps": 1000, "delay": 0.05, "out": str(marker)}).start()
    events = []
    for event in runner:
        events.append(event)
        runner.stop()
    assert events[-1] == Stopped(path=str(marker))
    assert marker.exists()


def test_cold_runner_without_the_warm_server() -> None:
    """One process per run (the path of systems without fork): same events, same clean exit."""
    runner = Runner(f"{HERE}:counting", Job(steps=2), warm=False).start()
    events = list(runner)
    assert [type(e).__name__ for e in events] == ["Progress", "Progress", "Finished"]
    assert runner.exitcode == 0 and not runner.is_alive()


def test_warm_runs_reuse_the_server_and_each_run_has_its_own_process() -> None:
    """A second run is forked by the same warm server: no interpreter start, no imports (its process holds every
    preloaded module before the target runs). How long that takes is benchmarks/bench_start.py's (second start)."""
    from napari_ssl.runner import pool as runner_pool

    if not runner_pool.warm_allowed():
        pytest.skip("no fork on this system: every run starts its own process")
    first = Runner(f"{HERE}:pid_then_wait", Job(), poll_interval=0.05).start()
    server = runner_pool._SERVER
    pid = int(next(iter(first)).device)
    first.terminate()
    second = Runner(f"{HERE}:origin", Job()).start()
    (started,) = list(second)
    assert runner_pool._SERVER is server and server.alive()
    assert second.pid != pid and second.exitcode == 0
    parent, held = started.device.split(" ")
    assert int(parent) == server.proc.pid  # forked by the warm server, not started by us
    assert held.split(",") == list(runner_pool.PRELOAD)  # imported before the run began


def test_input_file_round_trip_and_cancel(tmp_path: Path) -> None:
    import numpy as np

    from napari_ssl.runner.server import CHUNK, InputCancelled, read_input, write_input

    array = np.arange(3 * CHUNK // 8, dtype=np.float64).reshape(3, -1)
    path = write_input({"a": array, "b": "x"}, tmp_path / "in.pkl")
    back = read_input(path)
    assert back["b"] == "x" and np.array_equal(back["a"], array) and back["a"].flags.writeable
    assert not path.exists()
    calls = []
    with pytest.raises(InputCancelled):
        write_input({"a": array}, tmp_path / "in2.pkl", lambda: calls.append(1) or len(calls) > 1)
    assert not (tmp_path / "in2.pkl").exists()


def test_the_server_refuses_a_connection_without_its_token() -> None:
    from multiprocessing.connection import Connection

    from napari_ssl.runner import pool as runner_pool

    server = runner_pool.Server(False, ())
    try:
        assert server.wait_ready(lambda: False)
        import socket

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(server.address)
        conn = Connection(sock.detach())
        conn.send_bytes(b"not the token")
        with pytest.raises((EOFError, OSError)):
            conn.recv()  # no hello: the server closed the connection
        server.proc.wait(10)
        assert server.proc.returncode == 0
    finally:
        server.close()


def test_the_server_entry_point_starts_without_a_warning() -> None:
    """``python -m napari_ssl.runner`` runs the server's main once: started as ``-m napari_ssl.runner.server``, runpy
    warned (RuntimeWarning) on every child's stderr that the package's own import had loaded the module already."""
    out = subprocess.run([sys.executable, "-W", "error", "-m", "napari_ssl.runner"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "Warning" not in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip() == "usage: python -m napari_ssl.runner serve|once FOLDER [MODULE ...]"


def test_children_import_this_napari_ssl_and_nothing_of_it_as_top_level_modules() -> None:
    """The warm servers' PYTHONPATH starts with the folder that holds this napari_ssl (after the move to runner/, it
    held napari_ssl/ itself: its io/, metrics.py, plan.py ... became importable as top-level modules in the child)."""
    import os
    from pathlib import Path

    import napari_ssl
    from napari_ssl.runner.pool import _child_env

    first = Path(_child_env()["PYTHONPATH"].split(os.pathsep)[0])
    assert first / "napari_ssl" == Path(napari_ssl.__file__).resolve().parent
    assert not (first / "metrics.py").exists() and not (first / "io" / "volume.py").exists()
