"""Export a napari-ssl segmenter for other tools: a MONAI bundle, or a TorchScript file with its sidecar.

- ``monai-bundle``: ``configs/metadata.json`` (``network_data_format`` with our channels and classes, versions,
  intended use), ``configs/inference.json`` reproducing napari-ssl's pipeline with MONAI transforms (``LoadImaged``,
  ``EnsureChannelFirstd``, ``Orientationd`` to the model's orientation, ``ResampleToMatchd`` to napari-ssl's model
  grid (:data:`MODEL_GRID`: its spacing, ``round(n s / t)`` voxels, the first voxel centre kept; MONAI's ``Spacingd``
  would make ``round((n - 1) s / t) + 1`` voxels and put the sliding windows a voxel apart) with SimpleITK's zeros
  outside the scan (:data:`OUTSIDE_ZERO`), the checkpoint's normalisation, ``SpatialPadd`` to the window with the
  background value, ``SlidingWindowInferer`` with Gaussian blending, ``AsDiscreted`` argmax, ``Invertd`` back to the
  scan's grid, ``SaveImaged``), and the network as a MONAI ``BasicUNet`` (``network_def``) with ``models/model.pt`` (a
  plain state dict with BasicUNet's keys, its kernels turned to MONAI's (x, y, z) axis order: :func:`xyz_state`) and
  ``models/model.ts`` (the same network scripted, for MONAI Deploy). The bundle needs MONAI, torch and numpy only, not
  napari-ssl; ``monai.bundle``'s ``ConfigWorkflow`` runs it (its ``run`` loops over the data loader as MONAI's
  evaluator does, so pytorch-ignite is not needed), and MONAI Label / MONAI Deploy read its ``network_def``,
  ``preprocessing``, ``inferer`` and ``postprocessing``. It runs in float32; napari-ssl's own pipeline runs a CPU in
  bfloat16 autocast unless ``NAPARI_SSL_AMP=0``, which is the setting to compare the two with.
- ``torchscript``: ``model.ts`` (the scripted ``BasicUNet``) and ``model.json``, the sidecar of
  :mod:`napari_ssl.inference.formats.torchscript`.

Every export is written into a temporary folder beside ``out`` and renamed into place at the end, so a failed export
leaves nothing half-written. No Qt or napari here; torch only inside :func:`export_model`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from napari_ssl.inference.segmenter import InputChannel, OutputClass
from napari_ssl.preprocess import Normalization

__all__ = [
    "EXPORT_FORMATS",
    "MODEL_GRID",
    "OUTSIDE_ZERO",
    "RUN_EXPRESSION",
    "bundle_config",
    "bundle_metadata",
    "export_model",
    "normalization_transforms",
    "xyz_state",
]

EXPORT_FORMATS = ("monai-bundle", "torchscript")

#: the exported bundle's ``run``: what MONAI's SupervisedEvaluator does for one batch, without pytorch-ignite
RUN_EXPRESSION = ("$torch.no_grad()(lambda: [[@postprocessing(item) for item in monai.data.decollate_batch({**b, "
                  "'image': b['image'].to(@device), 'pred': @inferer(b['image'].to(@device), @network)})] "
                  "for b in @dataloader])()")

#: napari-ssl's ``zscore_nonzero`` (:class:`napari_ssl.preprocess.Normalization`) on one channel, in MONAI's (x, y, z)
#: axis order: the statistics are taken in napari-ssl's (z, y, x) order, on the same subsample of voxels
_ZSCORE_NONZERO = (
    "$lambda a, p: (lambda b: (lambda m: (lambda v: b if v.size == 0 else (lambda lo, hi: (lambda c: (lambda mean, "
    "std: np.where(m, (np.clip(b, lo, hi) - np.float32(mean)) / np.float32(std), np.float32(0)) if m is not None "
    "else (np.clip(b, lo, hi) - np.float32(mean)) / np.float32(std))(c.mean(), max(c.std(), 1e-6)))(np.clip(v, lo, "
    "hi).astype(np.float64)))(*np.percentile(v, p)))((b[m] if m is not None else b).reshape(-1)[:: max(1, (b[m] if m "
    "is not None else b).size // 2000000)]))(None if (b != 0).mean() > 0.98 else b != 0))(np.array(a, "
    "dtype=np.float32).T).T")


#: napari-ssl's model grid (:func:`napari_ssl.preprocess.resample`) for the oriented scan ``d['image']``: spacing
#: ``@pixdim``, ``round(n s / t)`` voxels along each axis and the first voxel's centre on the scan's first voxel centre
#: (MONAI's ``Spacingd`` makes ``round((n - 1) s / t) + 1`` voxels). ``grid`` is an empty template for
#: ``ResampleToMatchd`` (invertible: ``Invertd`` brings the labels back to the scan's grid); ``inside`` counts, per
#: axis, the voxels whose centres lie inside the scan's extent (continuous index < n - 1/2; SimpleITK gives 0 beyond)
MODEL_GRID = (
    "$lambda d: (lambda img, s, t: (lambda m: {**d, 'grid': monai.data.MetaTensor(torch.zeros(()).expand(1, *m), "
    "affine=img.affine.matmul(torch.diag(torch.as_tensor([*(t / s), 1.0], dtype=img.affine.dtype))), "
    "meta={k: v for k, v in img.meta.items() if k != 'affine'}), 'inside': [min(int(a), int(np.ceil(b - 1e-6))) "
    "for a, b in zip(m, (np.asarray(img.shape[1:]) - 0.5) * s / t)]})([max(1, int(v)) for v in "
    "np.round(np.asarray(img.shape[1:]) * s / t)]))(d['image'], np.asarray(d['image'].pixdim, dtype=np.float64), "
    "np.asarray(@pixdim, dtype=np.float64))")
#: after ``ResampleToMatchd`` (``border``, in float64): what SimpleITK's linear resampling gives, exactly: 0 at the
#: voxels outside the scan's extent, and 0 (not float noise of ~1e-14) where every neighbour is 0: both before
#: normalisation, so ``zscore_nonzero``'s nonzero mask is napari-ssl's
OUTSIDE_ZERO = ("$lambda d: [[d['image'][(slice(None),) * (1 + a) + (slice(k, None),)].zero_() for a, k in "
                "enumerate(d['inside'])], d['image'].masked_fill_(d['image'].abs() <= 1e-10 * "
                "d['image'].abs().max(), 0), {k: v for k, v in d.items() if k not in ('grid', 'inside')}][-1]")


def normalization_transforms(norm: Normalization, key: str = "image") -> list[dict[str, Any]]:
    """MONAI transforms (config form) doing what ``norm`` does to a channel-first image."""
    lo, hi = norm.percentiles
    if norm.mode == "none":
        return []
    if norm.mode == "ct":
        return [{"_target_": "ScaleIntensityRanged", "keys": key, "a_min": norm.window[0], "a_max": norm.window[1],
                 "b_min": -1.0, "b_max": 1.0, "clip": True}]
    if norm.mode == "ct_zscore":
        assert norm.clip is not None
        return [{"_target_": "ScaleIntensityRanged", "keys": key, "a_min": norm.clip[0], "a_max": norm.clip[1],
             "b_min": (norm.clip[0] - norm.mean) / norm.std, "b_max": (norm.clip[1] - norm.mean) / norm.std,
             "clip": True}]
    if norm.mode == "minmax":
        return [{"_target_": "ScaleIntensityRangePercentilesd", "keys": key, "lower": lo, "upper": hi, "b_min": -1.0,
                 "b_max": 1.0, "clip": True, "channel_wise": True}]
    if norm.mode == "zscore":
        return [{"_target_": "ClipIntensityPercentilesd", "keys": key, "lower": lo, "upper": hi, "channel_wise": True},
                {"_target_": "NormalizeIntensityd", "keys": key, "channel_wise": True}]
    # zscore_nonzero: no MONAI transform clips to the nonzero voxels' percentiles; the same numpy steps, in place
    return [{"_target_": "Lambdad", "keys": key,
             "func": f"$lambda x: x.copy_(torch.stack([torch.from_numpy(np.ascontiguousarray(@zscore_nonzero(c, "
                     f"[{lo!r}, {hi!r}]))) for c in x]))"}]


def _pad_value(norm: Normalization) -> float | None:
    """The constant napari-ssl pads a scan smaller than the window with, where it does not depend on the scan."""
    if norm.mode == "zscore_nonzero":
        return 0.0
    if norm.mode == "ct_zscore":
        return norm.background(None)  # type: ignore[arg-type]
    if norm.mode in ("ct", "minmax"):
        return -1.0
    return None


def bundle_config(ck: Any, *, overlap: float = 0.5) -> dict[str, Any]:
    """The exported bundle's ``inference.json`` for the typed checkpoint ``ck``."""
    spec = ck.backbone
    xyz = list(reversed([int(p) for p in ck.patch_size]))
    pre: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": ck.orientation, "labels": None},
    ]
    if ck.spacing:
        pre += ["$@model_grid",
                {"_target_": "ResampleToMatchd", "keys": "image", "key_dst": "grid", "mode": "bilinear",
                 "padding_mode": "border", "dtype": "$np.float64"},
                "$@outside_zero"]
    pre += [{"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
            *normalization_transforms(ck.normalization)]
    pad = _pad_value(ck.normalization)
    pre.append({"_target_": "SpatialPadd", "keys": "image", "spatial_size": xyz, "method": "end",
                "value": pad if pad is not None else 0.0})
    norm = ["instance", {"affine": True}] if spec.norm == "instance" else spec.norm
    config: dict[str, Any] = {
        "imports": ["$import glob", "$import os", "$import numpy as np", "$import monai"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii*')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "BasicUNet", "spatial_dims": 3, "in_channels": int(ck.in_channels),
                        "out_channels": int(ck.out_channels), "features": [int(f) for f in spec.features],
                        "norm": norm, "upsample": spec.upsample},
        "network": "$@network_def.to(@device)",
        "pixdim": [float(s) for s in reversed(ck.spacing)] if ck.spacing else None,
        "model_grid": MODEL_GRID,
        "outside_zero": OUTSIDE_ZERO,
        "zscore_nonzero": _ZSCORE_NONZERO,
        "preprocessing": {"_target_": "Compose", "transforms": pre},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": xyz, "sw_batch_size": 1,
                    "overlap": float(overlap), "mode": "gaussian"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": True, "to_tensor": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "output_dtype": "$np.uint8", "resample": False, "separate_folder": False},
        ]},
        "load_weights": "$@network.load_state_dict(torch.load(@bundle_root + '/models/model.pt', "
                        "map_location=@device, weights_only=True))",
        "initialize": ["$@load_weights", "$@network.eval()"],
        "run": [RUN_EXPRESSION],
    }
    if ck.normalization.mode != "zscore_nonzero":
        del config["zscore_nonzero"]
    if not ck.spacing:
        for key in ("pixdim", "model_grid", "outside_zero"):
            del config[key]
    return config


