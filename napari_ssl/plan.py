"""A training plan derived from the data (nnU-Net's ``ExperimentPlanner``, sized for a CPU as much as a GPU).

:func:`fingerprint` reads what matters of the training scans (voxel spacings, shapes, the bounding box of the
body / nonzero region, CT or MR, the foreground intensities) and :func:`make_plan` turns it into the settings
of a run (a large dataset's fingerprint decodes a sample and reads every scan's grid from its header:
:attr:`Fingerprint.headers`):

- **spacing**: the median spacing; for anisotropic data (coarsest axis > 3x the finest) the coarse axis takes the
  10th percentile of its spacings (nnU-Net's rule). When the median body at that spacing holds more than
  ``4x`` the device's patch budget of voxels (a 1 mm brain on a CPU), the finest axes are coarsened until it does
  not, so a patch sees a large part of the anatomy and inference takes seconds;
- **patch**: the median body box at the plan's spacing, in multiples of 16 (four 2x poolings), shrunk along the
  axis it over-covers most until it fits the device's budget (64^3 voxels on a CPU, 128^3 on CUDA); a scan
  smaller than the patch is padded, never refused;
- **normalisation**: CT: clip to the foreground's 0.5-99.5 percentiles, then the dataset's z-score; MR: per-scan
  z-score inside the nonzero mask (:class:`~napari_ssl.preprocess.Normalization`);
- **batch**, **steps** and **backbone** per device.

Every value can be overridden; :attr:`Plan.sources` says where each came from (``data``, ``user``, or the
pretrained ``checkpoint`` whose spacing and normalisation fine-tuning follows). The plan is printed by the CLI,
shown in the docks and stored in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume, mm_spacing
from napari_ssl.preprocess import Normalization, canonical_spacing

#: voxels of one patch a step can afford, per device type (the default backbone, batch 2)
PATCH_BUDGET = {"cpu": 64**3, "mps": 96**3, "cuda": 128**3}
#: samples per step of the 3D pretexts and of fine-tuning (a pretext may declare its own: registry.PretextSpec.batch)
DEFAULT_BATCH = 2
#: default optimisation steps per device type (``--minutes`` can stop a run earlier)
STEPS = {"cpu": 1000, "mps": 2000, "cuda": 4000}
#: CPUs that compute bfloat16 natively (AVX512-BF16, AMX) run a step ~2x faster: twice the steps, same time
STEPS_CPU_BF16 = 2000
#: a median body holding more than this many patches is coarsened (the CPU's "low-resolution" plan)
MAX_PATCHES_PER_SCAN = 4.0
DIVISOR = 16  # four 2x poolings
ANISOTROPY = 3.0


@dataclass(frozen=True)
class CaseFingerprint:
    """One scan as seen in its canonical orientation: shape, spacing (z, y, x), body box shape, modality."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    box: tuple[int, int, int]
    modality: str


#: one scan's grid in its canonical orientation: (z, y, x) shape and spacing
Geometry = tuple[tuple[int, int, int], tuple[float, float, float]]


@dataclass(frozen=True)
class Fingerprint:
    """What a plan is derived from: every case, the modality, and the foreground intensity statistics.

    ``headers`` (optional) holds the canonical grid (shape, spacing) of *every* scan of a large dataset, most of them
    read from their file headers (:func:`napari_ssl.training.prepared.sampled_fingerprint`), while ``cases`` are the
    decoded sample. When present, the plan's spacing, the median scan shape and the note on scans smaller than the
    patch come from them; the body box, the modality and the intensities always come from ``cases``. Without them
    (every fingerprint of decoded scans) everything comes from ``cases``.
    """

    cases: tuple[CaseFingerprint, ...]
    modality: str
    intensity: Mapping[str, float] = field(default_factory=dict)
    n_channels: int = 1
    foreground: Mapping[str, float] = field(default_factory=dict)
    headers: tuple[Geometry, ...] = ()

    def geometries(self) -> list[Geometry]:
        """The grids the spacing and the shapes are planned from: :attr:`headers` when present, else the cases'."""
        if self.headers:
            return list(self.headers)
        return [(c.shape, c.spacing) for c in self.cases]

    def to_dict(self) -> dict[str, Any]:
        grids = self.geometries()
        out = {
            "n_cases": len(self.cases),
            "modality": self.modality,
            "n_channels": self.n_channels,
            "median_spacing": list(np.median([g[1] for g in grids], axis=0).round(4)),
            "median_shape": [int(v) for v in np.median([g[0] for g in grids], axis=0)],
            "intensity": dict(self.intensity),
            "foreground": dict(self.foreground),
        }
        if self.headers:  # how many scans the grids covered (n_cases: how many were decoded)
            out["n_headers"] = len(self.headers)
        return out


