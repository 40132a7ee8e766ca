"""Pretrain dock benchmark: event-loop stalls idle vs training, and dock vs CLI training throughput.

Run under a display (Xvfb is fine)::

    xvfb-run -a python benchmarks/bench_gui.py [--steps 60] [--screenshot docs/pretrain_dock.png]

1. **Stalls.** A 10 ms ``QTimer`` probe (:class:`napari_ssl._napari.pretrain.probe.StallProbe`) measures how
   late the viewer's event loop serves it: for ``--idle`` seconds with the dock open and nothing running, then
   during a dock run (from Start to the end, child start-up included, and the training steps alone).
   Goal: p99 <= 33 ms, max <= 100 ms.
2. **Throughput.** The same config (a real scan, ``--pretexts``, tiny backbone, 32^3 patches, batch 2, CPU) is
   trained three ways, one after the other: in the dock (child process + relay), by the engine generator in a
   plain process (what the CLI wraps), and by the real ``napari-ssl pretrain`` CLI. Steady-state samples/s is
   timed between Progress events after ``--warmup`` steps; end-to-end wall time includes process start-up.
   Goal: dock >= 0.9x the CLI.

The machine is shared: numbers vary with the load, which is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_SSL_DATA", REPO.parent / "shared" / "data"))
SCAN = DATA / "ct_unlabeled" / "ct_thorax_abdomen.nii.gz"


def steady_rate(times: list[float], steps: list[int], warmup: int, batch: int) -> float:
    """Samples/s between the Progress event at step ``warmup`` and the last one."""
    pairs = [(t, s) for t, s in zip(times, steps, strict=True) if s >= warmup]
    if len(pairs) < 2:
        return float("nan")
    (t0, s0), (t1, s1) = pairs[0], pairs[-1]
    return (s1 - s0) * batch / (t1 - t0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def config_kwargs(args: argparse.Namespace, out: str) -> dict:
    return {
        "pretexts": tuple(args.pretexts.split(",")),
        "data": (str(SCAN),),
        "out": out,
        "steps": args.steps,
        "batch_size": 2,
        "patch_size": 32,
        "backbone": "tiny",
        "device": "cpu",
        "seed": 0,
        "save_every": 0,
        "val_samples": 2,
    }


# ---------------------------------------------------------------- plain-process engine run (the CLI's loop)
def engine_child(args: argparse.Namespace) -> None:
    """Runs in a fresh interpreter: the engine generator with no GUI; prints JSON timings."""
    t_start = time.perf_counter()
    from napari_ssl.events import Progress
    from napari_ssl.training.pretrain import PretrainConfig, pretrain

    with tempfile.TemporaryDirectory() as tmp:
        times, steps, cpu = [], [], []
        for event in pretrain(PretrainConfig(**config_kwargs(args, str(Path(tmp) / "ck")))):
            if isinstance(event, Progress):
                times.append(time.perf_counter())
                steps.append(event.step)
                cpu.append(time.process_time())
    k = steps.index(args.warmup)
    print(
        json.dumps(
            {
                "rate": steady_rate(times, steps, args.warmup, 2),
                "wall": time.perf_counter() - t_start,
                "cpu_rate": (steps[-1] - steps[k]) * 2 / (cpu[-1] - cpu[k]),
            }
        )
    )


def run_engine_plain(args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--engine-child",
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--pretexts",
        args.pretexts,
    ]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    result = json.loads(out)
    result["wall"] = time.perf_counter() - t0
    return result


def run_cli(args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "napari_ssl.cli",
            "pretrain",
            "--pretext",
            args.pretexts,
            "--data",
            str(SCAN),
            "--out",
            str(Path(tmp) / "ck"),
            "--steps",
            str(args.steps),
            "--batch-size",
            "2",
            "--patch-size",
            "32",
            "--backbone",
            "tiny",
            "--device",
            "cpu",
            "--seed",
            "0",
            "--save-every",
            "0",
            "--quiet",
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        return time.perf_counter() - t0


# ---------------------------------------------------------------- the dock
def run_dock(args: argparse.Namespace) -> dict:
    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    from napari_ssl import io
    from napari_ssl._napari.layers import volume_to_layer_data
    from napari_ssl._napari.pretrain.dock import PretrainDock
    from napari_ssl._napari.pretrain.form import FOLDER
    from napari_ssl._napari.pretrain.probe import StallProbe, stall_stats
    from napari_ssl.events import Finished, Progress, Started

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    data, kwargs, layer_type = volume_to_layer_data(io.read(SCAN), "image", name="ct_thorax_abdomen")
    viewer._add_layer_from_data(data, kwargs, layer_type)
    viewer.dims.set_point(
        0, viewer.dims.range[0].start + 0.55 * (viewer.dims.range[0].stop - viewer.dims.range[0].start)
    )
    dock = PretrainDock(viewer)
    dock_widget = viewer.window.add_dock_widget(dock, name="Pretrain", area="right")
    if args.float_dock:  # the dock as its own window: its repaints do not recompose the viewer's (OpenGL) window
        dock_widget.setFloating(True)
    form = dock.form
    form.source.setCurrentText(FOLDER)
    form.folder.path = SCAN.parent
    form.set_pretexts(args.pretexts.split(","))
    form.backbone.setCurrentIndex(form.backbone.findData("tiny"))
    form.steps.setValue(args.steps)
    form.batch.setValue(2)
    form.patch.setValue(32)
    form.device.setCurrentIndex(form.device.findData("cpu"))
    form.save_every.setValue(0)
    tmp = tempfile.TemporaryDirectory()
    form.out.path = Path(tmp.name) / "ck"

    def pump(seconds: float) -> None:
        """Run the real event loop (no polling: a busy loop would compete with the child for the CPU)."""
        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()

    pump(2.0)
    probe = StallProbe(interval_ms=10)
    probe.start()
    pump(args.idle)
    probe.stop()
    idle = probe.stats()

    times: list[float] = []
    steps: list[int] = []
    state = {"started": None, "shot": False}
    train_gaps: list[float] = []
    all_gaps: list[float] = []

    def on_event(event: object) -> None:
        if isinstance(event, Finished):
            state["finished"] = time.perf_counter()
        if isinstance(event, Started):
            state["started"] = time.perf_counter()
            state["cpu0"] = time.process_time()
        if isinstance(event, Progress):
            times.append(time.perf_counter())
            steps.append(event.step)
            try:
                state.setdefault("cpu", []).append(cpu_seconds(relay.pid))
            except OSError:
                state.setdefault("cpu", []).append(float("nan"))

    def screenshot() -> None:
        # the screenshot itself blocks the loop: keep it out of the statistics
        probe.stop()
        all_gaps.extend(probe.gaps_ms)
        train_gaps.extend(
            g
            for a, g in zip(probe.at, probe.gaps_ms, strict=True)
            if state["started"] and state["started"] <= a < state.get("finished", float("inf"))
        )
        dock.plot.flush()
        pump(0.3)
        Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(args.screenshot), canvas_only=False)
        pump(
            1.5
        )  # the window re-renders after a screenshot (software OpenGL under Xvfb): not the dock's doing
        probe.start()

    def maybe_screenshot(event: object) -> None:
        if (
            args.screenshot
            and not state["shot"]
            and isinstance(event, Progress)
            and event.step >= args.steps // 2
        ):
            state["shot"] = True
            QTimer.singleShot(0, screenshot)

    loop = QEventLoop()
    t_click = time.perf_counter()
    relay = dock.start()
    assert relay is not None
    relay.worker.yielded.connect(on_event)
    relay.worker.yielded.connect(maybe_screenshot)
    relay.worker.finished.connect(loop.quit)
    probe.start()
    loop.exec()
    t_done = time.perf_counter()
    gui_cpu = (time.process_time() - state.get("cpu0", time.process_time())) / max(
        t_done - (state["started"] or t_done), 1e-9
    )
    probe.stop()
    all_gaps += probe.gaps_ms
    train_gaps += [
        g
        for a, g in zip(probe.at, probe.gaps_ms, strict=True)
        if state["started"] and state["started"] <= a < state.get("finished", float("inf"))
    ]
    viewer.close()
    tmp.cleanup()
    return {
        "idle": idle,
        "run": stall_stats(all_gaps),
        "steps": stall_stats(train_gaps),
        "rate": steady_rate(times, steps, args.warmup, 2),
        "wall": t_done - t_click,
        "startup": (state["started"] or t_done) - t_click,
        "gui_cpu": gui_cpu,
        "cpu_rate": _cpu_rate(steps, state.get("cpu", []), args.warmup),
    }


def _cpu_rate(steps: list[int], cpu: list[float], warmup: int) -> float:
    """Samples per CPU-second of the training process between step ``warmup`` and the last step."""
    if warmup not in steps:
        return float("nan")
    k = steps.index(warmup)
    return (steps[-1] - steps[k]) * 2 / max(cpu[-1] - cpu[k], 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--pretexts", default="rubik,context")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle probing")
    parser.add_argument("--float-dock", action="store_true", help="float the dock in its own window (diagnosis)")
    parser.add_argument("--screenshot", type=Path, default=None, help="save the window mid-training here")
    parser.add_argument(
        "--stalls-only", action="store_true", help="only the dock run's stalls (no plain-process / CLI runs)"
    )
    parser.add_argument("--engine-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine_child:
        engine_child(args)
        return
    if not SCAN.exists():
        sys.exit(f"bench_gui: real scan not found at {SCAN} (set NAPARI_SSL_DATA)")

    def fmt(s: dict) -> str:
        return f"p50 {s['p50']:6.1f} ms  p99 {s['p99']:6.1f} ms  max {s['max']:6.1f} ms  (n={s['n']})"

    print(f"load average before: {os.getloadavg()}  cores: {len(os.sched_getaffinity(0))}")
    if args.stalls_only:
        dock = run_dock(args)
        print(f"stalls idle                 : {fmt(dock['idle'])}")
        print(f"stalls dock run (Start click .. child gone): {fmt(dock['run'])}")
        print(f"stalls dock run (Started..Finished, the training steps): {fmt(dock['steps'])}")
        print(f"load average after: {os.getloadavg()}")
        return
    plain_runs = [run_engine_plain(args)]  # plain, dock, plain: the shared machine's load drifts
    dock = run_dock(args)
    plain_runs.append(run_engine_plain(args))
    cli_wall = run_cli(args)
    plain = {k: sum(r[k] for r in plain_runs) / len(plain_runs) for k in ("rate", "wall", "cpu_rate")}
    print(
        f"config: {args.pretexts}, tiny backbone, 32^3 patches, batch 2, {args.steps} steps, CPU, {SCAN.name}"
    )
    print(f"stalls idle                 : {fmt(dock['idle'])}")
    print(f"stalls dock run (Start click .. child gone, finish toast included): {fmt(dock['run'])}")
    print(f"stalls dock run (Started..Finished, the training steps): {fmt(dock['steps'])}")
    print(
        f"throughput dock  : {dock['rate']:.2f} samples/s (steady, after step {args.warmup}); "
        f"click->done {dock['wall']:.1f} s (child ready after {dock['startup']:.1f} s)"
    )
    print(f"viewer process CPU while the child trains: {100 * dock['gui_cpu']:.0f}% of one core")
    print(
        "throughput engine, plain process (the CLI's loop), before/after the dock: "
        + ", ".join(f"{r['rate']:.2f}" for r in plain_runs)
        + f" samples/s; wall {plain['wall']:.1f} s"
    )
    print(
        f"samples per CPU-second of the training process: dock child {dock['cpu_rate']:.2f}, "
        f"plain process {plain['cpu_rate']:.2f} -> ratio {dock['cpu_rate'] / plain['cpu_rate']:.2f}x"
    )
    print(f"napari-ssl pretrain CLI wall: {cli_wall:.1f} s")
    print(
        f"ratio dock / plain-process samples/s (wall): {dock['rate'] / plain['rate']:.2f}x; "
        f"CLI wall / dock wall: {cli_wall / dock['wall']:.2f}x"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
