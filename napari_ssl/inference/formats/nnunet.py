"""nnU-Net v2 trained-model folders, run by nnU-Net's own ``nnUNetPredictor`` (the ``nnunet`` extra).

A model folder is what ``nnUNetv2_train`` leaves in ``nnUNet_results``: ``dataset.json``, ``plans.json`` and one
``fold_N/checkpoint_final.pth`` per trained fold, in a folder named ``TRAINER__PLANS__CONFIGURATION``
(``nnUNetTrainer__nnUNetPlans__3d_fullres``); the dataset folder above it (``Dataset501_Organs``) is accepted when it
holds one such folder.

- :func:`describe` reads ``dataset.json``, ``plans.json`` and the folder's file names only: no torch, no nnunetv2,
  no checkpoint opened.
- :func:`open_nnunet` (only with trust: the checkpoints are pickles) loads the folds through
  ``nnUNetPredictor.initialize_from_trained_model_folder``.
- :meth:`NnUNetSegmenter.predict` gives nnU-Net exactly what its ``SimpleITKIO`` gives it for the scan's file: the
  voxels in the file's own axis order (napari-ssl's reader keeps that order: ``sitk.GetArrayFromImage``) and the
  spacing, no reorientation; nnU-Net preprocesses (crop, normalise, resample to the plans' spacing), runs its sliding
  windows per fold, averages the folds and puts the labels back on the scan's grid. No worker processes: the
  in-memory path of the predictor, in the caller's process and threads.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.inference.segmenter import (
    Format,
    InputChannel,
    OutputClass,
    Segmenter,
    SegmenterError,
    SegmenterInfo,
)
from napari_ssl.io.volume import Volume

__all__ = ["FORMAT", "NnUNetSegmenter", "describe", "detect", "find_folds", "open_nnunet"]

NAME = "nnunet"
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
TRUST_REASON = ("nnU-Net checkpoints (fold_N/checkpoint_final.pth) are Python pickles, and opening a pickle can run "
                "any code stored in it")
#: channel names that say the scan is an MR image (dataset.json's channel_names are free words)
_MR_WORDS = re.compile(r"^(mri?|t1\w*|t2\w*|flair|pd\w*|adc|dwi|swi|bold|dce|perfusion|.*(_|-|\b)(mr|mri)\b.*)$",
                       re.IGNORECASE)
_FOLD = re.compile(r"^fold_(\d+|all)$")


# ---------------------------------------------------------------- finding and describing (no torch)
def _is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "dataset.json").is_file() and (path / "plans.json").is_file()


def _model_folders(path: Path) -> list[Path]:
    """The trained-model folders at ``path``: itself, or the ``TRAINER__PLANS__CONFIG`` folders of a dataset
    folder."""
    if _is_model_folder(path):
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.name.count("__") == 2 and _is_model_folder(p))


def detect(path: Path) -> bool:
    return bool(_model_folders(path))


def find_folds(folder: Path) -> tuple[tuple[str, ...], str]:
    """The folds of a model folder that hold a checkpoint, and the checkpoint's name (``checkpoint_final.pth``,
    else ``checkpoint_best.pth`` when no fold has a final one): ``(("0", "1"), "checkpoint_final.pth")``."""
    dirs = [p for p in folder.iterdir() if p.is_dir() and _FOLD.match(p.name)] if folder.is_dir() else []
    for name in CHECKPOINTS:
        folds = [p.name[5:] for p in dirs if (p / name).is_file()]
        if folds:
            return tuple(sorted(folds, key=lambda f: (f == "all", int(f) if f.isdigit() else 0))), name
    return (), CHECKPOINTS[0]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SegmenterError(f"{path}: not a readable nnU-Net JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise SegmenterError(f"{path}: not an nnU-Net {path.stem} file (a JSON object was expected)")
    return data


def _modality(name: str) -> str | None:
    word = name.strip()
    if word.lower() == "ct":
        return "CT"
    return "MR" if _MR_WORDS.match(word) else None


def _classes(dataset: dict[str, Any], path: Path) -> tuple[tuple[OutputClass, ...], bool]:
    """The label values nnU-Net writes, with their names, and whether the model is region-based.

    A region-based model (``labels`` values are lists of labels) writes, for region ``i``, the value
    ``regions_class_order[i]`` (the last region painted wins); ``ignore`` is never written."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise SegmenterError(f"{path / 'dataset.json'} names no labels (its 'labels' entry is missing or empty)")
    named = [(str(k), v) for k, v in labels.items() if str(k).lower() not in ("background", "ignore")]
    regions = any(isinstance(v, (list, tuple)) for _, v in named)
    if not regions:
        return tuple(sorted((OutputClass(int(v), name) for name, v in named), key=lambda c: c.index)), False
    order = dataset.get("regions_class_order")
    if not isinstance(order, list) or len(order) != len(named):
        raise SegmenterError(f"{path / 'dataset.json'} has region-based labels but no regions_class_order with one "
                             f"value per region ({len(named)})")
    return tuple(OutputClass(int(v), name) for (name, _), v in zip(named, order, strict=True)), True


