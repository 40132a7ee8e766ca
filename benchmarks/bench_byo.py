"""Bring your own segmenter: each format behind ``napari_ssl.inference.segmenter`` against its own library's
predictor, on the same scan files, in one process with the same CPU threads.

One function per format, ``main`` runs them (``--formats nnunet,bundle``): ``bench_nnunet`` here, ``bench_bundle`` in
``bench_byo_bundle.py`` (a MONAI bundle: our reader against the bundle's own workflow, and MONAI's workflow on an
exported bundle of ours against our native masks).

nnU-Net: a real results folder built with nnU-Net's own API (tests/nnunet_folder.py: planner, preprocessing, two
training iterations of the stock trainer on the shared abdominal CT; or ``--nnunet-model DIR``, any folder). For each
scan (the shared CT crop, the larger thorax-abdomen CT, the same CT stored with permuted and flipped axes, the CT as
a DICOM series):

- reference: ``nnUNetPredictor.predict_from_files_sequential`` (reads the file with nnU-Net's SimpleITKIO, writes the
  mask), for DICOM ``predict_single_npy_array`` on SimpleITK's ImageSeriesReader's image, then the mask written;
- ours: ``napari_ssl.io.read`` + ``NnUNetSegmenter.predict`` + ``napari_ssl.io.write``.

Reported: voxel agreement and identical geometry, time (best of ``--repeat``, runs alternated) and ratio (goal <=
1.1x), the peak RSS increase of each call (sampled every 2 ms: torch's allocations are invisible to tracemalloc) and
the process's peak RSS; then the time cost of test-time mirroring on the CPU.

    python benchmarks/bench_byo.py                  # builds the nnU-Net folder (~30 s), threads 2
    python benchmarks/bench_byo.py --threads 4 --nnunet-model RESULTS/Dataset.../nnUNetTrainer__nnUNetPlans__3d_fullres
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_segment import PeakRSS  # noqa: E402  (the same peak-RSS watcher as the segmentation benchmark)

DATA = Path(os.environ.get("NAPARI_SSL_DATA", REPO.parent / "shared" / "data"))


def _measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
    return dt, mem.increase / 2**20, out


def _scans(root: Path) -> dict[str, Path]:
    import SimpleITK as sitk

    ct = DATA / "ct_organs" / "ct.nii.gz"
    image = sitk.ReadImage(str(ct))
    permuted = root / "permuted_flipped.nrrd"
    sitk.WriteImage(sitk.Flip(sitk.PermuteAxes(image, [2, 0, 1]), [True, False, True]), str(permuted))
    from dicom_series import write_series

    from napari_ssl import io

    write_series(root / "dicom", io.read(ct), shuffle=False, modality="CT")
    return {"ct_organs (30x101x122)": ct, "ct_thorax_abdomen (112x101x122)":
            DATA / "ct_unlabeled" / "ct_thorax_abdomen.nii.gz", "permuted+flipped (.nrrd)": permuted,
            "DICOM series": root / "dicom"}


def bench_nnunet(threads: int = 2, repeat: int = 2, model: Path | None = None) -> None:
    """nnU-Net folder: ours against nnUNetPredictor (see the module docstring)."""
    import SimpleITK as sitk
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from napari_ssl import io
    from napari_ssl.inference.segmenter import describe_segmenter, open_segmenter
    from napari_ssl.io.volume import Volume

    tmp = Path(tempfile.mkdtemp(prefix="bench-byo-"))
    if model is None:
        from nnunet_folder import build_in_child

        t0 = time.perf_counter()
        model = build_in_child(tmp / "nnunet", DATA)
        print(f"nnU-Net folder built with nnU-Net's API in {time.perf_counter() - t0:.1f} s: {model}")
    info = describe_segmenter(model)
    folds = dict(info.details)["folds"]
    torch.set_num_threads(threads)
    print(f"model {info.title}, folds {folds}, patch {dict(info.details).get('patch size')}, {threads} thread(s), "
          f"CPU, mirroring off")

    t0 = time.perf_counter()
    reference = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    reference.initialize_from_trained_model_folder(str(model), use_folds=None,
                                                   checkpoint_name=dict(info.details)["checkpoint"])
    t_ref_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = open_segmenter(info, device="cpu", trust=True, threads=threads)
    print(f"load: nnUNetPredictor {t_ref_load:.2f} s, ours {time.perf_counter() - t0:.2f} s")

    out = tmp / "out"
    out.mkdir()

    def run_reference(scan: Path) -> Volume:
        if scan.is_dir():  # a DICOM series: SimpleITK's series reader, the array as nnU-Net's reader gives it
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(scan)))
            image = reader.Execute()
            labels = reference.predict_single_npy_array(sitk.GetArrayFromImage(image)[None].astype(np.float32),
                                                        {"spacing": list(image.GetSpacing())[::-1]})
            mask = sitk.GetImageFromArray(np.asarray(labels, np.uint8))
            mask.CopyInformation(image)
            sitk.WriteImage(mask, str(out / "reference.nii.gz"), True)
        else:
            reference.predict_from_files_sequential([[str(scan)]], [str(out / "reference")])
        return io.read(out / "reference.nii.gz")

    def run_ours(scan: Path) -> Volume:
        io.write(ours.predict([io.read(scan)]), out / "ours.nii.gz")
        return io.read(out / "ours.nii.gz")

    print(f"{'scan':34s} {'agree %':>9s} {'geometry':>9s} {'ref s':>7s} {'ours s':>7s} {'ratio':>6s} "
          f"{'ref MiB':>8s} {'ours MiB':>8s}")
    for name, scan in _scans(tmp).items():
        times: dict[str, list[float]] = {"ref": [], "ours": []}
        peaks: dict[str, list[float]] = {"ref": [], "ours": []}
        results: dict[str, Volume] = {}
        for _ in range(repeat):
            for key, fn in (("ref", run_reference), ("ours", run_ours)):
                with open(os.devnull, "w") as sink:  # nnU-Net's progress notes
                    stdout, sys.stdout = sys.stdout, sink
                    try:
                        dt, mib, results[key] = _measure(lambda fn=fn, scan=scan: fn(scan))
                    finally:
                        sys.stdout = stdout
                times[key].append(dt)
                peaks[key].append(mib)
        agree = 100 * float((results["ours"].array == results["ref"].array).mean())
        same = results["ours"].same_geometry(results["ref"]) and results["ours"].same_geometry(io.read(scan))
        t_ref, t_ours = min(times["ref"]), min(times["ours"])
        print(f"{name:34s} {agree:9.3f} {'same' if same else 'DIFFERS':>9s} {t_ref:7.2f} {t_ours:7.2f} "
              f"{t_ours / t_ref:6.2f} {max(peaks['ref']):8.0f} {max(peaks['ours']):8.0f}")

    big = io.read(DATA / "ct_unlabeled" / "ct_thorax_abdomen.nii.gz")
    mirrored = open_segmenter(info, device="cpu", trust=True, threads=threads, mirroring=True)
    t_off = min(_measure(lambda: ours.predict([big]))[0] for _ in range(repeat))
    t_on = min(_measure(lambda: mirrored.predict([big]))[0] for _ in range(repeat))
    axes = mirrored.predictor.allowed_mirroring_axes
    print(f"mirroring on the CPU ({big.array.shape}, axes {axes}): off {t_off:.2f} s, on {t_on:.2f} s "
          f"({t_on / t_off:.1f}x)")
    print(f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--nnunet-model", type=Path, default=None, help="an nnU-Net results folder (default: build "
                                                                           "the tests' one)")
    parser.add_argument("--formats", default="nnunet,bundle", help="which formats to measure (nnunet, bundle)")
    args = parser.parse_args()
    formats = {f.strip() for f in args.formats.split(",") if f.strip()}
    if "nnunet" in formats:
        bench_nnunet(threads=args.threads, repeat=args.repeat, model=args.nnunet_model)
    if "bundle" in formats:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_byo_bundle import bench_bundle

        bench_bundle(threads=args.threads, repeat=args.repeat)


if __name__ == "__main__":
    main()
