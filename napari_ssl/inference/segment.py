"""Inference: a fine-tuned segmentation checkpoint applied to a scan, returned on the scan's own grid.

Pipeline of :func:`segment` (the same geometry steps fine-tuning applied to its training scans):

1. reorient the scan to the model's canonical orientation (``LPS``, a lossless axis permutation / flip),
2. resample it to the model's voxel spacing and normalise it as in training (its checkpoint's ``normalization``),
3. MONAI ``sliding_window_inference`` with Gaussian blending and the chosen overlap (:mod:`napari_ssl.inference.sliding`);
   the windows run on ``sw_device`` (the GPU when there is one) and the stitched logits stay on ``device`` (the CPU
   for a large scan). A scan whose stitched logits would exceed ``max_memory_mb`` is cut into slabs along its first axis
   (each with a half-window halo on both sides), so memory stays bounded whatever the scan's size,
4. argmax, an optional largest-connected-component clean-up per class,
5. nearest-neighbour resampling of the labels back onto the scan's grid (shape, spacing, origin, direction).

:func:`segment_iter` runs the same in a helper thread and yields progress, for the napari dock (cancel by
closing the generator) and the CLI's progress line. No Qt or napari here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_ssl.inference.segmenter import (
    InputChannel,
    OutputClass,
    Segmenter,
    SegmenterInfo,
    SegmentProgress,
    SegmentResult,
    predict_iter,
    split_channels,
)
from napari_ssl.inference.sliding import (
    MAX_MEMORY_MB,
    SegmentationCancelled,
    largest_components,
    predict_labels,
)
from napari_ssl.io.volume import Volume
from napari_ssl.meta import SegmenterCheckpoint
from napari_ssl.preprocess import (
    ORIENTATION,
    back_to_grid,
    backgrounds,
    canonical,
    check_scan,
    prepare_channels,
    to_model_grid,
)


# ---------------------------------------------------------------- the model
@dataclass
class SegmentationModel:
    """A loaded segmentation checkpoint: the network and its typed checkpoint
    (:class:`~napari_ssl.meta.SegmenterCheckpoint`: classes, channels, spacing, patch, normalisation)."""

    net: Any
    checkpoint: SegmenterCheckpoint
    device: Any

    @property
    def path(self) -> str:
        return self.checkpoint.path


def load_model(path: str | os.PathLike[str], device: str | Any = "cpu") -> SegmentationModel:
    """Load a fine-tuned segmentation checkpoint folder.

    Raises
    ------
    FileNotFoundError
        No such folder.
    ValueError (``CheckpointError``)
        Not a napari-ssl checkpoint, a corrupt / truncated ``model.safetensors``, or a checkpoint without a
        segmentation head (a pretraining checkpoint).
    """
    import torch

    from napari_ssl import checkpoint
    from napari_ssl.device import resolve_device
    from napari_ssl.models import build_unet

    try:
        state, ck = checkpoint.load(path, device="cpu", kinds=("segment",))
    except checkpoint.CheckpointKindError as exc:
        raise checkpoint.CheckpointError(
            f"{path} has no segmentation head: it is a {exc.kind or 'unknown'} checkpoint; fine-tune it first "
            f"(napari-ssl finetune --pretrained {path} ...) and segment with the fine-tuned model"
        ) from None
    assert isinstance(ck, SegmenterCheckpoint)
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    net = build_unet(ck.backbone, out_channels=ck.out_channels)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise checkpoint.CheckpointError(f"{path}: weights do not match the network in meta.json ({first})") from exc
    net.eval().to(dev)
    return SegmentationModel(net=net, checkpoint=ck, device=dev)


def describe_normalization(norm: Any) -> str:
    """The checkpoint's intensity normalisation in words (``zscore_nonzero`` -> "z-score over the body ...")."""
    from napari_ssl.inference.scan_check import short_number

    def hu(pair: Any) -> str:
        low, high = pair
        return f"{short_number(float(low))}..{short_number(float(high))} HU"

    words = {
        "zscore_nonzero": "z-score over the body (non-zero voxels)",
        "ct_zscore": f"CT clipped to {hu(norm.clip or (-1000, 1000))}, then z-score",
        "ct": f"CT window {hu(norm.window)}",
        "zscore": "z-score of the whole scan (percentile-clipped)",
        "minmax": "intensity percentiles scaled to -1..1",
        "none": "raw intensities (no normalisation)",
    }
    return words.get(norm.mode, f"{norm.mode.replace('_', ' ')} intensity normalisation")


