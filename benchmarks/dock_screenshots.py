"""Screenshots of the docks as a laptop user sees them: a 1366x768 window, the docks tabbed on the right.

Run as a user would (a plain script, no main guard needed)::

    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/dock_screenshots.py [--model DIR] [--out docs]

Writes ``docs/dock_<name>_1366x768.png`` for Pretrain, Fine-tune and Segment (with ``--model``: that model
chosen in the Segment dock, showing its classes, plan and held-out Dice).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_ssl import io
from napari_ssl._napari.layers import volume_to_layer_data

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_SSL_DATA", REPO.parent / "shared" / "data"))

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", type=Path, default=None)
parser.add_argument("--out", type=Path, default=REPO / "docs")
args = parser.parse_args()

viewer = napari.Viewer(show=True)
window = viewer.window._qt_window
window.resize(1366, 768)
case = DATA / "brats" / "Brats18_2013_23_1"
for name, kind in (("flair", "image"), ("seg", "labels")):
    data, kwargs, layer_type = volume_to_layer_data(io.read(case / f"{name}.nii.gz"), kind, name=name)
    viewer._add_layer_from_data(data, kwargs, layer_type)
viewer.dims.set_point(0, float(np.mean(viewer.dims.range[0][:2])))
viewer.layers.selection.active = viewer.layers["flair"]
docks = {name: viewer.window.add_plugin_dock_widget("napari-ssl", name) for name in ("Pretrain", "Fine-tune", "Segment")}
first = next(iter(docks.values()))[0]
for dock_widget, _ in list(docks.values())[1:]:
    window.tabifyDockWidget(first, dock_widget)
for _ in range(10):  # the docks join as tabs on their first show
    QApplication.processEvents()
deadline = time.monotonic() + 60  # the worker process lists the devices (it starts in the background)
while docks["Segment"][1].device.itemText(0).startswith("auto (looking") and time.monotonic() < deadline:
    QApplication.processEvents()
    time.sleep(0.05)
if args.model:
    docks["Segment"][1].load_model(args.model, quiet=True)
docks["Fine-tune"][1].label_box.setCurrentText("seg")
args.out.mkdir(parents=True, exist_ok=True)
for name, (dock_widget, _) in docks.items():
    dock_widget.show()
    dock_widget.raise_()
    for _ in range(10):
        QApplication.processEvents()
    path = args.out / f"dock_{name.lower().replace('-', '')}_1366x768.png"
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"{path}: window {window.width()}x{window.height()}")
viewer.close()
