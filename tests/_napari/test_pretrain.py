"""The Pretrain dock: a run in a child process, live progress and losses, cancel and resume, crash, error, closing
the viewer mid-run, and an event loop that keeps turning while training (the child's events are read on the worker
thread). The scan is a synthetic CT, so a fresh clone without ../shared/data covers the dock too; how long things
take (stalls, cancel, start) is measured by benchmarks/bench_gui.py and benchmarks/bench_start.py on a real CT."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from napari_ssl import checkpoint
from napari_ssl._napari.layers import volume_to_layer_data
from napari_ssl.events import Finished, Progress, Started, Stopped

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin_path import open_dock
from synthetic import synthetic_ct

pytestmark = [pytest.mark.gui, pytest.mark.slow]

WAIT_MS = 120_000  # spawn + torch/MONAI import in the child take ~10 s on a busy 2-core CPU


def child_gone(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def scan():
    """A synthetic CT (48, 64, 64), 3 mm, in HU: large enough for 32^3 patches."""
    return synthetic_ct()


@pytest.fixture
def dock_viewer(make_napari_viewer, scan, tmp_path, request):
    viewer = make_napari_viewer(show=bool(getattr(request, "param", False)))
    data, kwargs, layer_type = volume_to_layer_data(scan, "image", name="ct")
    layer = viewer._add_layer_from_data(data, kwargs, layer_type)[0]
    viewer.layers.selection.active = layer
    dock = open_dock(viewer, "Pretrain")
    tiny(dock, tmp_path / "ckpt")
    return dock, viewer


def tiny(dock, out: Path, steps: int = 10, pretexts=("rubik", "context")) -> None:
    """A budget that trains in seconds: tiny backbone, 32^3 patches (the engine's minimum), CPU."""
    form = dock.form
    form.set_pretexts(pretexts)
    form.backbone.setCurrentIndex(form.backbone.findData("tiny"))
    form.steps.setValue(steps)
    form.batch.setValue(2)
    form.patch.setValue(32)
    form.device.setCurrentIndex(form.device.findData("cpu"))
    form.save_every.setValue(0)
    form.out.path = out


def notifications():
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]


def wait_for_step(qtbot, relay, step: int):
    return qtbot.waitSignal(
        relay.worker.yielded,
        timeout=WAIT_MS,
        check_params_cb=lambda e: isinstance(e, Progress) and e.step >= step,
    )


@pytest.mark.parametrize("dock_viewer", [True], indirect=True, ids=["shown"])
def test_start_trains_shows_progress_and_losses_and_stays_responsive(
    dock_viewer, qtbot, tmp_path, monkeypatch
) -> None:
    from qtpy.QtCore import QThread
    from qtpy.QtWidgets import QApplication

    from napari_ssl._napari.hub import checkpoint_hub
    from napari_ssl._napari.pretrain.probe import StallProbe
    from napari_ssl._napari.widgets import PRETEXT_COLORS
    from napari_ssl.runner import Runner

    dock, _ = dock_viewer
    published: list[str] = []
    checkpoint_hub().published.connect(lambda path, kind: kind == "pretrain" and published.append(path))
    readers: set[int] = set()  # the threads that read the child's events
    read = Runner.events

    def reading(self):
        for event in read(self):
            readers.add(threading.get_ident())
            yield event

    monkeypatch.setattr(Runner, "events", reading)
    probe = StallProbe(interval_ms=10)
    marks: list[tuple[float, str, int]] = []  # (perf_counter, event, event-loop ticks so far), in the GUI thread
    slots: set = set()
    relay = dock.start()
    relay.worker.yielded.connect(
        lambda e: (marks.append((time.perf_counter(), type(e).__name__, len(probe.gaps_ms))),
                   slots.add(QThread.currentThread()))
    )
    # the probe covers the run, Start to Finished; napari's own "finished" notification toast comes after
    relay.worker.yielded.connect(lambda e: isinstance(e, Finished) and probe.stop())
    assert relay is not None
    assert not dock.start_button.isEnabled() and dock.cancel_button.isEnabled()
    assert dock.start() is None  # starting twice is impossible while running
    probe.start()
    with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
        pass
    probe.stop()
    kinds = [type(e) for e in dock.events]
    assert kinds[0] is Started and kinds[-1] is Finished
    assert kinds.count(Progress) == 10
    assert dock.outcome == "finished" and dock.relay is None
    assert dock.progress.value() == 10 and "samples/s" in dock.progress.format() and "ETA" not in dock.progress.format()
    assert dock.start_button.isEnabled() and not dock.cancel_button.isEnabled()
    assert dock.plot.names == ["rubik", "context"]
    assert dock.plot.series("context")[0] == [float(s) for s in range(1, 11)]
    assert (
        dock.plot.full_draws >= 1
        and dock.plot.blits >= 1
        and dock.metrics_label.text().startswith("held out: Rubik's cube")
    )
    assert "dB" in dock.metrics_label.text()  # context restoration's metric in words
    assert dock.plot.color("context") == PRETEXT_COLORS["context"]
    out = str(tmp_path / "ckpt")
    state, meta = checkpoint.load(out)
    assert state and meta.step == 10 and meta.pretexts == ("rubik", "context")
    assert dock.last_checkpoint == out and published[-1] == out
    assert any("Pretraining finished at step 10" in m for m in notifications())
    assert child_gone(relay.pid)
    print(f"event-loop stalls during a run (timed by benchmarks/bench_gui.py): {probe.stats()}")
    for at, ms in probe.worst(5):  # what the event loop was doing around the worst stalls
        near = [f"{name}@{t - at:+.2f}s" for t, name, _ in marks if abs(t - at) < 1.0]
        print(f"  stall {ms:.0f} ms at {at - probe.at[0]:.2f} s; events near: {near}")
    # the GUI never waited on the child: its events were read on the worker thread, the slots ran on the GUI
    # thread, and a 10 ms timer kept firing while the child trained (at least once per training step)
    assert readers and threading.main_thread().ident not in readers
    assert slots == {QApplication.instance().thread()}
    ticks = {name: n for _, name, n in marks}  # the tick count at the last event of each kind
    started = next(n for _, name, n in marks if name == "Started")
    assert ticks["Finished"] - started >= kinds.count(Progress), marks