def info_of(ck: Any) -> SegmenterInfo:
    """The contract's description of a typed :class:`~napari_ssl.meta.SegmenterCheckpoint`."""
    from napari_ssl.inference.scan_check import TrainedOn, short_number

    fp = ck.fingerprint or {}
    modality = str(fp.get("modality") or "").upper() or None
    channels = tuple(InputChannel(name, modality if modality in ("CT", "MR") else None) for name in ck.channel_names)
    classes = tuple(OutputClass(c.index, c.name, c.color) for c in ck.classes)
    voxels = " x ".join(short_number(s) for s in ck.spacing) + " mm" if ck.spacing else "the scan's own grid"
    patch = " x ".join(str(p) for p in ck.patch_size)
    details = [("plan", f"voxels {voxels}, windows of {patch}, {describe_normalization(ck.normalization)}")]
    total = ck.total or ck.step
    details.append(("trained", f"{ck.step} of {total} steps" + (f" on {ck.n_train} case(s)" if ck.n_train else "")))
    if not ck.dice:  # why there is no held-out Dice, where the checkpoint says (every case trained, or none run yet)
        every = ck.n_train and not ck.n_val
        details.append(("held-out Dice", "not measured" + (" (no case was held out: every case trained)" if every else "")))
    if uses_modality_ensemble(ck):
        details.append(("segments", f"as a modality ensemble: each window also with each of its {ck.in_channels} "
                        f"channels blanked in turn, as trained (modality dropout {ck.modality_dropout:.0%})"))
    from napari_ssl.inference.bundled import bundled_name

    return SegmenterInfo(
        path=str(ck.path), format="napari-ssl", title=bundled_name(ck.path) or Path(ck.path).name, channels=channels, classes=classes,
        spacing=tuple(float(s) for s in ck.spacing) if ck.spacing else None,  # type: ignore[arg-type]
        orientation=ck.orientation, description=ck.description, details=tuple(details),
        trained_on=TrainedOn.from_checkpoint(ck), dice=ck.dice,
    )



