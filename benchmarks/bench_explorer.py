"""How long a Pretext explorer preview update takes on a 256^3 volume (benchmark, not a test).

For each pretext, in one process and one napari viewer:

- ``compute``: the worker's job alone (:func:`compute_preview`: sample + apply + overlay geometry);
- ``update``: a parameter change to the preview drawn, i.e. ``dock.preview()`` until ``preview_ready``
  (worker + layer updates in place on the GUI thread), median of ``--repeat`` updates after a warm-up;
  measured with the viewer in 2D and in 3D (3D re-uploads the volume texture).

Both are also given as ratios to one ``np.copy`` of the same volume, measured in the same process.
The volume is the MNI152 T1 template from ``../shared/data`` zero-padded to 256^3 (float32, 64 MiB).

Run under a display (``xvfb-run -a python benchmarks/bench_explorer.py``); ``--show`` opens a real window
so that GPU uploads are included (software OpenGL under Xvfb).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("NAPARI_SSL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

SETTINGS = {  # the change made for each timed update, alternating between two values
    "rubik": ("gap", (8, 10)),
    "context": ("n_swaps", (20, 21)),
    "planes": ("sigma", (7.56, 8.0)),
}


def volume_256():
    from napari_ssl import io

    mni = io.read(DATA / "mni152" / "t1.nii.gz")
    out = np.zeros((256, 256, 256), dtype=np.float32)
    z, y, x = mni.spatial_shape
    out[:z, :y, :x] = mni.array
    return mni.with_array(out, name="mni256")


def time_copy(array: np.ndarray, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        np.copy(array)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--show", action="store_true", help="open the window (include texture uploads)")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_ssl._napari.explorer import PretextExplorer
    from napari_ssl._napari.explorer_compute import PreviewRequest, compute_preview
    from napari_ssl._napari.layers import volume_to_layer_data

    vol = volume_256()
    copy_s = time_copy(vol.array)
    print(f"volume {vol.array.shape} {vol.array.dtype}; one np.copy: {copy_s * 1e3:.1f} ms")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at start: {load:.1f} on {os.cpu_count()} CPUs")

    viewer = napari.Viewer(show=args.show)
    data, kwargs, _ = volume_to_layer_data(vol, "image")
    viewer.add_image(data, **kwargs)
    dock = PretextExplorer(viewer)
    dock.auto.setChecked(False)
    viewer.window.add_dock_widget(dock, name="Pretext explorer")
    dock.set_source("mni256")

    def update() -> float:
        done: list[float] = []
        dock.preview_ready.connect(lambda _: done.append(time.perf_counter()))
        start = time.perf_counter()
        worker = dock.preview()
        if worker is None:
            raise RuntimeError(dock.status.text())
        while not done:
            QApplication.processEvents()
            time.sleep(0.001)
        dock.preview_ready.disconnect()
        for _ in range(3):
            QApplication.processEvents()
        return done[0] - start

    rows = []
    for pretext, (param, values) in SETTINGS.items():
        dock.set_pretext(pretext)
        widget = dock.params[pretext]
        request = PreviewRequest(pretext=pretext, values=widget.values(), volume=vol, source="mni256")
        compute_preview(request)  # warm caches (permutation set, torch)
        t = time.perf_counter()
        compute_preview(request)
        compute_s = time.perf_counter() - t
        for ndisplay in (2, 3):
            viewer.dims.ndisplay = ndisplay
            widget.set_values({param: values[0]})
            update()  # warm-up: creates the layers
            times = []
            for k in range(args.repeat):
                widget.set_values({param: values[(k + 1) % 2]})
                times.append(update())
            rows.append((pretext, ndisplay, compute_s, statistics.median(times)))
        dock.remove_previews()
    print(f"{'pretext':<9}{'view':>5}{'compute ms':>12}{'x copy':>8}{'update ms':>11}{'x copy':>8}")
    for pretext, ndisplay, compute_s, update_s in rows:
        print(
            f"{pretext:<9}{ndisplay:>4}D{compute_s * 1e3:>12.0f}{compute_s / copy_s:>8.1f}"
            f"{update_s * 1e3:>11.0f}{update_s / copy_s:>8.1f}"
        )
    viewer.close()


if __name__ == "__main__":
    main()