def test_cancel_saves_resume_continues_and_closing_the_viewer_stops_it(dock_viewer, qtbot, tmp_path) -> None:
    """Cancel saves at the step it stopped, Resume continues from there, closing the viewer mid-run saves and ends
    the child. How fast Cancel saves is benchmarks/bench_start.py's."""
    dock, viewer = dock_viewer
    dock.form.steps.setValue(100_000)
    relay = dock.start()
    with wait_for_step(qtbot, relay, 3):
        pass
    with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
        clicked = time.monotonic()
        dock.cancel_button.click()
        assert not dock.cancel_button.isEnabled()
    print(f"cancel -> child ended: {time.monotonic() - clicked:.2f} s")
    assert isinstance(dock.events[-1], Stopped) and [type(e) for e in dock.events].count(Stopped) == 1
    last = [e.step for e in dock.events if isinstance(e, Progress)][-1]
    assert child_gone(relay.pid) and dock.outcome == "cancelled"
    out = str(tmp_path / "ckpt")
    _, meta = checkpoint.load(out)
    step = meta.step
    assert step == last >= 3 and dock.last_checkpoint == out  # saved at the last step shown
    assert dock.resume_button.isEnabled() and "cancelled at step" in dock.status.text()

    # Resume continues the checkpoint (same folder), its loss history back on the plot
    relay = dock.resume()
    assert relay is not None and not dock.resume_button.isEnabled()
    assert len(dock.plot.series("rubik")[0]) == step
    with wait_for_step(qtbot, relay, step + 2):
        pass
    started = next(e for e in dock.events if isinstance(e, Started))
    assert started.start_step == step
    from napari_ssl._napari.widgets import PRETEXT_COLORS

    # the history is drawn first on Resume: each pretext keeps its own colour anyway
    assert [dock.plot.color(n) for n in ("rubik", "context")] == [PRETEXT_COLORS["rubik"], PRETEXT_COLORS["context"]]

    # closing the viewer mid-run: the child saves (a stop, not a kill: the checkpoint moved on) and ends
    t0 = time.monotonic()
    viewer.close()  # blocks (bounded) until the child has saved and ended
    print(f"viewer.close() during training: {time.monotonic() - t0:.2f} s")
    assert relay.done and child_gone(relay.pid)
    _, meta = checkpoint.load(out)
    assert meta.step >= step + 2 and len(meta.history["rubik"]) == meta.step


