"""What a sample costs when the dataset has more scans than a loader worker keeps mapped (issue 22).

With thousands of prepared scans nearly every sample maps another scan (its array, body mask and patch centres), so the
cost of mapping is paid per sample. This times ``PretextDataset`` samples in one process (no workers) over the first
``--n`` prepared scans and over 10 of them (where every scan stays mapped), twice each, interleaved, three ways in the
same process:

- ``np.load``: ``np.load(path, mmap_mode="r")``, each sample from any scan (the baseline: parses each ``.npy`` header);
- ``map_npy``: :func:`napari_ssl.training.prepared.map_npy` (the shape and dtype from the manifest, one 12-byte read),
  each sample from any scan (``windowed=False``);
- ``windowed``: ``map_npy`` and the default draw: with more scans than a process keeps mapped, consecutive samples
  draw from a window of them (``PretextDataset``'s docstring), so each mapped scan gives several samples.

    python benchmarks/bench_loader_open.py --scans /tmp/scale/mr_160x192x192/scans --n 300 --cache /tmp/loader_cache

Prints samples/s per way and N, and each way's N / 10 ratio (the issue's target: >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from napari_ssl.preprocess import Normalization
    from napari_ssl.pretext import registry
    from napari_ssl.training import data as data_module
    from napari_ssl.training import prepared
    from napari_ssl.training.data import PretextDataset, SampleSpec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=Path, required=True, help="folder of scans (e.g. bench_scale.py's)")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--cache", type=Path, required=True, help="prepared dataset folder (built when missing)")
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--pretext", default="context")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--visits", type=int, nargs="+", default=[data_module.SCAN_VISITS],
                        help="SCAN_VISITS values the windowed draw is timed with (samples per scan and pass)")
    args = parser.parse_args()

    sources = sorted(p for p in args.scans.iterdir() if p.name.endswith((".nii.gz", ".nii", ".nrrd", ".mha")))[: args.n]
    ds = prepared.prepare_dataset(sources, (1.5, 1.5, 1.5), Normalization(mode="zscore_nonzero"), args.cache,
                                  workers=2)
    spec_ = registry.get(args.pretext)
    spec = SampleSpec(patch=(args.patch,) * 3, pretexts={args.pretext: spec_.make(spec_.default_options(args.patch))},
                      foreground=True)
    ways = {  # name: (how an entry is mapped, the windowed draw's SCAN_VISITS or None: the uniform draw)
        "np.load": (lambda path, shape, dtype: np.load(path, mmap_mode="r"), None),
        "map_npy": (prepared.map_npy, None),
        **{f"windowed {k}": (prepared.map_npy, k) for k in args.visits},
    }
    original, visits = prepared.map_npy, data_module.SCAN_VISITS
    rates: dict[str, dict[int, list[float]]] = {}
    try:
        for round_ in range(2):
            for way, (mapper, k) in ways.items():
                prepared.map_npy = mapper  # PreparedScan.open* look the function up at call time
                data_module.SCAN_VISITS = k or visits
                for n in (10, len(ds.scans)):
                    data = PretextDataset(list(ds.scans)[:n], spec, 0, 10**7, windowed=k is not None)
                    t0 = time.perf_counter()
                    for i in range(args.samples):
                        data[i + round_ * args.samples]
                    rates.setdefault(way, {}).setdefault(n, []).append(args.samples / (time.perf_counter() - t0))
    finally:
        prepared.map_npy, data_module.SCAN_VISITS = original, visits
    out = {}
    for way, by_n in rates.items():
        few, many = (max(v) for v in by_n.values())  # the best of two rounds: the least disturbed by other work
        out[way] = {"samples_per_s_10": round(few, 1), f"samples_per_s_{len(ds.scans)}": round(many, 1),
                    "ratio": round(many / few, 3)}
        print(f"{way:11s}  N=10 {few:6.1f}  N={len(ds.scans)} {many:6.1f} samples/s   ratio {many / few:.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
