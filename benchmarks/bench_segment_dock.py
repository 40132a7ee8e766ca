"""Segment dock vs ``napari-ssl segment`` CLI on the same scan and model, measured in one run.

Run under a display (Xvfb is fine)::

    xvfb-run -a python benchmarks/bench_segment_dock.py [--model DIR] [--case Brats18_2013_23_1]

Without ``--model`` a small model is fine-tuned first (``napari-ssl finetune ... --steps 5 --spacing 3 3 3``,
tiny backbone: quality is not the point, the time of segmentation is). Then, one after the other: the CLI
(a fresh process: start, imports, load, segment, write), the dock twice in one viewer (click -> masks layer
added and its overlays built; the first run starts the warm worker, the second reuses it), the CLI again. The event loop's stalls
during the dock runs are measured with a 10 ms probe (also from opening the dock to the first click, which
includes the dock's one-time warm-up). Target: dock <= 1.2x the CLI; stalls p99 <= 33 ms, max <= 100 ms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_SSL_DATA", REPO.parent / "shared" / "data"))


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def train(out: Path, case: Path) -> None:
    cmd = [sys.executable, "-m", "napari_ssl.cli", "finetune", "--pretrained", "none",
           "--images", str(case / "flair.nii.gz"), "--labels", str(case / "seg.nii.gz"),
           "--classes", "whole_tumor=1+2+4", "--out", str(out), "--steps", "5", "--spacing", "3", "3", "3",
           "--backbone", "tiny", "--patch-size", "32", "--quiet"]
    subprocess.run(cmd, check=True, env=env(), capture_output=True)


def run_cli(model: Path, scan: Path, tmp: Path) -> float:
    cmd = [sys.executable, "-m", "napari_ssl.cli", "segment", "--model", str(model), "--input", str(scan),
           "--output", str(tmp / "cli_masks.nii.gz"), "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env(), capture_output=True)
    return time.perf_counter() - t0


def run_dock(model: Path, scan: Path, runs: int = 2) -> list[dict]:
    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    from napari_ssl import io
    from napari_ssl._napari.layers import volume_to_layer_data
    from napari_ssl._napari.pretrain.probe import StallProbe
    from napari_ssl._napari.segment.dock import SegmentDock

    viewer = napari.Viewer(show=True)
    data, kwargs, kind = volume_to_layer_data(io.read(scan), "image", name="flair")
    viewer._add_layer_from_data(data, kwargs, kind)
    def wait(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    try:
        from napari_ssl._napari.segment.masks import WARMED as warmed
    except ImportError:  # an older dock (no warm-up): the same measurement, for before/after
        warmed = None
    probe = StallProbe(10)
    probe.start()
    t0 = time.perf_counter()
    dock = SegmentDock(viewer)
    viewer.window.add_dock_widget(dock, name="Segment")
    dock.load_model(model)
    dock.options.device.setCurrentIndex(dock.options.device.findData("cpu"))
    wait(1000)  # a user takes longer than this to pick a model and click
    while warmed is not None and not warmed.is_set() and time.perf_counter() - t0 < 10:  # the one-time warm-up
        wait(50)
    wait(100)
    probe.stop()
    worst = [(round(at - t0, 2), round(ms, 1)) for at, ms in probe.worst(3)]
    out = [{"wall": time.perf_counter() - t0, "stalls": probe.stats(), "worst": worst, "timings": {}}]
    for _ in range(runs):
        probe = StallProbe(10)
        loop = QEventLoop()
        probe.start()
        t0 = time.perf_counter()
        worker = dock.run()  # the click's own turn counts too
        worker.finished.connect(loop.quit)
        loop.exec()
        staged = getattr(dock, "staged", None)
        while staged is not None and staged.pending:  # a new layer is shown in the next event-loop turns
            wait(10)
        wall = time.perf_counter() - t0
        wait(100)  # a stall in the last turn shows at the probe's next tick
        probe.stop()
        worst = [(round(at - t0, 2), round(ms, 1)) for at, ms in probe.worst(3)]
        out.append({"wall": wall, "stalls": probe.stats(), "worst": worst, "timings": dict(dock.timings)})
        assert "flair masks" in viewer.layers, dock.status.text()
    viewer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--train-case", default="Brats18_2013_11_1")
    parser.add_argument("--case", default="Brats18_2013_23_1")
    args = parser.parse_args()
    scan = DATA / "brats" / args.case / "flair.nii.gz"
    if not scan.exists():
        sys.exit(f"bench_segment_dock: {scan} not found (set NAPARI_SSL_DATA)")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        model = args.model
        if model is None:
            model = tmp / "model"
            t0 = time.perf_counter()
            train(model, DATA / "brats" / args.train_case)
            print(f"fine-tuned a tiny model at 3 mm in {time.perf_counter() - t0:.1f} s")
        print(f"load average before: {os.getloadavg()}")
        cli = [run_cli(model, scan, tmp)]
        dock = run_dock(model, scan)
        cli.append(run_cli(model, scan, tmp))
    cli_mean = sum(cli) / len(cli)
    print(f"scan {scan.parent.name}/flair.nii.gz, model {model}")
    print("CLI segment wall: " + ", ".join(f"{t:.1f} s" for t in cli) + f" (mean {cli_mean:.1f} s)")
    opened, dock = dock[0], dock[1:]
    s = opened["stalls"]
    print(f"dock open -> first click {opened['wall']:.1f} s (one-time warm-up: imports, a garbage collection): "
          f"stalls p99 {s['p99']:.1f} ms max {s['max']:.1f} ms; worst (s after opening, ms): "
          + ", ".join(f"{a:.2f} s {m:.0f} ms" for a, m in opened["worst"]))
    for i, run in enumerate(dock):
        s = run["stalls"]
        print(f"dock run {i + 1} ({'starts the warm worker' if i == 0 else 'warm'}): click -> masks "
              f"{run['wall']:.1f} s (model loaded after {run['timings'].get('model', float('nan')):.1f} s) "
              f"-> ratio {run['wall'] / cli_mean:.2f}x the CLI; stalls p99 {s['p99']:.1f} ms max {s['max']:.1f} ms")
        print("  worst stalls (s after the click, ms): " + ", ".join(f"{a:.2f} s {m:.0f} ms" for a, m in run["worst"])
              + f"; result relayed at {run['timings'].get('result', float('nan')):.2f} s")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
