"""The relay: a napari thread worker reading the engine's child-process runner (fast stand-in jobs, no viewer)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from qtpy.QtCore import QThread
from qtpy.QtWidgets import QApplication
from test_relay_jobs import BigJob, Job

from napari_ssl._napari.relay import Relay, RunFailed
from napari_ssl.events import Finished, Progress, Started, Stopped

pytestmark = pytest.mark.gui

JOB = "test_relay_jobs:counting"  # importable in the child: pytest puts tests/_napari on sys.path
WAIT_MS = 30_000


def child_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class Recorder:
    """Collects what the worker relays, and on which thread the slot ran."""

    def __init__(self, relay: Relay) -> None:
        self.events: list = []
        self.errors: list = []
        self.threads: set = set()
        relay.worker.yielded.connect(self.on_event)
        relay.worker.errored.connect(self.errors.append)

    def on_event(self, event) -> None:
        self.threads.add(QThread.currentThread())
        self.events.append(event)


def test_events_reach_the_gui_thread_in_order(qtbot) -> None:
    relay = Relay(JOB, Job(steps=4), label="Job")
    rec = Recorder(relay)
    with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
        relay.start()
    assert [type(e) for e in rec.events] == [Started, Progress, Progress, Progress, Progress, Finished]
    assert [e.step for e in rec.events[1:]] == [1, 2, 3, 4, 4]
    assert rec.threads == {QApplication.instance().thread()}
    assert not rec.errors
    pid = int(rec.events[0].device)
    assert pid == relay.pid and child_gone(pid) and relay.done


def test_prepare_runs_in_the_worker_thread_and_its_result_is_relayed(qtbot) -> None:
    import threading

    seen: list[tuple[str, object]] = []

    def prepare(event):
        seen.append((threading.current_thread().name, event))
        return ("prepared", event.step) if isinstance(event, Progress) else event

    relay = Relay(JOB, Job(steps=2), label="Job", prepare=prepare)
    rec = Recorder(relay)
    with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
        relay.start()
    assert rec.events[1:3] == [("prepared", 1), ("prepared", 2)] and isinstance(rec.events[0], Started)
    assert len(seen) == len(rec.events) and threading.main_thread().name not in {name for name, _ in seen}
    assert not rec.errors


def test_stop_saves_at_the_step_it_stopped_and_ends(qtbot, tmp_path: Path) -> None:
    """Stop asked in a slot: the child closes its generator at its next yield (which saves) and ends; the save is
    at the last step relayed, nothing is relayed after Stopped. How fast: benchmarks/bench_start.py (cancel)."""
    marker = tmp_path / "saved.txt"
    relay = Relay(JOB, Job(steps=100_000, delay=0.05, out=str(marker)), label="Job")
    rec = Recorder(relay)

    def stop_after_two(event) -> None:
        if isinstance(event, Progress) and event.step == 2:
            relay.stop()

    relay.worker.yielded.connect(stop_after_two)
    with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
        relay.start()
    kinds = [type(e) for e in rec.events]
    assert kinds[0] is Started and kinds[-1] is Stopped and kinds.count(Stopped) == 1 and Finished not in kinds
    steps = [e.step for e in rec.events if isinstance(e, Progress)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2  # in order, none lost
    assert marker.read_text() == f"saved at {steps[-1]}"  # saved where the child stopped
    assert rec.events[-1].path == str(marker)
    assert child_gone(relay.pid) and not rec.errors


def test_napari_quit_means_stop_and_save(qtbot, tmp_path: Path) -> None:
    """napari cancels tasks with worker.quit() when its window closes: the child must still save."""
    marker = tmp_path / "saved.txt"
    relay = Relay(JOB, Job(steps=100_000, delay=0.05, out=str(marker)), label="Job")
    rec = Recorder(relay)
    relay.worker.yielded.connect(lambda e: isinstance(e, Progress) and e.step == 1 and relay.worker.quit())
    with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
        relay.start()
    assert isinstance(rec.events[-1], Stopped)
    assert marker.exists() and child_gone(relay.pid)


def test_child_error_becomes_run_failed_and_finishes(qtbot) -> None:
    relay = Relay(JOB, Job(steps=5, fail_at=2), label="Job")
    rec = Recorder(relay)
    with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
        relay.start()
    (error,) = rec.errors
    assert isinstance(error, RunFailed) and not isinstance(error, RuntimeError)
    assert str(error).startswith("Job failed: FileNotFoundError: /no/such/folder")
    assert error.error_type == "FileNotFoundError" and "counting" in error.child_traceback
    assert child_gone(relay.pid)


def test_child_killed_from_outside_is_reported_not_hung(qtbot) -> None:
    relay = Relay(JOB, Job(steps=100_000, delay=0.05), label="Job", poll_interval=0.05)
    rec = Recorder(relay)
    relay.worker.yielded.connect(lambda e: isinstance(e, Started) and os.kill(relay.pid, signal.SIGKILL))
    with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
        relay.start()
    (error,) = rec.errors
    assert error.crashed and "killed by signal 9" in str(error)
    assert child_gone(relay.pid)


def test_shutdown_stops_saves_and_leaves_no_child(qtbot, tmp_path: Path) -> None:
    marker = tmp_path / "saved.txt"
    relay = Relay(JOB, Job(steps=100_000, delay=0.05, out=str(marker)), label="Job")
    with qtbot.waitSignal(
        relay.worker.yielded, timeout=WAIT_MS, check_params_cb=lambda e: isinstance(e, Progress)
    ):
        relay.start()
    with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
        relay.shutdown()  # blocks until the child is gone
        assert relay.done and child_gone(relay.pid)
    assert marker.exists()


def test_stop_before_start_never_spawns(qtbot) -> None:
    relay = Relay(JOB, Job(steps=3), label="Job")
    rec = Recorder(relay)
    relay.stop()
    with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
        relay.start()
    assert relay.pid is None and not rec.events and not rec.errors


def test_cancel_during_a_large_input_is_handled_off_the_gui_thread(qtbot, monkeypatch) -> None:
    """A 512 MB in-memory scan is handed to the child by file, in chunks, on the worker thread: Cancel in a GUI slot
    only sets a flag, the worker notices it at the next chunk, removes the partial file, and the run never starts.
    The hand-over is held after its first chunk until Cancel has returned, so the cancel lands mid-way whatever the
    machine's load, and a Cancel that waited for the hand-over would never return. How fast it all is:
    benchmarks/bench_cancel_input.py."""
    import threading

    import numpy as np

    from napari_ssl.runner import pool as runner_pool
    from napari_ssl.runner import process as runner
    from napari_ssl.runner.server import InputCancelled

    if runner_pool.warm_allowed():  # the hand-over, not the server's start, is what is cancelled here
        assert runner_pool.warm_server().wait_ready(lambda: False)
    writing, cancel_returned = threading.Event(), threading.Event()
    seen: dict = {"chunks": 0}
    handover = runner.write_input

    def held_write_input(obj, path, cancelled):
        seen["thread"], seen["path"] = threading.get_ident(), Path(path)

        def check() -> bool:
            seen["chunks"] += 1
            if seen["chunks"] == 2:  # one chunk written: let the GUI cancel, then go on
                writing.set()
                seen["cancel_returned_first"] = cancel_returned.wait(WAIT_MS / 1000)
            return cancelled()

        try:
            return handover(obj, path, check)
        except InputCancelled:
            seen["cancelled_at_chunk"] = seen["chunks"]
            raise

    monkeypatch.setattr(runner, "write_input", held_write_input)
    array = np.ones((512, 512, 512), dtype=np.float32)
    relay = Relay("test_relay_jobs:big", BigJob(array=array), label="Job")
    rec = Recorder(relay)
    with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
        relay.start()
        qtbot.waitUntil(writing.is_set, timeout=WAIT_MS)
        relay.stop()  # what the Cancel button's slot does, on the GUI thread
        cancel_returned.set()
    assert seen["thread"] != threading.get_ident()  # the hand-over ran on the worker thread
    assert seen["cancel_returned_first"] is True  # stop() returned while the worker was held mid-hand-over
    assert seen["cancelled_at_chunk"] == 2 and not seen["path"].exists()  # 1 of 64 chunks written, then removed
    assert [type(e) for e in rec.events] == [Stopped] and not rec.errors  # the job never ran
    assert rec.threads == {QApplication.instance().thread()}
    assert relay.runner is not None and "ready" not in relay.runner.timings
    assert relay.pid is None or child_gone(relay.pid)
