"""The correction loop as a user meets it: a BraTS case opened through the reader (four modalities), a four-channel
whole-tumour model chosen in the Segment dock, Segment, the masks corrected (here: replaced by the expert's whole
tumour, as a user's brush would), *Learn from my corrections*, and the new version's masks.

Run as a user would (a plain script, no main guard)::

    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/learn_story_screenshot.py --model runs/brats4/model \
        --case Brats18_TCIA02_606_1 --minutes 1

Writes ``docs/story_learn_{before,after}_1366x768.png`` and prints the Dice of the masks before and after the round
(against the expert's whole tumour), the seconds each step took and where the case and the new version went. The
model is copied into a temporary folder first: its corrections and versions are written beside the copy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gui_wait import wait

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_SSL_DATA", REPO.parent / "shared" / "data"))

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", type=Path, required=True, help="a four-channel (flair, t1, t1ce, t2) segmenter")
parser.add_argument("--case", default="Brats18_TCIA02_606_1")
parser.add_argument("--minutes", type=float, default=1.0)
parser.add_argument("--out", type=Path, default=REPO / "docs")
args = parser.parse_args()
work = Path(tempfile.mkdtemp(prefix="napari-ssl-learn-"))
model = work / "brats"
shutil.copytree(args.model, model)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.sum(a & b) / max(1, a.sum() + b.sum()))


viewer = napari.Viewer(show=True)
window = viewer.window._qt_window
window.resize(1366, 768)
viewer.open(DATA / "brats" / args.case, plugin="napari-ssl")
truth = np.isin(np.asarray(viewer.layers["seg"].data), (1, 2, 4))
viewer.layers.remove("seg")
dock_widget, dock = viewer.window.add_plugin_dock_widget("napari-ssl", "Segment")
wait(lambda: not dock.options.device.itemText(0).startswith("auto (looking"), 60)
dock.load_model(str(model))
z = int(np.argmax(truth.sum(axis=(1, 2))))
viewer.dims.set_point(0, float(viewer.layers["flair"].data_to_world((z, 0, 0))[0]))

t0 = time.monotonic()
dock.run()
wait(lambda: dock.relay is None and not dock.staged.pending)
masks = viewer.layers[f"{dock.channel_boxes[0].currentText()} masks"]
print(f"segment: {time.monotonic() - t0:.1f} s, Dice {dice(np.asarray(masks.data) > 0, truth):.3f}")
masks.data[...] = truth.astype(masks.data.dtype)  # the correction: the expert's whole tumour
masks.refresh()
viewer.layers.selection.active = masks
for _ in range(20):
    QApplication.processEvents()
viewer.screenshot(str(args.out / "story_learn_before_1366x768.png"), canvas_only=False, flash=False)

dock.learn_row.minutes.setValue(args.minutes)
t0 = time.monotonic()
dock.learn()
wait(lambda: dock.relay is None and not dock.staged.pending)
new = [layer for layer in viewer.layers if layer.name.endswith("masks v2")]
assert new, dock.status.text()
print(f"learn + segment again: {time.monotonic() - t0:.1f} s; {dock.status.text()}")
print(f"new version's masks: Dice {dice(np.asarray(new[0].data) > 0, truth):.3f} (the case it learnt from)")
masks.visible = False
viewer.layers.selection.active = new[0]
for _ in range(20):
    QApplication.processEvents()
viewer.screenshot(str(args.out / "story_learn_after_1366x768.png"), canvas_only=False, flash=False)
print("case stored in", sorted((work / "brats-corrections").iterdir()))
viewer.close()
