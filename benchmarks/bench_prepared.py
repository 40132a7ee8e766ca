"""Which on-disk format holds the prepared dataset (issue 22): ``.npy`` memory maps vs blosc2 (vs zarr if installed).

For a few shared scans after preprocessing (float32 on the model grid), each format is written, then read back as
random 48^3 patches. Reported per format: build time (write only; the preprocessing is common), size on disk and the
median time of one random patch (page cache warm: the second epoch onwards; a cold read adds the disk's latency to
every format alike)::

    python benchmarks/bench_prepared.py [--patches 200] [--patch 48]

Run on 2 CPU cores (ct_unlabeled, mni152 t1, brats t1 at their own spacing, z-scored)::

    format   build s   MB on disk   patch read ms (median)
    npy        0.10       75.9          0.12
    blosc2     0.57       12.5          0.95

The ``.npy`` memory map reads a patch ~8x faster, builds ~6x faster and needs no dependency (a patch is a strided
view of pages the kernel caches and shares between DataLoader workers); blosc2 is ~6x smaller (these scans hold
much constant background) but decompresses whole chunks for every patch in every worker. Training reads far more
patches than it writes scans, so :mod:`napari_ssl.training.prepared` stores ``.npy`` files; the price is disk
(float32, ~4 bytes a voxel on the model grid). zarr is not installed here (it is not a dependency); its chunked, compressed reads cost what
blosc2's do.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from proc_measure import DATA, dir_size

SCANS = ("ct_unlabeled/ct_thorax_abdomen.nii.gz", "mni152/t1.nii.gz", "brats/Brats18_2013_11_1/t1.nii.gz")


def _arrays() -> list[np.ndarray]:
    from napari_ssl import io
    from napari_ssl.preprocess import Normalization

    norm = Normalization(mode="zscore")
    out = []
    for rel in SCANS:
        path = DATA / rel
        if not path.exists():
            candidates = sorted((DATA / "brats").glob("*/t1.nii.gz"))
            if not candidates:
                continue
            path = candidates[0]
        out.append(norm(io.read(path).array))
    if not out:
        raise SystemExit(f"no shared scans under {DATA}")
    return out


def _write_npy(arrays: list[np.ndarray], folder: Path) -> list[object]:
    for i, a in enumerate(arrays):
        mm = np.lib.format.open_memmap(folder / f"{i}.npy", mode="w+", dtype=np.float32, shape=a.shape)
        mm[...] = a
        mm.flush()
        del mm
    return [np.load(folder / f"{i}.npy", mmap_mode="r") for i in range(len(arrays))]


def _write_blosc2(arrays: list[np.ndarray], folder: Path) -> list[object]:
    import blosc2

    for i, a in enumerate(arrays):
        blosc2.asarray(a, urlpath=str(folder / f"{i}.b2nd"), mode="w", chunks=(64, 64, 64), blocks=(16, 16, 16))
    return [blosc2.open(str(folder / f"{i}.b2nd"), mode="r") for i in range(len(arrays))]


def _write_zarr(arrays: list[np.ndarray], folder: Path) -> list[object]:
    import zarr

    out = []
    for i, a in enumerate(arrays):
        z = zarr.open_array(str(folder / f"{i}.zarr"), mode="w", shape=a.shape, chunks=(64, 64, 64), dtype="f4")
        z[...] = a
        out.append(zarr.open_array(str(folder / f"{i}.zarr"), mode="r"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=200)
    parser.add_argument("--patch", type=int, default=48)
    args = parser.parse_args()
    arrays = _arrays()
    writers = {"npy": _write_npy, "blosc2": _write_blosc2, "zarr": _write_zarr}
    print(f"{len(arrays)} scans, {sum(a.nbytes for a in arrays) / 1e6:.1f} MB float32; patch {args.patch}^3")
    print(f"{'format':8s} {'build s':>8s} {'MB on disk':>11s} {'patch read ms (median)':>24s}")
    for name, write in writers.items():
        try:
            __import__({"npy": "numpy"}.get(name, name))
        except ImportError:
            print(f"{name:8s} not installed")
            continue
        folder = Path(tempfile.mkdtemp(prefix=f"bench_{name}_"))
        try:
            t0 = time.perf_counter()
            opened = write(arrays, folder)
            build = time.perf_counter() - t0
            rng = np.random.default_rng(0)
            times = []
            p = args.patch
            for _ in range(args.patches):
                k = int(rng.integers(len(opened)))
                shape = arrays[k].shape
                c = [int(rng.integers(0, max(1, s - p + 1))) for s in shape]
                t0 = time.perf_counter()
                patch = np.ascontiguousarray(opened[k][c[0]:c[0] + p, c[1]:c[1] + p, c[2]:c[2] + p])
                times.append(time.perf_counter() - t0)
                assert np.array_equal(patch, arrays[k][c[0]:c[0] + p, c[1]:c[1] + p, c[2]:c[2] + p])
            print(f"{name:8s} {build:8.2f} {dir_size(folder) / 1e6:11.1f} {1e3 * float(np.median(times)):24.2f}")
        finally:
            del opened
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