def body_mask(array: np.ndarray, modality: str) -> np.ndarray:
    """Voxels inside the body (:func:`napari_ssl.io.foreground.foreground_mask`): HU > -500 on CT; on MR the nonzero
    voxels of a skull-stripped scan, else Otsu's foreground."""
    from napari_ssl.io.foreground import foreground_mask

    return foreground_mask(array, method="hu" if modality == "CT" else "auto")


def guess_modality(volume: Volume) -> str:
    """``CT`` or ``MR``: the DICOM modality when known, else Hounsfield units (air near -1000) mean CT."""
    tag = str(volume.metadata.get("modality", "")).upper()
    if tag in ("CT", "MR"):
        return tag
    sub = np.asarray(volume.array).reshape(-1)[:: max(1, volume.array.size // 500_000)]
    return "CT" if sub.size and float(sub.min()) < -500 and float(np.mean(sub < -300)) > 0.005 else "MR"


def _box(mask: np.ndarray) -> tuple[int, int, int]:
    if not mask.any():
        return tuple(int(s) for s in mask.shape)  # type: ignore[return-value]
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        out.append(int(hits[-1] - hits[0] + 1))
    return (out[0], out[1], out[2])


def _canonical_shape(volume: Volume) -> tuple[np.ndarray, tuple[float, float, float]]:
    from napari_ssl.preprocess import canonical

    moved = canonical(volume)
    return np.asarray(moved.array), canonical_spacing(volume)


def fingerprint(cases: Sequence[Sequence[Volume]], labels: Sequence[Volume | None] | None = None,
                *, label_ids: Collection[int] | None = None, max_samples: int = 100_000) -> Fingerprint:
    """The fingerprint of ``cases`` (each a list of channel volumes; the first channel is measured).

    ``labels`` (optional, one per case) give the CT foreground intensities (nnU-Net): the voxels of the classes
    trained (``label_ids``; default every nonzero label). Without labels (pretraining) every voxel counts, so air,
    lungs and body keep their contrast. ``foreground`` (any modality) holds the 0.5 / 50 / 99.5 percentiles of the
    body's intensities: what a scan given to the model later is compared with (:mod:`napari_ssl.inference.scan_check`).
    """
    if not cases:
        raise ValueError("no scans to plan from")
    rng = np.random.default_rng(0)
    found: list[CaseFingerprint] = []
    values: list[np.ndarray] = []
    body: list[np.ndarray] = []
    modalities = [guess_modality(case[0]) for case in cases]
    modality = max(set(modalities), key=modalities.count)
    for i, case in enumerate(cases):
        array, spacing = _canonical_shape(case[0])
        if array.ndim != 3:
            raise ValueError(f"{case[0].name or 'scan'}: expected a 3D scan, got shape {array.shape}")
        mask = body_mask(array, modality)
        found.append(CaseFingerprint(tuple(int(s) for s in array.shape), spacing, _box(mask), modalities[i]))  # type: ignore[arg-type]
        step = max(1, array.size // (2 * max_samples))  # a strided sample first: no copy of the whole body
        flat, in_body = array.reshape(-1)[::step], mask.reshape(-1)[::step]
        body.append((flat[in_body] if in_body.any() else flat).astype(np.float64))
        if modality == "CT":
            lab = labels[i] if labels is not None and i < len(labels) else None
            fg = np.ones_like(mask)
            if lab is not None and lab.spatial_shape == case[0].spatial_shape:
                lab_array = np.asarray(_canonical_shape(lab)[0])
                lab_mask = np.isin(lab_array, list(label_ids)) if label_ids is not None else lab_array > 0
                if lab_mask.shape == array.shape and lab_mask.any():
                    fg = lab_mask
            picked = array[fg]
            if picked.size > max_samples:
                picked = rng.choice(picked, max_samples, replace=False)
            values.append(picked.astype(np.float64))
    intensity: dict[str, float] = {}
    if values:
        pooled = np.concatenate(values)
        if pooled.size:
            lo, hi = np.percentile(pooled, (0.5, 99.5))
            clipped = np.clip(pooled, lo, hi)
            intensity = {"p00_5": float(lo), "p99_5": float(hi), "mean": float(clipped.mean()),
                         "std": float(max(clipped.std(), 1e-3))}
    pooled_body = np.concatenate(body)
    lo, mid, hi = np.percentile(pooled_body, (0.5, 50, 99.5)) if pooled_body.size else (0.0, 0.0, 0.0)
    foreground = {"p00_5": float(lo), "p50": float(mid), "p99_5": float(hi)}
    return Fingerprint(tuple(found), modality, intensity, n_channels=len(cases[0]), foreground=foreground)


# ---------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Plan:
    """Settings of a run derived from a :class:`Fingerprint` (see the module docstring)."""

    spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    batch_size: int
    normalization: Normalization
    steps: int
    backbone: str
    modality: str = "MR"
    median_shape: tuple[int, int, int] = (0, 0, 0)
    coverage: float = 1.0
    sources: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        """Several lines for the CLI and the docks."""
        sz, sy, sx = self.spacing
        pz, py, px = self.patch_size
        src = {k: f" ({v})" if v != "data" else "" for k, v in self.sources.items()}
        lines = [
            f"plan ({self.modality}, median scan {' x '.join(str(s) for s in self.median_shape)} voxels at the plan's spacing):",
            f"  spacing    {sz:.3g} x {sy:.3g} x {sx:.3g} mm{src.get('spacing', '')}",
            f"  patch      {pz} x {py} x {px} voxels ({pz * sz:.0f} x {py * sy:.0f} x {px * sx:.0f} mm, "
            f"{100 * self.coverage:.0f}% of the median body){src.get('patch_size', '')}",
            f"  batch      {self.batch_size}{src.get('batch_size', '')}",
            f"  normalise  {self.normalization.describe()}{src.get('normalization', '')}",
            f"  steps      {self.steps}{src.get('steps', '')}",
            f"  backbone   {self.backbone}{src.get('backbone', '')}",
        ]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])

    def to_dict(self) -> dict[str, Any]:
        return {
            "spacing": list(self.spacing), "patch_size": list(self.patch_size), "batch_size": self.batch_size,
            "normalization": self.normalization.to_dict(), "steps": self.steps, "backbone": self.backbone,
            "modality": self.modality, "median_shape": list(self.median_shape), "coverage": self.coverage,
            "sources": dict(self.sources), "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            spacing=tuple(float(v) for v in data["spacing"]),  # type: ignore[arg-type]
            patch_size=tuple(int(v) for v in data["patch_size"]),  # type: ignore[arg-type]
            batch_size=int(data["batch_size"]),
            normalization=Normalization.from_dict(data["normalization"]),
            steps=int(data["steps"]), backbone=str(data["backbone"]), modality=str(data.get("modality", "MR")),
            median_shape=tuple(int(v) for v in data.get("median_shape", (0, 0, 0))),  # type: ignore[arg-type]
            coverage=float(data.get("coverage", 1.0)), sources=dict(data.get("sources", {})),
            notes=tuple(data.get("notes", ())),
        )


def check_patch_size(patch: Any) -> tuple[int, int, int]:
    """Three patch edges (z, y, x) from one or three ints; each a multiple of 16 (four 2x poolings)."""
    vals = [patch] * 3 if isinstance(patch, (int, np.integer)) else list(patch)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise ValueError(f"patch size must be one edge or 3 edges (z, y, x), got {patch!r}")
    out = (int(vals[0]), int(vals[1]), int(vals[2]))
    if any(p < DIVISOR or p % DIVISOR for p in out):
        raise ValueError(f"patch size edges must be multiples of {DIVISOR} (four 2x poolings), got {out}")
    if all(p == DIVISOR for p in out):
        raise ValueError(f"patch size {out} leaves one voxel at the U-Net's bottleneck (four 2x poolings), where "
                         f"instance normalisation cannot train: use {2 * DIVISOR} along at least one axis")
    return out


def target_spacing(fp: Fingerprint) -> tuple[np.ndarray, list[str]]:
    """Median spacing with nnU-Net's anisotropy rule (over :meth:`Fingerprint.geometries`: every header when known)."""
    spacings = np.array([g[1] for g in fp.geometries()], dtype=float)
    target = np.median(spacings, axis=0)
    notes: list[str] = []
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    if target[worst] > ANISOTROPY * max(target[others]):
        target[worst] = max(np.percentile(spacings[:, worst], 10), max(target[others]))
        notes.append(f"anisotropic data: axis {'zyx'[worst]} at the 10th percentile of its spacings")
    return target, notes


def _fit_spacing(target: np.ndarray, box_mm: np.ndarray, budget: int) -> tuple[np.ndarray, float]:
    """Coarsen the finest axes (then all) until the median body holds <= MAX_PATCHES_PER_SCAN patches."""
    limit = MAX_PATCHES_PER_SCAN * budget
    factor = 1.0
    spacing = target.copy()
    while np.prod(box_mm / spacing) > limit and factor < 64:
        factor *= 1.02
        spacing = np.maximum(target, factor * target.min())
    return spacing, factor


def _fit_patch(box: np.ndarray, budget: int) -> np.ndarray:
    patch = np.maximum(DIVISOR, DIVISOR * np.ceil(box / DIVISOR)).astype(int)
    while np.prod(patch) > budget and np.any(patch > DIVISOR):
        ratio = np.where(patch > DIVISOR, patch / np.maximum(box, 1), -np.inf)
        patch[int(np.argmax(ratio))] -= DIVISOR
    return patch


def make_plan(
    fp: Fingerprint,
    device: str = "cpu",
    *,
    spacing: Sequence[float] | None = None,
    patch_size: Any = None,
    batch_size: int | None = None,
    normalization: Normalization | None = None,
    steps: int | None = None,
    backbone: str | None = None,
    inherit: Mapping[str, Any] | None = None,
    mixed_precision: bool = False,
    default_batch: int = DEFAULT_BATCH,
) -> Plan:
    """The plan of ``fp`` on ``device`` (``cpu``, ``cuda``, ``mps``); keyword values override the derived ones.

    ``inherit`` holds what a pretrained checkpoint fixes (``spacing``, ``normalization``, ``backbone``): its
    values come after the user's and before the data's. ``mixed_precision`` says the device trains in bfloat16
    (on a CPU that doubles the default steps: they take the same time). ``default_batch`` is the batch when
    ``batch_size`` is not given: the pretext's own (:meth:`~napari_ssl.pretext.registry.PretextSpec.default_batch`).
    """
    from napari_ssl.models.sizes import default_size

    kind = device.split(":")[0] if device in ("cpu", "mps") or device.startswith(("cuda", "mps")) else "cpu"
    budget = PATCH_BUDGET.get(kind, PATCH_BUDGET["cpu"])
    inherit = dict(inherit or {})
    sources: dict[str, str] = {}
    notes: list[str] = []

    boxes_mm = np.array([np.asarray(c.box) * np.asarray(c.spacing) for c in fp.cases], dtype=float)
    box_mm = np.median(boxes_mm, axis=0)
    grids = fp.geometries()
    shapes = np.array([g[0] for g in grids], dtype=float)
    shapes_mm = shapes * np.array([g[1] for g in grids], dtype=float)
    shape_mm = np.median(shapes_mm, axis=0)
    if spacing is not None:
        sp = np.asarray(mm_spacing(spacing), dtype=float)
        sources["spacing"] = "user"
    elif inherit.get("spacing") is not None:
        sp = np.asarray(inherit["spacing"], dtype=float)
        sources["spacing"] = "checkpoint"
    else:
        median, notes_sp = target_spacing(fp)
        notes += notes_sp
        sp, factor = _fit_spacing(median, box_mm, budget)
        sources["spacing"] = "data"
        if factor > 1.0:
            notes.append(f"spacing coarsened from the median {' x '.join(f'{v:.3g}' for v in median)} mm so a patch "
                         f"covers a large part of the body within the {kind.upper()} budget")
    box = box_mm / sp
    if patch_size is not None:
        patch = np.asarray(check_patch_size(patch_size))
        sources["patch_size"] = "user"
    else:
        patch = _fit_patch(box, budget)
        sources["patch_size"] = "data"
    if normalization is not None:
        norm = normalization
        sources["normalization"] = "user"
    elif inherit.get("normalization") is not None:
        norm = inherit["normalization"]
        norm = norm if isinstance(norm, Normalization) else Normalization.from_dict(norm)
        sources["normalization"] = "checkpoint"
    else:
        sources["normalization"] = "data"
        if fp.modality == "CT" and fp.intensity:
            norm = Normalization(mode="ct_zscore", clip=(fp.intensity["p00_5"], fp.intensity["p99_5"]),
                                 mean=fp.intensity["mean"], std=fp.intensity["std"])
        else:
            norm = Normalization(mode="zscore_nonzero")
    if backbone is not None:
        sources["backbone"] = "user"
    elif inherit.get("backbone") is not None:
        backbone = str(inherit["backbone"])
        sources["backbone"] = "checkpoint"
    else:
        backbone = default_size(kind)
        sources["backbone"] = "data"
    sources["batch_size"] = "user" if batch_size is not None else "data"
    sources["steps"] = "user" if steps is not None else "data"
    batch = int(batch_size) if batch_size is not None else int(default_batch)
    if batch_size is None and batch != DEFAULT_BATCH:
        notes.append(f"batch {batch}: the pretext's own default (imaging planes: as many plane pixels per step as "
                     f"{DEFAULT_BATCH} 3D patches hold voxels)")
    n_steps = int(steps) if steps is not None else STEPS.get(kind, STEPS["cpu"])
    if steps is None and kind == "cpu" and mixed_precision:
        n_steps = STEPS_CPU_BF16
        notes.append("this CPU trains in bfloat16 (about twice as fast): twice the steps in the same time")
    if batch < 1 or n_steps < 1:
        raise ValueError(f"batch size and steps must be >= 1, got {batch} and {n_steps}")
    coverage = float(np.prod(np.minimum(patch, np.maximum(box, 1)) / np.maximum(box, 1)))
    median_shape = np.maximum(1, np.round(shape_mm / sp)).astype(int)
    small = [a for a in range(3) if any(round(v / sp[a]) < patch[a] for v in shapes_mm[:, a])]
    if small:
        notes.append(f"scans smaller than the patch along {', '.join('zyx'[a] for a in small)} are padded")
    return Plan(
        spacing=(float(sp[0]), float(sp[1]), float(sp[2])),
        patch_size=(int(patch[0]), int(patch[1]), int(patch[2])),
        batch_size=batch, normalization=norm, steps=n_steps, backbone=str(backbone), modality=fp.modality,
        median_shape=(int(median_shape[0]), int(median_shape[1]), int(median_shape[2])),
        coverage=round(coverage, 4), sources=sources, notes=tuple(notes),
    )


__all__ = ["DEFAULT_BATCH", "CaseFingerprint", "Fingerprint", "Geometry", "Plan", "body_mask", "check_patch_size",
           "fingerprint", "guess_modality", "make_plan"]