def _channels(ck: Any) -> tuple[InputChannel, ...]:
    from napari_ssl.inference.segment import info_of

    return info_of(ck).channels


def bundle_metadata(ck: Any, name: str) -> dict[str, Any]:
    """The exported bundle's ``metadata.json`` (MONAI's bundle metadata schema)."""
    import monai
    import numpy
    import torch

    from napari_ssl import __version__

    channels = _channels(ck)
    modality = {c.modality for c in channels} - {None}
    xyz = list(reversed([int(p) for p in ck.patch_size]))
    classes = {"0": "background", **{str(c.index): c.name for c in ck.classes}}
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                  "meta_schema_20220324.json",
        "version": "1.0.0",
        "changelog": {"1.0.0": f"exported by napari-ssl {__version__} from {name}"},
        "monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__, "required_packages_version": {"nibabel": "*"},
        "name": name, "task": "segmentation of " + ", ".join(c.name for c in ck.classes),
        "description": (ck.description or f"a napari-ssl segmenter ({name})") + "; exported by napari-ssl export "
                       "(float32: it reproduces napari-ssl's masks as napari-ssl gives them with NAPARI_SSL_AMP=0)",
        "authors": "napari-ssl", "copyright": "the model's authors",
        "intended_use": "research only; check the masks: the model has seen only its training data"
                        + (f" ({len(ck.train_cases)} cases)" if ck.train_cases else ""),
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "hounsfield" if modality == {"CT"} else "magnitude",
                "modality": modality.pop() if len(modality) == 1 else "unknown", "num_channels": int(ck.in_channels),
                "spatial_shape": xyz, "dtype": "float32", "value_range": [], "is_patch_data": True,
                "channel_def": {str(i): c.name for i, c in enumerate(channels)},
            }},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation", "num_channels": int(ck.out_channels),
                "spatial_shape": xyz, "dtype": "float32", "value_range": [0, 1], "is_patch_data": True,
                "channel_def": classes,
            }},
        },
    }


