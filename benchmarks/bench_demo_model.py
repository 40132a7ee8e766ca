"""First launch, nothing trained: open the sample phantom, open the Segment dock, click Segment, get the lesion mask.

Drives a real window (Viewer(show=True), 1366 x 768) the way a user does: *File > Open Sample* (``open_sample``), then
*Plugins > napari SSL > Segment* (``add_plugin_dock_widget``, empty settings so the bundled demonstration model is
the default choice), then *Segment*. Prints the time of each step and from opening the sample to the mask on screen,
and the lesion Dice of the masks against the phantom's label 7; saves the window as a PNG (the ground-truth labels
layer hidden, so the red mask is the model's). Run under a display (Xvfb is fine)::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_demo_model.py \\
        [--screenshot docs/segment_demo_model_1366x768.png]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshot", type=Path, default=None, help="save the window here (PNG)")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="napari-ssl-bench-home-")  # a first launch: no settings, no recent models
    os.environ.update(HOME=home, XDG_CONFIG_HOME=f"{home}/.config", XDG_DATA_HOME=f"{home}/.local/share",
                      XDG_CACHE_HOME=f"{home}/.cache")
    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    from napari_ssl.phantom import make_phantom

    def wait(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    wait(500)
    t0 = time.perf_counter()
    viewer.open_sample("napari-ssl", "phantom")
    t_sample = time.perf_counter()
    _, dock = viewer.window.add_plugin_dock_widget("napari-ssl", "Segment")
    t_dock = time.perf_counter()
    assert dock.info is not None, "no model chosen on a first launch"
    print(f"model chosen by default: {dock.model_box.currentText()}")
    loop = QEventLoop()
    worker = dock.run()
    assert worker is not None, dock.status.text()
    worker.finished.connect(loop.quit)
    loop.exec()
    while dock.staged.pending:
        wait(10)
    t_mask = time.perf_counter()
    masks = viewer.layers["phantom masks"]
    truth = make_phantom(seed=0)[1].array == 7
    found = np.asarray(masks.data) == 1
    dice = 2 * np.sum(truth & found) / (truth.sum() + found.sum())
    print(f"open sample {t_sample - t0:.2f} s; open Segment dock {t_dock - t_sample:.2f} s; click -> mask "
          f"{t_mask - t_dock:.2f} s (model loaded in the child after {dock.timings.get('model', float('nan')):.2f} s)")
    print(f"open sample -> lesion mask on screen: {t_mask - t0:.2f} s; lesion Dice vs the phantom's label 7: {dice:.3f}")
    print(f"status line: {dock.status.text()!r}; load average {os.getloadavg()}")
    if args.screenshot is not None:
        viewer.layers["phantom labels"].visible = False
        centre = np.argwhere(truth).mean(axis=0)
        world_z = viewer.layers["phantom"].data_to_world(centre)[0]
        viewer.dims.set_point(0, world_z)
        viewer.layers.selection.active = masks
        wait(300)
        viewer.screenshot(str(args.screenshot), canvas_only=False)
        print(f"saved {args.screenshot}")
    viewer.close()


if __name__ == "__main__":
    main()
