"""MONAI bundles: our bundle reader (``napari_ssl.inference.formats.bundle``) against the bundle's own workflow
(``monai.bundle.ConfigWorkflow``: LoadImaged reads the file, ..., SaveImaged writes the mask), and MONAI's workflow on
an exported bundle of ours against our native pipeline.

The bundle is ``phantom-demo`` exported by ``napari-ssl export --format monai-bundle``. Scans: the sample phantom
resampled off the model's spacing with permuted, flipped axes (a non-identity direction), and a shared real scan
(``../shared/data/mr_organs/mr.nii.gz``, when present; the phantom model draws little there: agreement and time only).
Each method runs in its own child process with the same torch threads: one warm-up, then best of ``--repeat``; both
sides read the scan file and write the mask file. Peak memory: the child's peak resident set size.

    python benchmarks/bench_byo_bundle.py [--threads 2] [--repeat 2]

Targets: our reader's masks equal the workflow's to >= 99.9 % of voxels; its time <= 1.1x the workflow's; MONAI's
workflow on the exported bundle reproduces our native masks to >= 99.9 %.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")


def _workflow(bundle: Path, scan: Path, out: Path) -> Path:
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"),
                        meta_file=str(bundle / "configs" / "metadata.json"), logging_file=False, workflow_type=None,
                        bundle_root=str(bundle), datalist=[str(scan)], output_dir=str(out),
                        device="$torch.device('cpu')")
    wf.initialize()
    wf.run()
    wf.finalize()
    return next(out.glob("*_seg.nii.gz"))


def child(method: str, bundle: Path, scan: Path, out: Path, threads: int, repeat: int) -> dict[str, float]:
    """One method, timed in this process (a child of the benchmark)."""
    import torch

    torch.set_num_threads(threads)
    from napari_ssl import io
    from napari_ssl.inference.bundled import resolve_model
    from napari_ssl.inference.segment import load_model, segment
    from napari_ssl.inference.segmenter import open_segmenter

    model = open_segmenter(bundle, device="cpu", trust=True) if method == "reader" else None
    native = load_model(resolve_model("phantom-demo"), device="cpu") if method == "native" else None
    times = []
    for i in range(repeat + 1):
        target = out / f"{method}{i}"
        target.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if method == "workflow":
            written = _workflow(bundle, scan, target)
        elif method == "reader":
            assert model is not None
            written = io.write(model.predict([io.read(scan)]), target / "mask_seg.nii.gz")
        else:
            written = io.write(segment(io.read(scan), native, overlap=0.5, sw_device="cpu"), target / "mask_seg.nii.gz")
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    return {"seconds": min(times[1:]), "peak_rss_mb": peak, "mask": str(written)}


def _run_child(method: str, bundle: Path, scan: Path, out: Path, threads: int, repeat: int) -> dict[str, float]:
    env = dict(os.environ, NAPARI_SSL_AMP="0", OMP_NUM_THREADS=str(threads))  # float32 on both sides
    code = (f"import sys, json; sys.path.insert(0, {str(REPO)!r}); sys.argv = ['x']; "
            f"from benchmarks.bench_byo_bundle import child; from pathlib import Path; "
            f"print(json.dumps(child({method!r}, Path({str(bundle)!r}), Path({str(scan)!r}), Path({str(out)!r}), "
            f"{threads}, {repeat})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    fa, fb = a > 0, b > 0
    dice = 2 * (fa & fb).sum() / max(1, fa.sum() + fb.sum())
    return float((a == b).mean() * 100), float(dice)


def bench_bundle(threads: int = 2, repeat: int = 2) -> None:
    """The MONAI bundle figures (see the module docstring); ``bench_byo.py`` runs it beside the nnU-Net ones."""
    from napari_ssl import io
    from napari_ssl.inference.export import export_model
    from napari_ssl.io.volume import Volume
    from napari_ssl.phantom import make_phantom

    tmp = Path(tempfile.mkdtemp(prefix="bench_byo_bundle_"))
    bundle = export_model("phantom-demo", tmp / "bundle", "monai-bundle")
    image, _ = make_phantom(shape=(56, 110, 100), spacing=(2.8, 1.75, 1.9), seed=11)
    direction = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    scans = {"phantom, oblique 56x110x100": io.write(Volume(image.array, image.spacing, (12.0, -30.0, 7.5),
                                                             direction), tmp / "phantom.nii.gz")}
    real = SHARED / "mr_organs" / "mr.nii.gz"
    if real.is_file():
        scans["mr_organs (real MR 20x91x117)"] = real
    print(f"threads {threads}, best of {repeat} after a warm-up, float32 on both sides, "
          f"torch CPU; bundle = phantom-demo exported")
    for name, scan in scans.items():
        res = {m: _run_child(m, bundle, Path(scan), tmp / name.split()[0], threads, repeat)
               for m in ("workflow", "reader", "native")}
        masks = {m: io.read(r["mask"]).array for m, r in res.items()}
        reader_vs_wf = _agreement(masks["reader"], masks["workflow"])
        wf_vs_native = _agreement(masks["workflow"], masks["native"])
        print(f"\n{name}: foreground voxels workflow {int((masks['workflow'] > 0).sum())}, "
              f"native {int((masks['native'] > 0).sum())}")
        for m, r in res.items():
            print(f"  {m:9s} {r['seconds']:6.2f} s   peak RSS {r['peak_rss_mb']:7.0f} MiB")
        print(f"  reader / workflow time: {res['reader']['seconds'] / res['workflow']['seconds']:.2f}x (target <= 1.1x)")
        print(f"  reader vs the bundle's own workflow: {reader_vs_wf[0]:.4f} % voxels, foreground Dice "
              f"{reader_vs_wf[1]:.4f} (target >= 99.9 %)")
        print(f"  exported bundle in MONAI's workflow vs our native masks: {wf_vs_native[0]:.4f} % voxels, "
              f"foreground Dice {wf_vs_native[1]:.4f} (target >= 99.9 %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    bench_bundle(threads=args.threads, repeat=args.repeat)


if __name__ == "__main__":
    main()
