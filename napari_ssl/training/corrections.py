"""The correction loop: a user's corrected masks become a labelled case of the segmenter that made them, and a new
version of that segmenter continues from its weights (MONAI Label's active learning, nnInteractive's correction loop).

One round (:func:`learn_from_correction`, run in a child process by the Segment dock):

1. The corrected masks (class indices, as Segment writes them) are checked against the scan they were drawn on
   (:func:`check_correction`: 3D, the scan's shape and grid, values of the model's classes), before anything is
   written; a mismatch is one sentence.
2. The scan's channels and the masks are stored as a case *beside* the model (:func:`store_correction`):
   ``<parent>/<name>-corrections/NNN-<scan>/`` holds one file per channel (named by the model's channel names),
   ``labels.nii.gz`` in the model's source label ids (:func:`class_source_ids`, so the case is an ordinary labelled
   case of the model's classes) and ``case.json`` (provenance: the model version and its weights' hash, the scan,
   the voxels edited, when). Written into a hidden folder first and renamed into place.
3. Training continues from the model's weights (``finetune(FinetuneConfig(from_model=...))``: same plan, classes,
   channels and normalisation) for a short budget on every correction stored for this model's line plus the files
   it was trained on (those still on disk; the corrections weighted to give half the patches), and saves a new
   version ``<parent>/<name>-v<N+1>``; the model itself is only read.

The Segment dock then segments the scan again with the new version. Headless, ``napari-ssl finetune --from MODEL
--images ... --labels ...`` is the same continuation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.classes import SegClass
from napari_ssl.io.volume import Volume

__all__ = [
    "CASE_FILE",
    "CORRECTIONS_SUFFIX",
    "Correction",
    "check_correction",
    "check_writable",
    "class_source_ids",
    "correction_cases",
    "corrections_dir",
    "learn_from_correction",
    "next_version",
    "store_correction",
]

CORRECTIONS_SUFFIX = "-corrections"
CASE_FILE = "case.json"
LABELS_FILE = "labels.nii.gz"
_VERSION = re.compile(r"^(?P<base>.+?)-v(?P<n>\d+)$")


def _lineage(model: str | os.PathLike[str]) -> tuple[Path, str]:
    """The folder holding a model's versions and the name they share (``runs/brats-v3`` -> ``runs``, ``brats``)."""
    p = Path(model).expanduser().resolve()
    match = _VERSION.match(p.name)
    return p.parent, match.group("base") if match else p.name


def corrections_dir(model: str | os.PathLike[str]) -> Path:
    """Where the corrections of ``model``'s line are stored: ``<parent>/<name>-corrections`` (every version's)."""
    parent, base = _lineage(model)
    return parent / f"{base}{CORRECTIONS_SUFFIX}"


def next_version(model: str | os.PathLike[str], version: int) -> Path:
    """The folder of the version after ``model`` (version ``version``): ``<parent>/<name>-v<N+1>``, or the next
    free number when that folder exists (an earlier round cancelled, a copy)."""
    parent, base = _lineage(model)
    n = version + 1
    while (parent / f"{base}-v{n}").exists():
        n += 1
    return parent / f"{base}-v{n}"


def class_source_ids(classes: Sequence[SegClass]) -> dict[int, int]:
    """For each class index, a source label id that :func:`~napari_ssl.classes.remap_labels` maps back to it.

    Masks hold class indices; a stored case holds source ids, so it trains exactly like the model's own label
    files. Where groups overlap (BraTS: whole tumour 1+2+4, core 1+4, enhancing 4; later classes win) the id is
    one that no later class claims: whole tumour -> 2, core -> 1, enhancing -> 4.
    """
    out: dict[int, int] = {}
    for i, cls in enumerate(classes):
        later = {j for c in classes[i + 1:] for j in c.ids}
        free = [j for j in cls.ids if j not in later]
        if not free:
            raise ValueError(f"class {cls.name} (ids {'+'.join(map(str, cls.ids))}) is covered by later classes: "
                             "no voxel can be given to it")
        out[cls.index] = free[0]
    return out


@dataclass(frozen=True)
class Correction:
    """A stored correction: its folder, the channel files in the model's order, the label file, the provenance."""

    folder: Path
    images: tuple[Path, ...]
    labels: Path
    provenance: Mapping[str, Any]

    @property
    def image_item(self) -> str:
        """The channels as one ``--images`` item (``a.nii.gz,b.nii.gz``)."""
        return ",".join(str(p) for p in self.images)


