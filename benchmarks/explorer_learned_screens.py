"""Screenshots of "see what the network learned" in the Pretext explorer: a pretraining checkpoint's answer on a
scan it never saw, for every pretext it learned, with the network's own pretext parameters.

    xvfb-run -a -s "-screen 0 1400x900x24" python benchmarks/explorer_learned_screens.py \\
        --model CKPT --scan ../shared/data/brats/Brats18_TCIA10_639_1/flair.nii.gz --out docs

writes ``explorer_learned_<pretext>.png`` (2D view; the window is 1366x768) and prints each answer's sentence and
how long the network took.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from bench_explorer import explorer_window  # the same window as the README's other explorer screenshots

    from napari_ssl import io
    from napari_ssl._napari.layers import volume_to_layer_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pretraining checkpoint folder")
    parser.add_argument("--scan", required=True, help="a 3D scan the network did not see")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    viewer, dock, pump = explorer_window()

    def wait(signal) -> object:
        got: list[object] = []
        signal.connect(got.append)
        while not got:
            pump(1)
        signal.disconnect(got.append)
        return got[0]

    vol = io.read(args.scan)
    data, kwargs, _ = volume_to_layer_data(vol.with_array(vol.array, name="scan"), "image")
    viewer.add_image(data, **kwargs)
    dock.set_source("scan")
    dock.seed.setValue(args.seed)
    if not dock.learned.add_checkpoint(args.model):
        raise SystemExit(dock.learned.status.text())
    for pretext in dock.learned._meta().get("pretexts", []):
        viewer.dims.ndisplay = 2
        dock.set_pretext(pretext)
        dock.learned.use_network_parameters()
        if pretext == "context":
            dock.params["context"].set_values({"n_swaps": 40})
        t0 = time.monotonic()
        dock.preview()
        wait(dock.preview_ready)
        t1 = time.monotonic()
        answer = wait(dock.learned.answer_ready)
        print(f"{pretext}: preview {t1 - t0:.1f} s, network {time.monotonic() - t1:.1f} s: {answer.summary}")
        if pretext == "context":  # a slice through the swap nearest the middle of the scan
            boxes = dock.last_preview.boxes
            z = (boxes[:, 0, 0] + boxes[:, 1, 0] - 1) / 2
            pick = float(z[np.argmin(np.abs(z - vol.spatial_shape[0] / 2))])
            viewer.dims.set_point(0, float(viewer.layers["scan"].data_to_world((pick, 0, 0))[0]))
        viewer.reset_view()
        viewer.camera.zoom *= 0.75 if pretext == "planes" else 0.9  # room for the canvas text
        pump(10)
        path = args.out / f"explorer_learned_{pretext}.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        print("wrote", path)
    viewer.close()


if __name__ == "__main__":
    main()