def test_child_killed_from_outside_is_reported(dock_viewer, qtbot) -> None:
    dock, _ = dock_viewer
    dock.form.steps.setValue(100_000)
    relay = dock.start()
    qtbot.waitUntil(lambda: relay.pid is not None, timeout=WAIT_MS)  # spawned, still importing torch
    with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
        os.kill(relay.pid, signal.SIGKILL)
    assert dock.outcome == "failed" and dock.start_button.isEnabled() and dock.relay is None
    assert "ended unexpectedly (killed by signal 9)" in dock.status.text()
    assert any("Pretraining failed" in m and "killed by signal 9" in m for m in notifications())
    assert child_gone(relay.pid)


def test_unreadable_scan_becomes_a_notification_and_the_dock_is_ready(dock_viewer, qtbot, tmp_path) -> None:
    from napari_ssl._napari.pretrain.form import FOLDER

    dock, _ = dock_viewer
    bad = tmp_path / "scans"
    bad.mkdir()
    (bad / "broken.nii.gz").write_bytes(b"not a scan at all")
    dock.form.source.setCurrentText(FOLDER)
    dock.form.folder.path = bad
    relay = dock.start()
    with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
        pass
    assert dock.outcome == "failed" and dock.start_button.isEnabled()
    assert "broken.nii.gz" in dock.status.text()
    assert any("Pretraining failed" in m and "broken.nii.gz" in m for m in notifications())
    assert child_gone(relay.pid)


def test_bad_inputs_are_refused_before_any_process(dock_viewer) -> None:
    from napari_ssl._napari.pretrain.form import FOLDER

    dock, viewer = dock_viewer
    viewer.layers.selection.clear()
    assert dock.start() is None
    assert "select one or more 3D Image layers" in notifications()[-1]
    dock.form.source.setCurrentText(FOLDER)
    assert dock.start() is None and "choose a folder" in notifications()[-1]
    dock.form.set_pretexts(())
    dock.form.folder.path = "/tmp"
    assert dock.start() is None and "at least one pretext" in notifications()[-1]
    assert dock.start_button.isEnabled() and dock.relay is None


def test_cancel_before_the_first_step_ends_the_child_before_any_step(dock_viewer, qtbot, tmp_path) -> None:
    dock, _ = dock_viewer
    relay = dock.start()
    qtbot.waitUntil(lambda: relay.pid is not None, timeout=WAIT_MS)  # spawned, still importing torch
    with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
        dock.cancel_button.click()
    assert [type(e) for e in dock.events] in ([Stopped], [Started, Stopped])  # not one step trained
    assert dock.outcome == "cancelled" and not (tmp_path / "ckpt").exists()
    assert dock.start_button.isEnabled() and not dock.resume_button.isEnabled()
    assert child_gone(relay.pid)


def test_backbone_choices_match_the_engine() -> None:
    from napari_ssl._napari.widgets import BACKBONES
    from napari_ssl.models.sizes import SIZES

    assert tuple(SIZES) == BACKBONES


def test_a_folder_is_prepared_once_as_its_own_stage(dock_viewer, qtbot, tmp_path) -> None:
    """A folder of scans (one of them not a scan): the bar shows the preparation with its count, the skipped file is
    named in a warning, training goes on; a second run on the same folder reuses every prepared scan."""
    from napari_ssl import io
    from napari_ssl._napari.pretrain.form import FOLDER
    from napari_ssl.events import Preparing

    dock, _ = dock_viewer
    folder = tmp_path / "scans"
    folder.mkdir()
    for seed in (1, 2):
        io.write(synthetic_ct(seed=seed), folder / f"ct{seed}.nii.gz")
    (folder / "notes.txt").write_text("not a scan")
    dock.form.source.setCurrentText(FOLDER)
    dock.form.folder.path = folder
    formats: list[str] = []
    for run in range(2):
        dock.form.steps.setValue(2)
        relay = dock.start()
        assert relay is not None, dock.status.text()
        relay.worker.yielded.connect(lambda e: formats.append(dock.progress.format()) if isinstance(e, Preparing)
                                     else None)
        with qtbot.waitSignal(relay.worker.finished, timeout=WAIT_MS):
            pass
        assert dock.outcome == "finished", dock.status.text()
        prepared = [e for e in dock.events if isinstance(e, Preparing)]
        assert prepared and prepared[-1].final and prepared[-1].total == 2
        assert any(f.startswith("preparing scans") for f in formats)
        if run == 0:
            assert prepared[-1].built == 2 and any("notes.txt" in m for m in notifications())
        else:  # unchanged folder: nothing prepared again
            assert prepared[-1].built == 0
        formats.clear()