def check_correction(masks: Volume, channels: Sequence[Volume], classes: Sequence[SegClass], *,
                     masks_name: str = "masks", scan_name: str = "scan") -> None:
    """Refuse, in one sentence, corrected masks that cannot be a case of a model with ``classes``: not 3D, another
    shape or grid than the scan's, values that are not the model's class indices, nothing painted."""
    array = np.asarray(masks.array)
    if array.ndim != 3:
        raise ValueError(f"the masks layer {masks_name!r} is {array.ndim}D; a correction is a 3D masks layer "
                         "on the scan's grid")
    if not channels:
        raise ValueError("no scan to learn from: pick the scan the masks were drawn on")
    scan = channels[0]
    if tuple(array.shape) != tuple(scan.spatial_shape):
        raise ValueError(f"the masks layer {masks_name!r} has shape {tuple(array.shape)} and the scan {scan_name!r} "
                         f"{tuple(scan.spatial_shape)}: correct the masks of this scan (its Segment result)")
    if not masks.same_geometry(scan, atol=1e-2):
        raise ValueError(f"the masks layer {masks_name!r} is not on the grid of the scan {scan_name!r} (voxel size, "
                         "position or direction differ): correct the masks of this scan")
    for i, chan in enumerate(channels[1:], start=1):
        if chan.spatial_shape != scan.spatial_shape or not chan.same_geometry(scan, atol=1e-2):
            raise ValueError(f"input {i + 1} ({chan.name or '?'}) is not on the grid of the scan {scan_name!r}")
    if array.dtype.kind not in "biu":
        raise ValueError(f"the masks layer {masks_name!r} holds {array.dtype} values; masks hold class numbers")
    top = int(array.max()) if array.size else 0
    if top > len(classes) or (array.size and int(array.min()) < 0):
        names = ", ".join(f"{c.index} {c.name}" for c in classes)
        raise ValueError(f"the masks layer {masks_name!r} holds label {top if top > len(classes) else int(array.min())}"
                         f", which is not a class of this model ({names}); paint only its classes (or 0, background)")
    if top == 0:
        raise ValueError(f"the masks layer {masks_name!r} is empty (all background): paint the structures the model "
                         "should find before teaching it")


def check_writable(model: str | os.PathLike[str]) -> None:
    """Refuse, in one sentence, a model whose line cannot grow: the bundled demonstration model (its folder is the
    installed package's) or a folder whose parent cannot be written (corrections and versions go beside it)."""
    from napari_ssl.inference.bundled import bundled_name

    name = bundled_name(model)
    if name is not None:
        raise ValueError(f"the bundled model {name} does not learn (it lives in the installed package); fine-tune "
                         "a model of your own on your scans, then correct its masks")
    parent, _ = _lineage(model)
    if not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write beside the model in {parent} (the corrections and the new version go "
                         "there); copy the model folder somewhere you can write and choose that copy")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")[:60] or "scan"


