"""Pretext speed against one ``np.copy`` of the same 128^3 float32 volume, measured in one process.

Run: ``python benchmarks/bench_pretext.py [--repeat N] [--size S]``. Prints, for each pretext, the best
time of ``sample + apply`` and its ratios (wall clock and CPU time) to the best time of one copy timed
alternately with it, on one core. Goals (issue 3): Rubik and context <= 3x one copy; three 128x128 planes
resampled <= 1x one copy. With a CUDA device it also times batched torch on the GPU against one ``clone``
of the same batch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, like np.copy
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from napari_ssl.pretext import ContextRestoration, ImagingPlanes, RubikCube  # noqa: E402


def paired_times(
    fn: Callable[[], object], base: Callable[[], object], repeat: int, sync: Callable[[], None] | None = None
) -> tuple[float, float, float, float]:
    """Best times of ``fn`` and of ``base`` in seconds, wall clock and CPU (this thread), alternated.

    Returns ``(wall_fn, wall_base, cpu_fn, cpu_base)``. The two run alternately, so both see the same
    machine load; the best of many runs is the least disturbed by other processes on a shared CPU (as
    ``timeit`` recommends). CPU time leaves out the time the process waits for a core; on CUDA only wall
    time means anything.
    """
    for _ in range(2):
        fn()
        base()
    wall: dict[int, list[float]] = {0: [], 1: []}
    cpu: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(repeat):
        for key, f in ((1, base), (0, fn)):
            if sync:
                sync()
            w0, c0 = time.perf_counter(), time.thread_time()
            f()
            if sync:
                sync()
            cpu[key].append(time.thread_time() - c0)
            wall[key].append(time.perf_counter() - w0)
    return min(wall[0]), min(wall[1]), min(cpu[0]), min(cpu[1])


def cases(shape: tuple[int, ...]) -> list[tuple[str, object, float | None]]:
    return [
        ("rubik (grid 2, K 100, gap 10)", RubikCube(), 3.0),
        ("rubik (gap 0)", RubikCube(gap=0), 3.0),
        ("context (T 20, 16^3 patches)", ContextRestoration(), 3.0),
        ("context (T 100, 8^3 patches)", ContextRestoration(n_swaps=100, patch_size=8), None),
        ("context 2d (T 20, 16^2)", ContextRestoration(mode="2d"), None),
        ("planes: 3 x 128^2", ImagingPlanes(n_stack=0, n_oblique=3, size=128), 1.0),
        ("planes: 8 stack + 3 oblique", ImagingPlanes(), None),
    ]


Row = tuple[str, float, float, float, "float | None"]  # name, best wall s, wall ratio, CPU ratio, goal


def run_cpu(size: int, repeat: int) -> list[Row]:
    rng = np.random.default_rng(0)
    x = rng.random((size, size, size), dtype=np.float32)

    def copy() -> object:
        return np.copy(x)

    _, base, _, _ = paired_times(copy, copy, repeat)
    rows: list[Row] = [("np.copy (baseline)", base, 1.0, 1.0, None)]
    for name, task, goal in cases(x.shape):
        t, b, ct, cb = paired_times(lambda task=task: task.apply(x, task.sample(x.shape, rng)), copy, repeat)
        rows.append((name, t, t / b, ct / cb, goal))
    planes = ImagingPlanes()
    params = planes.sample(x.shape, rng)
    t, b, ct, cb = paired_times(lambda: planes.targets(params), copy, max(5, repeat // 4))
    rows.append(("planes targets (11 x 11 heatmaps of 128^2)", t, t / b, ct / cb, None))
    try:
        import torch
    except ImportError:  # pragma: no cover
        return rows
    xt = torch.from_numpy(x)
    t, b, ct, cb = paired_times(lambda: xt.clone(), copy, repeat)
    rows.append(("torch CPU: clone", t, t / b, ct / cb, None))
    for name, task, _ in [cases(x.shape)[k] for k in (0, 2, 5)]:
        t, b, ct, cb = paired_times(lambda task=task: task.apply(xt, task.sample(x.shape, rng)), copy, repeat)
        rows.append((f"torch CPU: {name}", t, t / b, ct / cb, None))
    return rows


def run_cuda(size: int, repeat: int, batch: int) -> list[Row]:
    import torch

    if not torch.cuda.is_available():
        return []
    rng = np.random.default_rng(0)
    x = torch.rand(batch, 1, size, size, size, device="cuda")
    sync = torch.cuda.synchronize

    def clone() -> object:
        return x.clone()

    _, base, _, _ = paired_times(clone, clone, repeat, sync)
    rows: list[Row] = [
        (f"CUDA {torch.cuda.get_device_name()}: clone ({batch}, 1, {size}^3)", base, 1.0, 1.0, None)
    ]
    for name, task, _ in cases((size,) * 3):
        t, b, _, _ = paired_times(
            lambda task=task: task.apply(x, task.sample(x.shape, rng)), clone, repeat, sync
        )
        rows.append((f"CUDA batch {batch}: {name}", t, t / b, t / b, None))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8, help="CUDA batch size")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: like np.copy, which uses one core)"
    )
    args = parser.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:  # pragma: no cover
        pass
    rows = run_cpu(args.size, args.repeat) + run_cuda(args.size, args.repeat, args.batch)
    print(f"{'case (sample + apply)':<50} {'best ms':>9} {'wall x':>7} {'CPU x':>7}  goal (on CPU time)")
    ok = True
    for name, t, ratio, cpu_ratio, goal in rows:
        verdict = ""
        if goal is not None:
            verdict = f"<= {goal:g}x {'ok' if cpu_ratio <= goal else 'MISSED'}"
            ok &= cpu_ratio <= goal
        print(f"{name:<50} {t * 1e3:9.3f} {ratio:7.2f} {cpu_ratio:7.2f}  {verdict}")
    print(
        "wall x / CPU x: best wall-clock / best CPU time over the best of one copy timed alternately with it"
    )
    print("all goals met" if ok else "some goals missed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
