"""Each dock as a laptop user sees it before and after a run: a 1366x768 window, a BraTS case opened through the
reader, the docks opened from the Plugins menu and tabbed, then a short pretraining, a fine-tuning of whole tumour
from the flair + seg pair, and a segmentation of another case.

Run as a user would (a plain script, no main guard)::

    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/dock_story_screenshots.py [--out docs] [--steps 30]

Writes ``docs/story_<dock>_{before,after}_1366x768.png`` and prints the window's width at each shot (the docks must
keep it within the screen) and what each run reported.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gui_wait import wait

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_SSL_DATA", REPO.parent / "shared" / "data"))

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=REPO / "docs")
parser.add_argument("--steps", type=int, default=30)
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
work = Path(tempfile.mkdtemp(prefix="napari-ssl-story-"))


viewer = napari.Viewer(show=True)
window = viewer.window._qt_window
window.resize(1366, 768)
viewer.open(DATA / "brats" / "Brats18_2013_11_1", plugin="napari-ssl")
for name in ("t1", "t1ce", "t2"):
    viewer.layers.remove(name)
flair, seg = viewer.layers["flair"], viewer.layers["seg"]
viewer.dims.set_point(0, float(np.mean(viewer.dims.range[0][:2])))
names = ("Pretrain", "Fine-tune", "Segment")
docks = {name: viewer.window.add_plugin_dock_widget("napari-ssl", name) for name in names}
wait(lambda: not docks["Segment"][1].options.device.itemText(0).startswith("auto (looking"), 60)


def shot(name: str, when: str) -> None:
    dock_widget, _ = docks[name]
    dock_widget.show()
    dock_widget.raise_()
    for _ in range(20):
        QApplication.processEvents()
    path = args.out / f"story_{name.lower().replace('-', '')}_{when}_1366x768.png"
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"{path.name}: window {window.width()} px wide")


pretrain, finetune, segment = (docks[n][1] for n in names)
viewer.layers.selection.active = flair
viewer.layers.selection.select_only(flair)
finetune.form.image_box.setCurrentText("flair")
finetune.form.label_box.setCurrentText("seg")
finetune.form.add_pair()
for name in names:
    shot(name, "before")

form = pretrain.form
form.set_pretexts(("rubik", "context", "planes"))
form.steps.setValue(args.steps)
form.out.path = work / "pretrained"
ended: list[str] = []
pretrain.run_ended.connect(ended.append)
pretrain.start()
wait(lambda: ended)
print(f"pretraining: {ended[0]}; {pretrain.progress.text()}; {pretrain.metrics_label.text()}")
shot("Pretrain", "after")

finetune.form.steps.setValue(args.steps)
finetune.form.out.path = work / "segmenter"
relay = finetune.start()
done: list[bool] = []
relay.worker.finished.connect(lambda: done.append(True))
wait(lambda: done)
print(f"fine-tuning: {finetune.status.text()}")
shot("Fine-tune", "after")

other = viewer.open(DATA / "brats" / "Brats18_2013_23_1" / "flair.nii.gz", plugin="napari-ssl")[0]
other.name = "another flair"
for layer in (flair, seg):
    layer.visible = False
viewer.layers.selection.active = other
worker = segment.run()
finished: list[bool] = []
worker.finished.connect(lambda: finished.append(True))
wait(lambda: finished and not segment.staged.pending)
print(f"segmentation: {segment.status.text()}")
shot("Segment", "after")
viewer.close()
