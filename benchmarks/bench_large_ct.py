"""A clinical-size CT (512 x 512 x 600 int16): open, explorer preview and segmentation, time and peak memory.

The scan is synthesised from the shared thorax-abdomen CT (resampled to 0.78 x 0.78 mm in plane and 600 slices,
int16 HU), written once as NIfTI (``.nii.gz``) and as a DICOM series of 600 UID-named files into a work folder
(never into the repository). Each stage then runs in its own fresh process, so "peak RSS" is that process's
whole high-water mark (``VmHWM``: Python, numpy, SimpleITK, torch and the scan), the figure a user's machine
has to hold:

- ``open-nifti`` / ``open-dicom``: ``io.read`` of the file / the series folder;
- ``preview-rubik`` / ``preview-context`` / ``preview-planes``: the explorer's computation
  (``explorer_preview.compute_preview``, no GUI) on the opened scan, default parameters; the time is the
  preview's alone;
- ``finetune``: a tiny U-Net fine-tuned at 3 mm on the shared abdominal CT (liver, spleen), ``--steps`` steps;
- ``segment``: ``napari_ssl.inference.segment.segment`` of the large scan with that model (resampled to 3 mm inside).

Targets (issue 12): peak process memory <= 3 GiB for open, preview and segment; segment <= 3 min on this CPU
with a model at the plan's spacing.

    python benchmarks/bench_large_ct.py                       # everything, work folder in /tmp
    python benchmarks/bench_large_ct.py --workdir /tmp/big --keep --stages open-nifti segment
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SHAPE = (600, 512, 512)  # z, y, x
STAGES = ("open-nifti", "open-dicom", "preview-rubik", "preview-context", "preview-planes", "finetune", "segment")
LIMIT_GIB = 3.0


def _peak_mib() -> float:
    """This process's peak resident set (VmHWM; unlike ``ru_maxrss`` it does not inherit the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def synthesise(work: Path) -> None:
    """The large CT as ``ct.nii.gz`` and ``dicom/`` (600 files named ``CT.<uid>.<n>``)."""
    import SimpleITK as sitk

    src = sitk.ReadImage(str(DATA / "ct_unlabeled" / "ct_thorax_abdomen.nii.gz"))
    size = (SHAPE[2], SHAPE[1], SHAPE[0])
    extent = [n * s for n, s in zip(src.GetSize(), src.GetSpacing(), strict=True)]
    spacing = [e / n for e, n in zip(extent, size, strict=True)]
    big = sitk.Resample(
        src, size, sitk.Transform(), sitk.sitkLinear, src.GetOrigin(), spacing, src.GetDirection(), -1024,
        sitk.sitkInt16,
    )
    sitk.WriteImage(big, str(work / "ct.nii.gz"), useCompression=True)
    folder = work / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    d = big.GetDirection()
    uid = "1.2.826.0.1.3680043.8.498.77"
    for z in range(SHAPE[0]):
        sl = big[:, :, z]
        for key, value in {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{uid}.{z + 1}",
            "0008|0060": "CT",
            "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
            "0008|103e": "large CT",
            "0020|000d": uid + ".0",
            "0020|000e": uid,
            "0020|0013": str(z + 1),
            "0020|0037": "\\".join(f"{v:.10f}" for v in (*d[0:9:3], *d[1:9:3])),
            "0020|0032": "\\".join(f"{v:.6f}" for v in big.TransformIndexToPhysicalPoint((0, 0, z))),
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
            "0018|0050": str(spacing[2]),
        }.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"CT.{uid}.{z + 1}"))
        writer.Execute(sl)
    print(json.dumps({"stage": "synthesise", "shape": list(SHAPE), "spacing_xyz": spacing}))


def finetune_model(work: Path, steps: int) -> dict:
    from napari_ssl.training.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(
        images=(str(DATA / "ct_organs" / "ct.nii.gz"),),
        labels=(str(DATA / "ct_organs" / "labels.nii.gz"),),
        classes=("liver=5", "spleen=1"),
        out=str(work / "model"),
        steps=steps,
        batch_size=2,
        patch_size=32,
        backbone="tiny",
        device="cpu",
        spacing=(3.0, 3.0, 3.0),
        val_fraction=0.0,
        amp=False,
    )
    t0 = time.perf_counter()
    last = None
    for event in finetune(config):
        last = event
    return {"seconds": time.perf_counter() - t0, "last_event": type(last).__name__, "model": str(work / "model")}