class NativeSegmenter(Segmenter):
    """A loaded :class:`~napari_ssl.inference.segment.SegmentationModel` behind the contract."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.info = info_of(model.checkpoint)
        self.device = str(model.device)

    def predict(self, channels: Sequence[Volume], *, progress: Callable[[float], None] | None = None,
                should_stop: Callable[[], bool] | None = None, **options: Any) -> Volume:
        """:func:`~napari_ssl.inference.segment.segment` (options: ``overlap``, ``sw_batch_size``,
        ``largest_component``, ``modality_ensemble``, ``max_memory_mb``, ``device``, ``sw_device``)."""
        known = ("overlap", "sw_batch_size", "largest_component", "modality_ensemble", "max_memory_mb", "device",
                 "sw_device")
        return segment(self.check_inputs(channels), self.model, progress=progress, should_stop=should_stop,
                       **{k: v for k, v in options.items() if k in known})


# ---------------------------------------------------------------- the public entry points
def segment(
    image: Volume | Sequence[Volume],
    model: SegmentationModel | str | os.PathLike[str],
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    device: str | None = None,
    sw_device: str | None = None,
    largest_component: bool = False,
    modality_ensemble: bool | None = None,
    max_memory_mb: float = MAX_MEMORY_MB,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Volume:
    """Segment ``image`` with ``model``; the label volume (uint8) lies on the scan's own grid.

    Parameters
    ----------
    image : Volume or sequence of Volume
        The scan (one channel), or one volume per input channel of the model (same grid), or a 4D
        (channel, z, y, x) volume.
    model : SegmentationModel or path
        A loaded model, or a fine-tuned checkpoint folder.
    overlap : float
        Fraction of overlap between neighbouring windows (0 <= overlap < 1), Gaussian-blended.
    sw_batch_size : int
        Windows per forward pass.
    device, sw_device : str, optional
        Where the stitched logits live and where windows run. Defaults: windows on the model's device;
        stitched output there too, except that a CUDA model keeps the output of a large scan on the CPU.
    largest_component : bool
        Keep only the largest connected component of each class.
    modality_ensemble : bool, optional
        Run each window also with each channel blanked in turn and keep what any of these finds
        (:func:`~napari_ssl.inference.sliding.any_modality`; one forward pass of ``channels + 1`` windows each).
        Default: on for a model of several channels trained with modality dropout.
    max_memory_mb : float
        Bound on the stitched logits of one pass; larger scans are processed in slabs.
    progress, should_stop : callables, optional
        ``progress(fraction)`` after every window batch; ``should_stop()`` checked before each, raising
        :class:`SegmentationCancelled` when true.
    """
    import torch

    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if not isinstance(model, SegmentationModel):
        model = load_model(model, device=sw_device or "auto")
    ck = model.checkpoint
    channels = split_channels(image)
    if len(channels) != ck.in_channels:
        raise ValueError(
            f"model {model.path} expects {ck.in_channels} input channel(s) "
            f"({', '.join(ck.channel_names)}), got {len(channels)}"
        )
    swd = torch.device(sw_device) if sw_device else next(model.net.parameters()).device
    if str(swd) != str(next(model.net.parameters()).device):
        model.net.to(swd)
    return labels_on_scan(
        model.net, channels, spacing=ck.spacing, normalization=ck.normalization, orientation=ck.orientation,
        patch=ck.patch_size, class_indices=[c.index for c in ck.classes], names=ck.names, model_path=model.path,
        overlap=overlap, sw_batch_size=sw_batch_size, sw_device=swd, device=device,
        largest_component=largest_component, max_memory_mb=max_memory_mb, progress=progress, should_stop=should_stop,
        modality_ensemble=uses_modality_ensemble(ck, modality_ensemble),
    )


def uses_modality_ensemble(ck: Any, chosen: bool | None = None) -> bool:
    """Whether segmenting with checkpoint ``ck`` runs the modality ensemble: ``chosen``, else (``None``) when the model
    has several channels and was trained with modality dropout (a model never shown a blanked channel would read one
    as a scan without that structure). Never for one channel."""
    if ck.in_channels < 2:
        return False
    return ck.modality_dropout > 0 if chosen is None else bool(chosen)


def labels_on_scan(
    net: Any,
    channels: Sequence[Volume],
    *,
    spacing: Any,
    normalization: Any,
    orientation: str | None,
    patch: Sequence[int],
    class_indices: Sequence[int],
    names: Any,
    model_path: str,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    sw_device: Any = "cpu",
    device: str | None = None,
    largest_component: bool = False,
    max_memory_mb: float = MAX_MEMORY_MB,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    modality_ensemble: bool = False,
) -> Volume:
    """The pipeline of :func:`segment` for any network ``net`` (a napari-ssl U-Net, a scripted module): the channels
    onto the model grid (reoriented to ``orientation``, or in the file's own axis order when it is ``None``, resampled
    to ``spacing``, normalised), sliding windows of ``patch`` on ``sw_device`` (the stitched logits on ``device``;
    ``None``: there too, except the CPU for a large scan off a GPU), argmax, the optional largest component of each
    class, and the labels back on ``channels[0]``'s grid, named and described by ``names`` and ``model_path``.
    ``modality_ensemble``: each window also with each channel blanked to its background (:func:`predict_labels`'s
    ``blank_values``)."""
    import numpy as np
    import torch

    from napari_ssl.preprocess import resample

    reference = channels[0]
    check_scan(reference)
    if orientation:
        array, grid = prepare_channels(channels, spacing=spacing, normalization=normalization, orientation=orientation)
    else:  # the file's own axis order: resample only
        moved = [resample(c, spacing) if spacing else c for c in channels]
        array = np.stack([normalization(m.array) for m in moved]).astype(np.float32, copy=False)
        grid = moved[0]
    pad = backgrounds(array, normalization)
    swd = torch.device(sw_device)
    if device is None:
        big = array[0].size * (len(class_indices) + 2) * 4 > max_memory_mb * 2**20
        device = "cpu" if (swd.type != "cpu" and big) else str(swd)
    labels = predict_labels(
        net, array, roi=patch, n_classes=len(class_indices) + 1, overlap=float(overlap),
        sw_batch_size=sw_batch_size, sw_device=swd, device=device, max_memory_mb=max_memory_mb,
        progress=progress, should_stop=should_stop, pad_value=pad,
        blank_values=pad if modality_ensemble and len(pad) > 1 else None,
    )
    del array
    if largest_component:
        labels = largest_components(labels, list(class_indices))
    mask = back_to_grid(grid.with_array(labels), reference)
    name = f"{reference.name} masks" if reference.name else "masks"
    meta = {"classes": {str(k): v for k, v in names.items()}, "model": model_path}
    return Volume(mask.array, mask.spacing, mask.origin, mask.direction, None, name, meta)

def segment_iter(
    image: Volume | Sequence[Volume], model: SegmentationModel | str | os.PathLike[str], *,
    cancel: threading.Event | None = None, **options: Any
) -> Iterator[SegmentProgress | SegmentResult]:
    """:func:`segment` in a helper thread: yields :class:`SegmentProgress`, then one :class:`SegmentResult`
    (:func:`napari_ssl.inference.segmenter.predict_iter` on this checkpoint).

    Closing the generator, or setting ``cancel``, stops the run before its next window (the latter raises
    :class:`SegmentationCancelled` from the generator). Errors of :func:`segment` are raised from the generator.
    """
    if not isinstance(model, SegmentationModel):
        model = load_model(model, device=options.pop("sw_device", None) or "auto")
    yield from predict_iter(NativeSegmenter(model), split_channels(image), cancel=cancel, **options)


def default_output_path(scan_path: str | os.PathLike[str] | None, name: str = "scan") -> Path:
    """``<scan folder>/<scan stem>_masks.nii.gz`` (beside the scan), or ``./<name>_masks.nii.gz``."""
    from napari_ssl.io import scan_suffix

    if scan_path:
        p = Path(scan_path)
        if p.is_dir():
            return p.parent / f"{p.name}_masks.nii.gz"
        stem = p.name[: -len(scan_suffix(p))] if scan_suffix(p) else p.stem
        return p.parent / f"{stem}_masks.nii.gz"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "scan"
    return Path.cwd() / f"{safe}_masks.nii.gz"


__all__ = [
    "ORIENTATION",
    "NativeSegmenter",
    "SegmentProgress",
    "SegmentResult",
    "SegmentationCancelled",
    "SegmentationModel",
    "back_to_grid",
    "canonical",
    "describe_normalization",
    "info_of",
    "labels_on_scan",
    "load_model",
    "predict_labels",
    "segment",
    "segment_iter",
    "to_model_grid",
    "uses_modality_ensemble",
]
