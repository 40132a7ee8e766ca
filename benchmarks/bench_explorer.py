"""How long a Pretext explorer preview update takes on a 256^3 volume (benchmark, not a test).

For each pretext, in one process and one napari viewer:

- ``compute``: the worker's job alone (:func:`compute_preview`: sample + apply + overlay geometry);
- ``update``: a parameter change to the preview drawn, i.e. ``dock.preview()`` until ``preview_ready``
  (worker + layer updates in place on the GUI thread), median of ``--repeat`` updates after a warm-up;
  measured with the viewer in 2D and in 3D (3D re-uploads the volume texture).

Both are also given as ratios to one ``np.copy`` of the same volume, measured in the same process.
The volume is the MNI152 T1 template from ``../shared/data`` zero-padded to 256^3 (float32, 64 MiB).

Run under a display (``xvfb-run -a python benchmarks/bench_explorer.py``); ``--show`` opens a real window
so that GPU uploads are included (software OpenGL under Xvfb). The foreground mask (on by default in the dock)
is part of ``compute``; its own time is printed too.

``--screenshots DIR`` instead drives the dock as a user would, in a 1366x768 window, on a BraTS flair, the
thorax-abdomen CT and the cardiac exam, and saves ``explorer_<scan>_<pretext>_<2d|3d>.png`` (the README's
pictures: ``xvfb-run -a -s "-screen 0 1400x900x24" python benchmarks/bench_explorer.py --screenshots docs``).
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
    "genesis": ("n_boxes", (5, 4)),
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
    parser.add_argument("--screenshots", type=Path, help="save the README's screenshots in this folder")
    args = parser.parse_args()
    if args.screenshots is not None:
        screenshots(args.screenshots)
        return

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_ssl._napari.explorer.dock import PretextExplorer
    from napari_ssl._napari.explorer.preview import compute_preview
    from napari_ssl._napari.layers import volume_to_layer_data
    from napari_ssl.io.foreground import foreground_mask
    from napari_ssl.pretext._explore import PreviewRequest

    vol = volume_256()
    copy_s = time_copy(vol.array)
    print(f"volume {vol.array.shape} {vol.array.dtype}; one np.copy: {copy_s * 1e3:.1f} ms")
    t = time.perf_counter()
    foreground_mask(vol.array)
    print(f"foreground mask (part of every compute below): {(time.perf_counter() - t) * 1e3:.1f} ms")
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


# ------------------------------------------------------------------------------------------ screenshots
SHOTS = {  # scan -> pretext -> parameters
    "brats": {
        "rubik": {"gap": 10},
        "context": {"n_swaps": 20, "patch_size": 16.0},
        "planes": {"n_stack": 8, "n_oblique": 3, "size": 128},
        "genesis": {"p_shuffle": 1.0, "p_intensity": 1.0, "p_paint": 1.0, "p_inpaint": 1.0},
    },
    "ct": {
        "rubik": {"gap": 4},
        "context": {"n_swaps": 20, "patch_size": 24.0, "unit": "mm"},
        "planes": {"n_stack": 8, "n_oblique": 3, "size": 128},
        "genesis": {"p_shuffle": 1.0, "p_intensity": 0.0, "p_paint": 1.0, "p_inpaint": 0.0},
    },
}


def explorer_window():
    """A shown 1366x768 viewer with the Pretext explorer docked (no preview on every change), and ``pump(n)``,
    which lets the event loop run ``n`` short rounds: what the screenshot scripts drive."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_ssl._napari.explorer.dock import PretextExplorer

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    dock = PretextExplorer(viewer)
    dock.auto.setChecked(False)
    viewer.window.add_dock_widget(dock, name="Pretext explorer")

    def pump(n: int = 5) -> None:
        for _ in range(n):
            QApplication.processEvents()
            time.sleep(0.02)

    return viewer, dock, pump


def screenshots(out: Path) -> None:
    """Every pretext in 2D and 3D on a BraTS flair and the CT, and the native cardiac views, as PNGs."""

    from napari_ssl import io
    from napari_ssl._napari.explorer.dock import ALL_VIEWS
    from napari_ssl._napari.layers import volume_to_layer_data
    from napari_ssl._napari.reader import read_layers

    out.mkdir(parents=True, exist_ok=True)
    viewer, dock, pump = explorer_window()

    def run() -> None:
        done: list[object] = []
        dock.preview_ready.connect(done.append)
        if dock.preview() is None:
            raise RuntimeError(dock.status.text())
        while not done:
            pump(1)
        dock.preview_ready.disconnect()
        pump()

    def shot(name: str, angles: bool = False) -> None:
        if angles:
            viewer.reset_view()
            viewer.camera.angles = (-15.0, 35.0, 140.0)
            viewer.camera.zoom *= 0.85
        pump()
        viewer.screenshot(str(out / f"explorer_{name}.png"), canvas_only=False, flash=False)
        print("wrote", out / f"explorer_{name}.png")

    scans = {
        "brats": DATA / "brats" / "Brats18_TCIA02_370_1" / "flair.nii.gz",
        "ct": DATA / "ct_unlabeled" / "ct_thorax_abdomen.nii.gz",
    }
    for scan, path in scans.items():
        viewer.layers.clear()
        viewer.dims.ndisplay = 2
        vol = io.read(path)
        data, kwargs, _ = volume_to_layer_data(vol.with_array(vol.array, name=scan), "image")
        viewer.add_image(data, **kwargs)
        dock.set_source(scan)
        for pretext, values in SHOTS[scan].items():
            viewer.dims.ndisplay = 2
            dock.set_pretext(pretext)
            dock.params[pretext].set_values(values)
            run()
            if pretext == "planes":  # select the third plane: framed in the grid, named in 3D
                dock.step.setValue(2)
            viewer.reset_view()
            if pretext == "context":  # close on the current swap, which the preview went to
                viewer.camera.zoom *= 1.6
                go = dock.last_preview.focus
                if go is not None:
                    viewer.camera.center = tuple(viewer.layers[scan].data_to_world(go)[1:])
            shot(f"{scan}_{pretext}_2d")
            viewer.dims.ndisplay = 3
            shot(f"{scan}_{pretext}_3d", angles=True)
    viewer.layers.clear()
    viewer.dims.ndisplay = 3
    for data, kwargs, layer_type in read_layers(DATA / "cardiac_views" / "056B"):
        viewer._add_layer_from_data(data, kwargs, layer_type)
    dock.set_pretext("planes")
    dock.set_source(ALL_VIEWS)
    run()
    shot("cardiac_views_3d", angles=True)
    viewer.close()


if __name__ == "__main__":
    main()