def _configuration(folder: Path, plans: dict[str, Any]) -> tuple[str, str, str]:
    """``(trainer, plans name, configuration)`` from the folder's name (``nnUNetTrainer__nnUNetPlans__3d_fullres``),
    else the plans' only configuration."""
    configs = plans.get("configurations") or {}
    parts = folder.name.split("__")
    if len(parts) == 3 and parts[2] in configs:
        return parts[0], parts[1], parts[2]
    if len(configs) == 1:
        return "", str(plans.get("plans_name", "")), next(iter(configs))
    raise SegmenterError(
        f"{folder}: cannot tell which of the plans' configurations ({', '.join(configs) or 'none'}) was trained; "
        "nnU-Net names a model folder TRAINER__PLANS__CONFIGURATION (nnUNetTrainer__nnUNetPlans__3d_fullres)")


def _config_entry(plans: dict[str, Any], name: str) -> dict[str, Any]:
    """A configuration of ``plans.json`` with what it inherits (``inherits_from``) filled in."""
    configs = plans.get("configurations") or {}
    entry = dict(configs.get(name) or {})
    seen = {name}
    while "inherits_from" in entry and entry["inherits_from"] not in seen:
        parent = entry.pop("inherits_from")
        seen.add(parent)
        entry = {**(configs.get(parent) or {}), **entry}
    return entry


def _scan_spacing(plans: dict[str, Any], entry: dict[str, Any]) -> tuple[float, float, float] | None:
    """The configuration's spacing in the scan's array order (z, y, x): plans.json holds it transposed."""
    spacing = entry.get("spacing")
    if not isinstance(spacing, list) or len(spacing) != 3:
        return None  # a 2d configuration: in-plane spacing only
    back = plans.get("transpose_backward") or [0, 1, 2]
    z, y, x = (float(spacing[i]) for i in back)
    return (z, y, x)


def describe(path: Path) -> SegmenterInfo:
    """An nnU-Net model folder's inputs, classes, spacing and folds from ``dataset.json``, ``plans.json`` and the
    folder's file names; a folder without a trained fold is refused in one sentence naming what was looked for."""
    folders = _model_folders(path)
    if len(folders) > 1:
        raise SegmenterError(
            f"{path} holds {len(folders)} nnU-Net models ({', '.join(f.name for f in folders)}); choose one of "
            "those folders")
    folder = folders[0]
    dataset = _read_json(folder / "dataset.json")
    plans = _read_json(folder / "plans.json")
    folds, checkpoint = find_folds(folder)
    if not folds:
        raise SegmenterError(
            f"{folder} is an nnU-Net folder without a trained fold (looked for fold_N/{CHECKPOINTS[0]} or "
            f"fold_N/{CHECKPOINTS[1]})")
    names = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(names, dict) or not names:
        raise SegmenterError(f"{folder / 'dataset.json'} names no input channels (its 'channel_names' entry)")
    channels = tuple(InputChannel(str(names[k]), _modality(str(names[k])))
                     for k in sorted(names, key=lambda k: int(k)))
    classes, regions = _classes(dataset, folder)
    trainer, plans_name, config = _configuration(folder, plans)
    entry = _config_entry(plans, config)
    if entry.get("previous_stage"):
        raise SegmenterError(
            f"{folder}: a {config} model needs the {entry['previous_stage']} model's masks as input (nnU-Net's "
            "cascade), which this tool does not run; use the dataset's 3d_fullres or 3d_lowres model")
    patch = entry.get("patch_size") or []
    details = [("configuration", config)]
    if trainer:
        details.append(("trainer", trainer))
    details += [("plans", plans_name), ("folds", ", ".join(folds)), ("checkpoint", checkpoint)]
    if patch:
        details.append(("patch size", " x ".join(str(int(p)) for p in patch)))
    if entry.get("normalization_schemes"):
        details.append(("normalisation", ", ".join(entry["normalization_schemes"])))
    if regions:
        details.append(("labels", "region-based: each voxel gets the value of the last region it lies in"))
    dataset_name = str(plans.get("dataset_name") or dataset.get("name") or folder.parent.name)
    return SegmenterInfo(
        path=str(folder),
        format=NAME,
        title=f"{dataset_name} ({config})",
        channels=channels,
        classes=classes,
        spacing=_scan_spacing(plans, entry),
        orientation=None,
        needs_trust=True,
        trust_reason=TRUST_REASON,
        description=str(dataset.get("description") or f"nnU-Net v2 model ({config}, {len(folds)} fold(s))"),
        details=tuple(details),
    )


