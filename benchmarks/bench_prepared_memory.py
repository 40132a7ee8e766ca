"""Memory and start-up of pretraining with the prepared dataset vs the in-RAM path (issue 22).

Writes N synthetic scans made deterministically from the shared BraTS MR (each a random flip and intensity scale
of one of the 52 t1/t1ce/t2/flair volumes, uncompressed NIfTI in a temporary folder), then runs a 3-step pretraining
(context, CPU, the plan's defaults, no DataLoader workers) in a fresh process for each setting and reports the
process's unique memory (USS, psutil) after the last step, its peak resident memory, the seconds from the imports
done to ``Started`` (data and model ready) and from the process start to the end of the first step; with the
cache, a second run on the unchanged folder too::

    python benchmarks/bench_prepared_memory.py --scans 20 60

On 2 CPU cores (shared with a test run, so the seconds are rough)::

    scans path                      USS MiB  peak RSS MiB  ready s  first step s
       20 in RAM (--no-cache)          1220          1514      6.7           9.7
       20 cache, first run              662           943      6.5          11.8
       20 cache, second run             634           855      3.9           9.3
       60 in RAM (--no-cache)          2509          2788     12.1          13.8
       60 cache, first run              673           958     11.8          15.9
       60 cache, second run             584           806      4.6           5.3

The in-RAM path grows by ~32 MiB a scan; with the cache the process's own memory stays flat (the arrays are mapped
pages of the page cache), and a second run on an unchanged folder decodes nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from proc_measure import DATA

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from napari_ssl import events
from napari_ssl.training.pretrain import PretrainConfig, pretrain
data, out, use_cache = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
cfg = PretrainConfig(pretexts=("context",), data=(data,), out=out, steps=3, device="cpu", num_workers=0,
                     val_samples=1, use_cache=use_cache, save_every=0)
first = ready = None
t1 = time.perf_counter()  # after the imports
for event in pretrain(cfg):
    if isinstance(event, events.Started):
        ready = time.perf_counter() - t1
    if isinstance(event, events.Progress) and first is None:
        first = time.perf_counter() - t0
    if isinstance(event, events.Progress) and event.step == 3:
        import psutil
        uss = psutil.Process().memory_full_info().uss
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"uss": uss, "peak": peak, "first_step_s": first, "ready_s": ready}))
"""


def make_scans(n: int, folder: Path) -> None:
    from napari_ssl import io

    sources = sorted(p for p in (DATA / "brats").glob("*/*.nii.gz") if p.name != "seg.nii.gz")
    if not sources:
        raise SystemExit(f"no BraTS scans under {DATA / 'brats'}")
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        vol = io.read(sources[i % len(sources)])
        array = np.asarray(vol.array, dtype=np.float32)
        for axis in range(3):
            if rng.random() < 0.5:
                array = np.flip(array, axis)
        array = (array * rng.uniform(0.8, 1.25)).astype(np.int16)
        io.write(vol.with_array(np.ascontiguousarray(array)), folder / f"scan{i:03d}.nii", compress=False)


def run(data: Path, out: Path, use_cache: bool) -> dict[str, float]:
    res = subprocess.run([sys.executable, "-c", CHILD, str(data), str(out), "1" if use_cache else "0"],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, nargs="+", default=[20, 60])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_prepared_memory_"))
    try:
        print(f"{'scans':>5s} {'path':24s} {'USS MiB':>8s} {'peak RSS MiB':>13s} {'ready s':>8s} {'first step s':>13s}")
        for n in args.scans:
            data = root / f"data{n}"
            make_scans(n, data)
            rows = [("in RAM (--no-cache)", run(data, root / f"ram{n}", False)),
                    ("cache, first run", run(data, root / f"cache{n}", True)),
                    ("cache, second run", run(data, root / f"cache{n}", True))]
            for name, r in rows:
                print(f"{n:5d} {name:24s} {r['uss'] / 2**20:8.0f} {r['peak'] / 2**20:13.0f} {r['ready_s']:8.1f} "
                      f"{r['first_step_s']:13.1f}")
            shutil.rmtree(data)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