def store_correction(model: str | os.PathLike[str], channels: Sequence[Volume], masks: Volume, *,
                     scan_name: str = "scan", edited_voxels: int | None = None,
                     masks_name: str = "masks") -> Correction:
    """Store ``channels`` + corrected ``masks`` (class indices) as a case of ``model``'s line (see the module
    docstring); checked first (:func:`check_correction`), nothing written on refusal. Returns the stored case."""
    from napari_ssl import checkpoint, io

    ckpt = checkpoint.open_checkpoint(model, kinds=("segment",))
    check_writable(model)
    if len(channels) != ckpt.in_channels:
        raise ValueError(f"the model takes {ckpt.in_channels} input(s) ({', '.join(ckpt.channel_names)}), "
                         f"{len(channels)} given")
    check_correction(masks, channels, ckpt.classes, masks_name=masks_name, scan_name=scan_name)
    ids = class_source_ids(ckpt.classes)
    lut = np.zeros(len(ckpt.classes) + 1, np.int16)
    for index, source in ids.items():
        lut[index] = source
    labels = channels[0].with_array(lut[np.asarray(masks.array).astype(np.int64)])

    root = corrections_dir(model)
    root.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in root.iterdir() if (m := re.match(r"^(\d+)-", p.name))]
    final = root / f"{max(numbers, default=0) + 1:03d}-{_slug(scan_name)}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        names = [_slug(n) for n in ckpt.channel_names]
        if len(set(names)) != len(names):
            names = [f"channel{i + 1}" for i in range(len(names))]
        files = []
        for name, chan in zip(names, channels, strict=True):
            files.append(io.write(chan, tmp / f"{name}.nii.gz").name)
        io.write(labels, tmp / LABELS_FILE)
        weights = (ckpt.files or {}).get(checkpoint.MODEL_FILE, {})
        provenance = {
            "format": "napari-ssl-correction", "format_version": 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": str(Path(ckpt.path).resolve()), "model_version": ckpt.model_version, "model_step": ckpt.step,
            "model_sha256": weights.get("sha256"),
            "scan": scan_name, "scan_paths": [(c.metadata or {}).get("napari_ssl", {}).get("path") or c.path
                                              for c in channels],
            "images": files, "labels": LABELS_FILE, "channels": list(ckpt.channel_names),
            "classes": [c.to_dict() for c in ckpt.classes],
            "label_ids": {str(k): v for k, v in ids.items()},
            "edited_voxels": edited_voxels,
            "class_voxels": {c.name: int(np.count_nonzero(masks.array == c.index)) for c in ckpt.classes},
        }
        # the case folder is renamed into place whole: no file of it needs its own atomic write
        (tmp / CASE_FILE).write_text(json.dumps(provenance, indent=1), encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Correction(final, tuple(final / f for f in files), final / LABELS_FILE, provenance)


def correction_cases(model: str | os.PathLike[str]) -> list[Correction]:
    """Every correction stored for ``model``'s line, oldest first (half-written folders are skipped)."""
    root = corrections_dir(model)
    out = []
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            prov = json.loads((folder / CASE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        images = tuple(folder / f for f in prov.get("images", ()))
        labels = folder / prov.get("labels", LABELS_FILE)
        if images and all(p.is_file() for p in images) and labels.is_file():
            out.append(Correction(folder, images, labels, prov))
    return out


def _trained_on(ckpt: Any) -> list[tuple[str, str]]:
    """The (image item, label file) pairs the model's own run read from files, those still on disk."""
    config = ckpt.config or {}
    images, labels = list(config.get("images") or ()), list(config.get("labels") or ())
    out = []
    for image, label in zip(images, labels, strict=False):
        parts = [p for p in str(image).split(",") if p]
        if parts and all(Path(p).is_file() or Path(p).is_dir() for p in parts) and Path(label).exists():
            out.append((str(image), str(label)))
    return out


def continue_config(model: str | os.PathLike[str], out: str | os.PathLike[str], *, minutes: float | None = 2.0,
                    steps: int | None = None, replay: bool = True, **settings: Any) -> dict[str, Any]:
    """Keyword arguments of the :class:`~napari_ssl.training.config.FinetuneConfig` that continues ``model`` on its
    line's corrections (and, with ``replay``, the files it was trained on), into ``out``; no held-out split: every
    case the user gave is learnt from."""
    from napari_ssl import checkpoint

    ckpt = checkpoint.open_checkpoint(model, kinds=("segment",))
    corrections = [(c.image_item, str(c.labels)) for c in correction_cases(model)]
    fixed = {Path(lab).resolve() for _, lab in corrections}
    own = [(img, lab) for img, lab in _trained_on(ckpt) if Path(lab).resolve() not in fixed] if replay else []
    own = list({Path(lab).resolve(): (img, lab) for img, lab in own}.values())
    pairs = own + corrections
    if not pairs:
        raise ValueError(f"no correction stored for {model}: correct a Segment result first")
    # the corrections give half the patches, the model's own cases the other half: one corrected case among ten
    # of the model's would otherwise be a tenth of a short budget
    weights = [1.0] * len(own) + [max(1.0, len(own) / max(1, len(corrections)))] * len(corrections)
    cfg = ckpt.config or {}
    kwargs = {"images": tuple(p[0] for p in pairs), "labels": tuple(p[1] for p in pairs), "from_model": str(model),
              "case_weights": tuple(weights),
              "out": str(out), "minutes": minutes, "steps": steps, "val_fraction": 0.0,
              "seed": int(cfg.get("seed", 0) or 0) + ckpt.model_version}
    for key in ("mirror", "ignore_label", "annotated"):
        if cfg.get(key) is not None and key not in settings:
            kwargs[key] = cfg[key]
    kwargs.update(settings)
    return kwargs


def learn_from_correction(model: str | os.PathLike[str], channels: Sequence[Volume], masks: Volume, *,
                          out: str | os.PathLike[str] | None = None, scan_name: str = "scan",
                          masks_name: str = "masks", edited_voxels: int | None = None, minutes: float | None = 2.0,
                          steps: int | None = None, replay: bool = True, **settings: Any) -> Iterator[Any]:
    """One round of the loop (see the module docstring): store the case, continue training into ``out`` (default
    :func:`next_version`); yields ``finetune``'s events. Bad input raises before anything is written."""
    from napari_ssl import checkpoint
    from napari_ssl.training.config import FinetuneConfig
    from napari_ssl.training.finetune import finetune

    ckpt = checkpoint.open_checkpoint(model, kinds=("segment",))
    target = Path(out) if out is not None else next_version(model, ckpt.model_version)
    if target.exists() and any(target.iterdir()):
        raise ValueError(f"{target} exists and is not empty; the new version needs a new folder")
    store_correction(model, channels, masks, scan_name=scan_name, masks_name=masks_name, edited_voxels=edited_voxels)
    config = FinetuneConfig(**continue_config(model, target, minutes=minutes, steps=steps, replay=replay, **settings))
    yield from finetune(config)