# ---------------------------------------------------------------- opening and running (torch, nnunetv2)
def _fold_list(value: Any, found: Sequence[str], folder: str) -> tuple[str, ...]:
    if value is None or value == "" or value == "auto":
        return tuple(found)
    items = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]
    folds = tuple(str(f).strip() for f in items if str(f).strip())
    missing = [f for f in folds if f not in found]
    if missing or not folds:
        raise SegmenterError(f"{folder} has no trained fold {', '.join(missing) or '(none chosen)'}; its folds are "
                             f"{', '.join(found)}")
    return folds


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """nnU-Net prints notes while it loads (the device, the folds); keep them off our stdout, where the CLI writes
    its result line."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def _never() -> bool:
    return False


def open_nnunet(info: SegmenterInfo, device: str = "auto", *, folds: Any = None, mirroring: bool | None = None,
                threads: int | None = None, **_options: Any) -> NnUNetSegmenter:
    """Load the folds of an nnU-Net model folder with ``nnUNetPredictor`` (trust checked by the caller).

    Options: ``folds`` (``"0,1"`` or a sequence; default all trained folds), ``mirroring`` (test-time mirroring;
    default off on a CPU, where it costs up to 8x the time of a 3D model, on elsewhere as in nnU-Net), ``threads``
    (torch's CPU threads while predicting; default torch's current setting: the cores, or what the caller set).
    """
    try:
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    except ImportError:
        raise SegmenterError(
            f"{info.path} is an nnU-Net model, which needs the nnunetv2 package: pip install 'napari-ssl[nnunet]'"
        ) from None
    from napari_ssl.device import resolve_device

    folder = Path(info.path)
    found, checkpoint = find_folds(folder)
    chosen = _fold_list(folds, found, info.path)
    dev = resolve_device(device)
    use_mirroring = dev.type != "cpu" if mirroring is None else bool(mirroring)
    n_threads = int(threads) if threads else torch.get_num_threads()  # torch's own default: the cores; the
    # Segment dock's child has set it to the dock's choice
    if n_threads < 1:
        raise SegmenterError(f"threads must be at least 1, got {threads}")

    class Predictor(nnUNetPredictor):  # type: ignore[misc]
        """nnUNetPredictor reporting each window, and skipping the network once a stop is asked for (the sliding
        loop then ends at once and its feeder thread with it; the caller raises after the fold)."""

        tick: Callable[[], bool] = staticmethod(_never)

        def _internal_maybe_mirror_and_predict(self, x: Any) -> Any:
            if self.tick():
                return torch.zeros((x.shape[0], self.label_manager.num_segmentation_heads, *x.shape[2:]),
                                   dtype=x.dtype, device=x.device)
            return super()._internal_maybe_mirror_and_predict(x)

    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        with _quiet():
            predictor = Predictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                                  perform_everything_on_device=dev.type == "cuda", device=dev, verbose=False,
                                  verbose_preprocessing=False, allow_tqdm=False)
            predictor.initialize_from_trained_model_folder(
                str(folder), use_folds=tuple(int(f) if f.isdigit() else f for f in chosen),
                checkpoint_name=checkpoint)
    except SegmenterError:
        raise
    except Exception as exc:  # nnU-Net raises anything from a corrupt pickle to an unknown trainer class
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SegmenterError(f"{info.path}: nnU-Net could not load this model ({type(exc).__name__}: {first})") from None
    finally:
        torch.set_num_threads(previous)
    return NnUNetSegmenter(info, predictor, device=str(dev), folds=chosen, threads=n_threads)


class NnUNetSegmenter(Segmenter):
    """A loaded nnU-Net model (``predictor``: nnU-Net's ``nnUNetPredictor``) behind the contract."""

    def __init__(self, info: SegmenterInfo, predictor: Any, *, device: str, folds: Sequence[str],
                 threads: int) -> None:
        self.info = info
        self.predictor = predictor
        self.device = device
        self.folds = tuple(folds)
        self.threads = threads

    @property
    def mirroring(self) -> bool:
        return bool(self.predictor.use_mirroring and self.predictor.allowed_mirroring_axes)

    def _windows(self, shape: Sequence[int]) -> int:
        """Sliding windows nnU-Net runs per fold on a preprocessed image of ``shape`` (c, z, y, x)."""
        from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

        patch = list(self.predictor.configuration_manager.patch_size)
        spatial = list(shape[1:])
        if len(patch) < len(spatial):  # 2d: every slice along the first axis
            padded = [max(s, p) for s, p in zip(spatial[1:], patch, strict=True)]
            steps = compute_steps_for_sliding_window(padded, patch, self.predictor.tile_step_size)
            return spatial[0] * math.prod(len(s) for s in steps)
        padded = [max(s, p) for s, p in zip(spatial, patch, strict=True)]
        steps = compute_steps_for_sliding_window(padded, patch, self.predictor.tile_step_size)
        return math.prod(len(s) for s in steps)

    def predict(self, channels: Sequence[Volume], *, progress: Callable[[float], None] | None = None,
                should_stop: Callable[[], bool] | None = None, **options: Any) -> Volume:
        """nnU-Net's prediction for the scan as its file stores it: the same preprocessing, windows, fold average
        and resampling back as ``nnUNetPredictor.predict_single_npy_array``; the labels (uint8, uint16 past 255
        classes) on ``channels[0]``'s grid. Progress per window; a stop is honoured at the next window (the rest of
        the fold is skipped) and raises :class:`~napari_ssl.inference.sliding.SegmentationCancelled`."""
        import torch
        from nnunetv2.inference.export_prediction import (
            convert_predicted_logits_to_segmentation_with_correct_shape,
        )

        from napari_ssl.inference.sliding import SegmentationCancelled

        chans = self.check_inputs(channels)
        first = chans[0]
        if first.array.ndim != 3:
            raise SegmenterError(f"{self.info.title} needs 3D channels, got shape {first.array.shape}")
        report = progress or (lambda _f: None)
        stop = should_stop or (lambda: False)

        def check() -> None:
            if stop():
                raise SegmentationCancelled()

        p = self.predictor
        # what SimpleITKIO.read_images gives nnU-Net for the scan's file: (c, z, y, x) float32, spacing (z, y, x)
        data = np.stack([np.asarray(c.array, dtype=np.float32) for c in chans])
        properties = {"spacing": [abs(float(s)) for s in first.spacing]}
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            check()
            report(0.0)
            preprocessor = p.configuration_manager.preprocessor_class(verbose=False)
            data, _seg, properties = preprocessor.run_case_npy(data, None, properties, p.plans_manager,
                                                               p.configuration_manager, p.dataset_json)
            tensor = torch.from_numpy(data)
            report(0.05)
            check()
            windows = self._windows(tensor.shape) * len(p.list_of_parameters)
            done = [0]

            def tick() -> bool:
                if stop():
                    return True
                done[0] += 1
                report(0.05 + 0.9 * min(1.0, done[0] / max(1, windows)))
                return False

            p.tick = tick
            prediction = None
            with torch.inference_mode():
                for params in p.list_of_parameters:  # as nnUNetPredictor.predict_logits_from_preprocessed_data
                    target = p.network._orig_mod if hasattr(p.network, "_orig_mod") else p.network
                    target.load_state_dict(params)
                    logits = p.predict_sliding_window_return_logits(tensor).to("cpu")
                    check()
                    prediction = logits if prediction is None else prediction + logits
                if len(p.list_of_parameters) > 1:
                    prediction /= len(p.list_of_parameters)
                del tensor
                labels = convert_predicted_logits_to_segmentation_with_correct_shape(
                    prediction, p.plans_manager, p.configuration_manager, p.label_manager, properties,
                    return_probabilities=False)
            del prediction
            report(1.0)
        finally:
            p.tick = _never
            torch.set_num_threads(previous)
        labels = np.asarray(labels)
        if labels.shape != first.spatial_shape:  # nnU-Net returns the scan's own shape; anything else is a bug
            raise SegmenterError(f"nnU-Net returned labels of shape {labels.shape} for a scan of shape "
                                 f"{first.spatial_shape}")
        dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
        name = f"{first.name} masks" if first.name else "masks"
        meta = {"classes": {str(k): v for k, v in self.info.names.items()}, "model": self.info.path}
        return Volume(labels.astype(dtype, copy=False), first.spacing, first.origin, first.direction, None, name,
                      meta)


FORMAT = Format(name=NAME, looks_for="dataset.json, plans.json and fold_N/checkpoint_final.pth (an nnU-Net v2 "
                "results folder)", detect=detect, describe=describe, open=open_nnunet)