def run_stage(stage: str, work: Path, steps: int) -> dict:
    """One stage in this (fresh) process; returns its figures."""
    from napari_ssl import io

    before = _peak_mib()
    out: dict = {"stage": stage}
    if stage == "finetune":
        out.update(finetune_model(work, steps))
    elif stage.startswith("open-"):
        path = work / ("ct.nii.gz" if stage == "open-nifti" else "dicom")
        t0 = time.perf_counter()
        vol = io.read(path)
        out["seconds"] = time.perf_counter() - t0
        out["shape"], out["dtype"] = list(vol.array.shape), str(vol.array.dtype)
        out["spacing"] = [round(s, 4) for s in vol.spacing]
    elif stage.startswith("preview-"):
        from napari_ssl._napari.explorer.preview import compute_preview
        from napari_ssl.pretext._explore import PreviewRequest

        vol = io.read(work / "ct.nii.gz")
        out["rss_after_open_mib"] = _peak_mib()
        t0 = time.perf_counter()
        preview = compute_preview(PreviewRequest(pretext=stage.split("-", 1)[1], values={}, seed=0, source="ct",
                                                 volume=vol))
        out["seconds"] = time.perf_counter() - t0
        out["summary"] = preview.summary[:90]
    elif stage == "segment":
        from napari_ssl.inference.segment import load_model, segment

        vol = io.read(work / "ct.nii.gz")
        model = load_model(work / "model", device="cpu")
        out["rss_after_open_mib"] = _peak_mib()
        t0 = time.perf_counter()
        mask = segment(vol, model, overlap=0.25)
        out["seconds"] = time.perf_counter() - t0
        out["mask"] = [list(mask.array.shape), str(mask.array.dtype), int((mask.array > 0).sum())]
        out["model_spacing"] = list(model.checkpoint.spacing) if model.checkpoint.spacing else None
    else:
        raise SystemExit(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    out["rss_before_mib"] = before
    out["peak_rss_mib"] = _peak_mib()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where the synthetic scans and the model go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--steps", type=int, default=60, help="fine-tuning steps of the 3 mm model")
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # internal: run one stage in this process
    args = parser.parse_args()
    if args.stage:
        print("RESULT " + json.dumps(run_stage(args.stage, args.workdir, args.steps)))
        return
    if not DATA.is_dir():
        raise SystemExit(f"shared scans not found at {DATA}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="napari-ssl-large-ct-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if not (work / "ct.nii.gz").exists() or not (work / "dicom").is_dir():
            t0 = time.perf_counter()
            synthesise(work)
            print(f"synthesised {SHAPE[::-1]} (x, y, z) int16 CT in {time.perf_counter() - t0:.0f} s -> {work}")
        rows = []
        for stage in args.stages:
            if stage == "segment" and not (work / "model").is_dir() and "finetune" not in args.stages:
                rows.append({"stage": stage, "error": "no model: run the finetune stage first"})
                continue
            proc = subprocess.run(
                [sys.executable, __file__, "--stage", stage, "--workdir", str(work), "--steps", str(args.steps)],
                capture_output=True, text=True, check=False,
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                rows.append({"stage": stage, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]})
            else:
                rows.append(json.loads(line[len("RESULT "):]))
        print(f"\n{'stage':16} {'time (s)':>9} {'peak RSS (MiB)':>15} {'before (MiB)':>13}  notes")
        for row in rows:
            if "error" in row:
                print(f"{row['stage']:16} {'-':>9} {'-':>15} {'-':>13}  ERROR {row['error']}")
                continue
            notes = {k: v for k, v in row.items()
                     if k not in ("stage", "seconds", "peak_rss_mib", "rss_before_mib")}
            flag = "" if row["peak_rss_mib"] <= LIMIT_GIB * 1024 else f"  OVER {LIMIT_GIB} GiB"
            print(f"{row['stage']:16} {row['seconds']:9.1f} {row['peak_rss_mib']:15.0f} "
                  f"{row['rss_before_mib']:13.0f}  {json.dumps(notes)}{flag}")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
