"""Pretrain dock: Start -> first progress, first start (the warm worker starts) and second start (reused), and
Cancel -> checkpoint saved, in one viewer. Run under a display: ``xvfb-run -a python benchmarks/bench_start.py``.
Targets: second start <= 3 s; cancel <= 2 s."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtCore import QEventLoop

from napari_ssl import io
from napari_ssl._napari.layers import volume_to_layer_data
from napari_ssl._napari.pretrain.dock import PretrainDock
from napari_ssl._napari.pretrain.probe import StallProbe
from napari_ssl.events import Progress, Stopped

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_SSL_DATA", REPO.parent / "shared" / "data"))

viewer = napari.Viewer(show=True)
data, kwargs, kind = volume_to_layer_data(io.read(DATA / "ct_unlabeled" / "ct_thorax_abdomen.nii.gz"), "image", name="ct")
viewer.layers.selection.active = viewer._add_layer_from_data(data, kwargs, kind)[0]
dock = PretrainDock(viewer)
viewer.window.add_dock_widget(dock, name="Pretrain")
form = dock.form
form.set_pretexts(("rubik", "context"))
form.backbone.setCurrentIndex(form.backbone.findData("tiny"))
form.patch.setValue(32)
form.device.setCurrentIndex(form.device.findData("cpu"))
form.save_every.setValue(0)
tmp = tempfile.TemporaryDirectory()
print(f"load average before: {os.getloadavg()}")
for run in range(3):
    form.out.path = Path(tmp.name) / f"ck{run}"
    form.steps.setValue(100_000)
    loop = QEventLoop()
    marks: dict[str, float] = {}
    probe = StallProbe(10)

    def on_event(event, marks=marks):
        now = time.perf_counter()
        if isinstance(event, Progress) and "first" not in marks:
            marks["first"] = now
        if isinstance(event, Progress) and event.step == 3 and "cancel" not in marks:
            marks["cancel"] = time.perf_counter()
            dock.cancel_button.click()
            marks["click_returned"] = time.perf_counter()
        if isinstance(event, Stopped):
            marks["stopped"] = now

    t0 = time.perf_counter()
    relay = dock.start()
    relay.worker.yielded.connect(on_event)
    relay.worker.finished.connect(loop.quit)
    probe.start()
    loop.exec()
    probe.stop()
    s = probe.stats()
    print(
        f"start {run + 1}{' (starts the warm worker)' if run == 0 else ' (warm)'}: Start -> first progress "
        f"{marks['first'] - t0:.2f} s; Cancel click returned in {1000 * (marks['click_returned'] - marks['cancel']):.1f} ms, "
        f"-> Stopped (saved) {marks['stopped'] - marks['cancel']:.2f} s; stalls p99 {s['p99']:.1f} ms max {s['max']:.1f} ms"
    )
viewer.close()
print(f"load average after: {os.getloadavg()}")
