"""Segmentation inference: ours (``napari_ssl.inference.segment.segment``) against bare MONAI ``sliding_window_inference``.

One process, the same network (a seeded MONAI BasicUNet of the chosen size), the same ROI, overlap and Gaussian
blending. Ours also reorients, resamples (a no-op here: the model's spacing is the scan's), normalises, takes the
argmax and maps the labels back to the scan's grid; the bare loop gets a ready normalised tensor and returns
logits, then argmax. Time: best of ``--repeat``. Memory: the peak resident set size above the level before the
call, sampled every 2 ms by a thread (torch's CPU allocations are invisible to tracemalloc).

    python benchmarks/bench_segment.py                      # 256x256x160, CPU (and CUDA when present)
    python benchmarks/bench_segment.py --large              # also 512x512x400: peak RSS of ours (slabs)

Goal: ours <= 1.0x the bare loop in time and peak memory.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class PeakRSS:
    """Peak RSS (bytes) above the starting level while the ``with`` block runs."""

    def __init__(self, interval: float = 0.002) -> None:
        import psutil

        self.proc = psutil.Process(os.getpid())
        self.interval = interval
        self.peak = 0

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self._stop.set()
        self._thread.join()

    @property
    def increase(self) -> int:
        return self.peak - self.base


def make_model(tmp: Path, size: str, roi: int, spacing: tuple[float, float, float], n_classes: int) -> Path:
    import torch

    from napari_ssl import checkpoint
    from napari_ssl.models import BackboneSpec, build_unet
    from napari_ssl.training.data import Normalization

    spec = BackboneSpec(size=size)
    torch.manual_seed(0)
    net = build_unet(spec, out_channels=n_classes + 1)
    meta = {
        "kind": "segment", "backbone": spec.to_dict(), "in_channels": 1, "out_channels": n_classes + 1,
        "classes": [{"index": i + 1, "name": f"c{i + 1}", "ids": [i + 1], "color": "#ff0000"} for i in range(n_classes)],
        "patch_size": [roi] * 3, "spacing": list(spacing), "orientation": "LPS",
        "normalization": Normalization().to_dict(), "step": 0,
    }
    return checkpoint.save(tmp / f"model_{size}_{roi}", net.state_dict(), meta)


def scan(shape: tuple[int, int, int], spacing: tuple[float, float, float]):
    from napari_ssl.io.volume import Volume

    rng = np.random.default_rng(0)
    _, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    body = ((y - shape[1] / 2) ** 2 / (0.4 * shape[1]) ** 2 + (x - shape[2] / 2) ** 2 / (0.45 * shape[2]) ** 2) < 1
    array = np.where(body, 40, -1000).astype(np.int16) + rng.integers(-20, 20, size=shape, dtype=np.int16)
    return Volume(np.broadcast_to(array, shape).copy(), spacing=spacing, name="synthetic")


def bare(model, volume, overlap: float, sw_device, device):
    import torch
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(model.checkpoint.normalization(volume.array))[None, None]
    with torch.inference_mode():
        logits = sliding_window_inference(inputs=x, roi_size=model.checkpoint.patch_size, sw_batch_size=1, predictor=model.net,
                                          overlap=overlap, mode="gaussian", sw_device=sw_device, device=device)
        return torch.argmax(logits[0], 0).to(torch.uint8).cpu().numpy()


def compare(model, volume, overlap: float, repeat: int, device_name: str) -> None:
    from napari_ssl.inference.segment import segment

    sw = device_name
    times = {"monai": [], "ours": []}
    peaks = {"monai": 0, "ours": 0}
    for _ in range(repeat):
        for name in ("monai", "ours"):
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                if name == "monai":
                    out = bare(model, volume, overlap, sw, sw)
                else:
                    out = segment(volume, model, overlap=overlap, sw_device=sw).array
                if device_name.startswith("cuda"):
                    import torch

                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
            peaks[name] = max(peaks[name], mem.increase)
            del out
    t_m, t_o = min(times["monai"]), min(times["ours"])
    m_m, m_o = peaks["monai"] / 2**20, peaks["ours"] / 2**20
    print(f"{device_name}: {volume.array.shape} roi {model.checkpoint.patch_size} overlap {overlap}")
    print(f"  time  MONAI {t_m:7.2f} s   ours {t_o:7.2f} s   ratio {t_o / t_m:.2f}x")
    print(f"  peak RSS increase  MONAI {m_m:7.0f} MiB   ours {m_o:7.0f} MiB   ratio {m_o / max(m_m, 1):.2f}x")


def large(model_dir: Path, overlap: float) -> None:
    import resource

    from napari_ssl.inference.segment import load_model, segment

    model = load_model(model_dir)
    volume = scan((400, 512, 512), (1.0, 0.8, 0.8))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = segment(volume, model, overlap=overlap)
        dt = time.perf_counter() - t0
    total = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"large CT {volume.array.shape} int16 ({volume.array.nbytes / 2**20:.0f} MiB), roi {model.checkpoint.patch_size}, "
          f"overlap {overlap}: {dt:.0f} s; peak RSS increase {mem.increase / 2**20:.0f} MiB; process peak RSS "
          f"{total:.0f} MiB (before: {base:.0f} MiB); mask {out.array.shape} {out.array.dtype}")


def main() -> None:
    import tempfile

    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", help="backbone size (default tiny)")
    parser.add_argument("--roi", type=int, default=64)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 256, 256], metavar=("Z", "Y", "X"))
    parser.add_argument("--large", action="store_true", help="also segment a 512x512x400 CT and report peak RSS")
    parser.add_argument("--only-large", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from napari_ssl.inference.segment import load_model

    with tempfile.TemporaryDirectory() as tmp:
        spacing = (1.0, 1.0, 1.0)
        path = make_model(Path(tmp), args.size, args.roi, spacing, args.classes)
        if not args.only_large:
            model = load_model(path, device="cpu")
            volume = scan(tuple(args.shape), spacing)
            compare(model, volume, args.overlap, args.repeat, "cpu")
            if torch.cuda.is_available():
                model = load_model(path, device="cuda")
                compare(model, volume, args.overlap, args.repeat, "cuda")
            else:
                print("cuda: not available (skipped)")
        if args.large or args.only_large:
            large_path = make_model(Path(tmp), args.size, args.roi, (1.0, 0.8, 0.8), args.classes)
            large(large_path, args.overlap)


if __name__ == "__main__":
    main()