def _sidecar(ck: Any) -> Any:
    from napari_ssl.inference.formats.torchscript import Sidecar

    return Sidecar(channels=_channels(ck), classes=tuple(OutputClass(c.index, c.name, c.color) for c in ck.classes),
                   spacing=tuple(float(s) for s in ck.spacing) if ck.spacing else None,  # type: ignore[arg-type]
                   orientation=ck.orientation, normalization=ck.normalization,
                   patch=tuple(int(p) for p in ck.patch_size),  # type: ignore[arg-type]
                   description=ck.description)


def export_model(model: str | os.PathLike[str], out: str | os.PathLike[str], fmt: str) -> Path:
    """Write the napari-ssl segmenter ``model`` (a checkpoint folder or a bundled model's name) as ``fmt`` into the
    folder ``out`` (replaced whole if it exists); returns ``out``.

    Raises
    ------
    ValueError
        An unknown format, or a model that is not a napari-ssl segmentation checkpoint (one sentence).
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    import torch

    from napari_ssl.inference.bundled import bundled_name, resolve_model
    from napari_ssl.inference.formats.torchscript import write_sidecar
    from napari_ssl.inference.segment import load_model

    path = resolve_model(model)
    loaded = load_model(path, device="cpu")
    ck = loaded.checkpoint
    net = loaded.net.net.float().eval()  # the MONAI BasicUNet inside napari-ssl's UNet
    name = bundled_name(path) or Path(ck.path).name
    target = Path(out).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if fmt == "torchscript":
            torch.jit.save(torch.jit.script(net), str(tmp / "model.ts"))
            write_sidecar(tmp / "model.ts", _sidecar(ck))
        else:
            from monai.bundle import ConfigParser

            (tmp / "configs").mkdir()
            (tmp / "models").mkdir()
            ConfigParser.export_config_file(bundle_config(ck), str(tmp / "configs" / "inference.json"), indent=2)
            ConfigParser.export_config_file(bundle_metadata(ck, name), str(tmp / "configs" / "metadata.json"),
                                            indent=2)
            state = xyz_state(net.state_dict())
            torch.save(state, tmp / "models" / "model.pt")
            net.load_state_dict(state)
            torch.jit.save(torch.jit.script(net), str(tmp / "models" / "model.ts"))
            (tmp / "docs").mkdir()
            (tmp / "docs" / "README.md").write_text(_readme(name, ck), encoding="utf-8")
        _replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def xyz_state(state: Any) -> dict[str, Any]:
    """The network's weights for arrays in MONAI's (x, y, z) axis order: napari-ssl's networks see (z, y, x) arrays,
    so every 3D kernel (convolutions and transposed convolutions: ``(out, in, kz, ky, kx)``) is reversed along its
    spatial axes. A fully convolutional BasicUNet with these kernels, given the transposed scan, gives the transposed
    logits (pooling, instance norm, padding and MONAI's Gaussian windows treat every axis alike)."""
    return {k: v.permute(0, 1, 4, 3, 2).contiguous() if v.ndim == 5 else v.contiguous() for k, v in state.items()}


def _replace(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``; an existing ``target`` is moved aside first and removed after."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def _readme(name: str, ck: Any) -> str:
    classes = ", ".join(f"{c.index} {c.name}" for c in ck.classes)
    spacing = " x ".join(f"{s:g}" for s in reversed(ck.spacing)) if ck.spacing else "the scan's own"
    return (f"# {name}\n\nA napari-ssl segmenter exported as a MONAI bundle. Labels: {classes}. Inputs: "
            f"{', '.join(ck.channel_names)}. The scan is reoriented to {ck.orientation}, resampled to {spacing} mm "
            f"(x y z), normalised ({ck.normalization.describe()}) and segmented in windows of "
            f"{' x '.join(str(p) for p in reversed(ck.patch_size))} voxels; the mask is written on the scan's grid.\n\n"
            "    python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json "
            "--bundle_root . --dataset_dir DATA --output_dir OUT\n\n"
            "(or `monai.bundle.ConfigWorkflow` with `datalist=[scan files]`).\n\n"
            "The bundle resamples to napari-ssl's model grid (`model_grid`, `ResampleToMatchd`: round(n s / t) voxels "
            "per axis from the scan's first voxel centre, zeros outside the scan as SimpleITK gives) and runs in "
            "float32. To compare its masks with napari-ssl's own, run napari-ssl with `NAPARI_SSL_AMP=0` (float32; "
            "by default it runs a CPU in bfloat16 autocast, which moves a few voxels at the boundaries).\n")


def describe_export(target: Path) -> str:
    """One line naming what was written."""
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    return f"wrote {target} ({', '.join(files)})"
