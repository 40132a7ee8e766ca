"""Synthetic scans for ``bench_scale.py``, made deterministically from the shared ones.

Scan ``i`` of a kind draws everything from ``numpy.random.default_rng([seed, i])`` (sample, then apply): a shared
source scan (CT: the thorax-abdomen CT; MR: one of the BraTS FLAIRs or the MNI152 T1), a small affine about the
source's centre (rotation up to 10 deg about a random axis, scale 0.9-1.1 per axis, translation up to 10 mm per
axis) and an intensity change (gain, offset, gamma), resampled (linear) onto the kind's grid: CT-like 256x256x200
voxels of 1.5 mm, MR-like 160x192x192 of 1 mm (x, y, z as in the NIfTI header). A smaller ``size`` keeps the field
of view (larger voxels). Written as int16 ``.nii.gz`` by SimpleITK, in a process pool, each file under a temporary
name first: a run resumes where the last one stopped.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache, partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from proc_measure import DATA


@dataclass(frozen=True)
class Kind:
    """A kind of synthetic scan: its sources, grid and the ranges of its intensity change."""

    name: str
    sources: tuple[str, ...]
    size: tuple[int, int, int]  # x, y, z voxels
    spacing: float  # mm at ``size``
    gain: tuple[float, float]
    offset: tuple[float, float]  # CT: HU; MR: a fraction of the source's 99.5th percentile
    gamma: tuple[float, float]
    background: float
    floor: float | None  # values below are clipped (MR has no negative intensities)

    def grid(self, size: tuple[int, int, int] | None = None) -> tuple[tuple[int, int, int], tuple[float, ...]]:
        """Voxels and spacing at ``size`` (default: the kind's), with the kind's field of view."""
        size = tuple(int(s) for s in (size or self.size))  # type: ignore[assignment]
        spacing = tuple(self.spacing * full / s for full, s in zip(self.size, size, strict=True))
        return size, spacing  # type: ignore[return-value]


def kinds() -> dict[str, Kind]:
    flairs = tuple(str(p) for p in sorted((DATA / "brats").glob("*/flair.nii.gz")))
    return {
        "ct": Kind("ct", (str(DATA / "ct_unlabeled" / "ct_thorax_abdomen.nii.gz"),), (256, 256, 200), 1.5,
                   gain=(0.95, 1.05), offset=(-20.0, 20.0), gamma=(0.97, 1.03), background=-1024.0, floor=-1024.0),
        "mr": Kind("mr", (*flairs, str(DATA / "mni152" / "t1.nii.gz")), (160, 192, 192), 1.0,
                   gain=(0.7, 1.4), offset=(-0.05, 0.05), gamma=(0.8, 1.25), background=0.0, floor=0.0),
    }


@dataclass(frozen=True)
class ScanParams:
    """Everything random about one synthetic scan (JSON-serialisable)."""

    source: str
    axis: tuple[float, float, float]
    angle_deg: float
    scale: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    gain: float
    offset: float
    gamma: float


def sample(kind: Kind, rng: np.random.Generator) -> ScanParams:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return ScanParams(
        source=kind.sources[int(rng.integers(len(kind.sources)))],
        axis=tuple(float(a) for a in axis), angle_deg=float(rng.uniform(-10, 10)),
        scale=tuple(float(s) for s in rng.uniform(0.9, 1.1, 3)),
        translation_mm=tuple(float(t) for t in rng.uniform(-10, 10, 3)),
        gain=float(rng.uniform(*kind.gain)), offset=float(rng.uniform(*kind.offset)),
        gamma=float(rng.uniform(*kind.gamma)),
    )


@lru_cache(maxsize=4)
def _source(path: str) -> tuple[object, float]:
    """A source image (float32) and its 99.5th percentile."""
    import SimpleITK as sitk

    image = sitk.Cast(sitk.ReadImage(path), sitk.sitkFloat32)
    array = sitk.GetArrayViewFromImage(image)
    return image, float(np.percentile(array, 99.5))


def apply(params: ScanParams, kind: Kind, size: tuple[int, int, int]) -> object:
    """The synthetic scan of ``params`` on ``kind``'s grid at ``size`` (an int16 SimpleITK image)."""
    import SimpleITK as sitk

    source, high = _source(params.source)
    size, spacing = kind.grid(size)
    centre = np.asarray(source.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in source.GetSize()]))
    direction = np.asarray(source.GetDirection()).reshape(3, 3)
    origin = centre - direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2)
    x, y, z = params.axis
    a = math.radians(params.angle_deg)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    rotation = np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k  # Rodrigues
    transform = sitk.AffineTransform(3)
    transform.SetCenter(centre.tolist())
    transform.SetMatrix((rotation @ np.diag(params.scale)).ravel().tolist())
    transform.SetTranslation(list(params.translation_mm))
    out = sitk.Resample(source, [int(s) for s in size], transform, sitk.sitkLinear, origin.tolist(), spacing,
                        direction.ravel().tolist(), kind.background, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(out)
    if kind.name == "ct":  # gamma on the range above air, gain and offset in HU
        span = max(high - kind.background, 1.0)
        array = kind.background + span * np.clip((array - kind.background) / span, 0, None) ** params.gamma
        array = kind.background + params.gain * (array - kind.background) + params.offset
    else:
        array = params.gain * high * np.clip(array / max(high, 1e-6), 0, None) ** params.gamma + params.offset * high
    if kind.floor is not None:
        array = np.maximum(array, kind.floor)
    scan = sitk.GetImageFromArray(np.clip(np.rint(array), -32768, 32767).astype(np.int16))
    scan.CopyInformation(out)
    return scan


def scan_name(i: int) -> str:
    return f"scan{i:05d}.nii.gz"


def init_worker() -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # one core each: the pool is the parallelism


def make_one(i: int, kind: Kind, size: tuple[int, int, int], folder: str, seed: int) -> tuple[int, float]:
    """Write scan ``i`` (its bytes, the seconds it took); a file already there is kept (0 seconds)."""
    import SimpleITK as sitk

    final = Path(folder) / scan_name(i)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        return final.stat().st_size, 0.0
    t0 = time.perf_counter()
    scan = apply(sample(kind, np.random.default_rng([seed, i])), kind, size)
    tmp = final.with_name(f".tmp-{os.getpid()}-{final.name}")
    sitk.WriteImage(scan, str(tmp), True)
    os.replace(tmp, final)
    return final.stat().st_size, time.perf_counter() - t0


def make_scans(n: int, kind: Kind, size: tuple[int, int, int], folder: Path, *, workers: int,
               seed: int = 0) -> dict[str, float]:
    """Scans ``0 .. n-1`` in ``folder`` (those missing); returns the counts, seconds and bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for tmp in folder.glob(".tmp-*"):  # what a killed run left
        tmp.unlink(missing_ok=True)
    missing = [i for i in range(n) if not (folder / scan_name(i)).exists()]
    t0 = time.perf_counter()
    made_s = []
    if missing:
        pool = ProcessPoolExecutor(max_workers=max(1, min(workers, len(missing))), mp_context=get_context("spawn"),
                                   initializer=init_worker)
        try:
            job = partial(make_one, kind=kind, size=size, folder=str(folder), seed=seed)
            for k, (_, seconds) in enumerate(pool.map(job, missing), start=1):
                made_s.append(seconds)
                if k % max(1, len(missing) // 10) == 0 or k == len(missing):
                    print(f"  made {k}/{len(missing)} scans ({time.perf_counter() - t0:.0f} s)", flush=True)
        finally:  # stopped: the scans not started are not made (the next run makes them)
            pool.shutdown(wait=True, cancel_futures=True)
    sizes = [(folder / scan_name(i)).stat().st_size for i in range(n)]
    return {"n": n, "made": len(missing), "seconds": time.perf_counter() - t0, "workers": workers,
            "cpu_s_per_scan": float(np.mean(made_s)) if made_s else None,
            "bytes": int(sum(sizes)), "bytes_per_scan": float(np.mean(sizes))}


def link_first(n: int, scans: Path, folder: Path) -> Path:
    """``folder`` holding symbolic links to the first ``n`` scans of ``scans`` (made once)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        link = folder / scan_name(i)
        if not link.is_symlink():
            link.symlink_to((scans / scan_name(i)).resolve())
    return folder
