"""Inference: a fine-tuned segmentation checkpoint applied to a scan, returned on the scan's own grid.

Pipeline of :func:`segment` (the same geometry steps fine-tuning applied to its training scans):

1. reorient the scan to the model's canonical orientation (``LPS``, a lossless axis permutation / flip),
2. resample it to the model's voxel spacing and normalise it as in training (``meta["normalization"]``),
3. MONAI ``sliding_window_inference`` with Gaussian blending and the chosen overlap; the windows run on
   ``sw_device`` (the GPU when there is one) and the stitched logits stay on ``device`` (the CPU for a large
   scan). A scan whose stitched logits would exceed ``max_memory_mb`` is cut into slabs along its first axis
   (each with a half-window halo on both sides), so memory stays bounded whatever the scan's size,
4. argmax, an optional largest-connected-component clean-up per class,
5. nearest-neighbour resampling of the labels back onto the scan's grid (shape, spacing, origin, direction).

:func:`segment_iter` runs the same in a helper thread and yields progress, for the napari dock (cancel by
closing the generator) and the CLI's progress line. No Qt or napari here.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_ssl.preprocess import (
    ORIENTATION,
    back_to_grid,
    backgrounds,
    canonical,
    check_scan,
    prepare_channels,
    to_model_grid,
)
from napari_ssl.volume import Volume

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: default bound on the stitched logits of one pass of sliding-window inference (MiB)
MAX_MEMORY_MB = 1024


class SegmentationCancelled(Exception):
    """Raised inside :func:`segment` when ``should_stop()`` turned true; nothing is returned."""


# ---------------------------------------------------------------- the model
@dataclass
class SegmentationModel:
    """A loaded segmentation checkpoint: the network and how to feed it (from ``meta.json``)."""

    net: Any
    meta: dict[str, Any]
    path: str
    device: Any

    @property
    def classes(self) -> list[dict[str, Any]]:
        """``[{"index": 1, "name": "liver", "ids": [5], "color": "#..."}, ...]`` (background excluded)."""
        return list(self.meta["classes"])

    @property
    def spacing(self) -> tuple[float, float, float] | None:
        sp = self.meta.get("spacing")
        return None if sp is None else (float(sp[0]), float(sp[1]), float(sp[2]))

    @property
    def patch_size(self) -> tuple[int, int, int]:
        p = self.meta["patch_size"]
        return (int(p[0]), int(p[1]), int(p[2]))

    @property
    def in_channels(self) -> int:
        return int(self.meta["in_channels"])

    @property
    def channel_names(self) -> list[str]:
        return list(self.meta.get("channels") or [f"channel {i}" for i in range(self.in_channels)])

    @property
    def orientation(self) -> str:
        return str(self.meta.get("orientation", ORIENTATION))

    def normalization(self) -> Any:
        from napari_ssl.preprocess import Normalization

        return Normalization.from_dict(self.meta.get("normalization") or {})

    def names(self) -> dict[int, str]:
        """Label value -> class name, background included."""
        return {0: "background", **{int(c["index"]): str(c["name"]) for c in self.classes}}

    def colors(self) -> dict[int, str]:
        """Label value -> hex colour (background transparent is up to the viewer)."""
        return {int(c["index"]): str(c["color"]) for c in self.classes}


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
    from napari_ssl.meta import CheckpointMeta
    from napari_ssl.models import BackboneSpec, build_unet

    meta = checkpoint.read_meta(path)
    kind = meta.get("kind")
    if kind != "segment" or not meta.get("classes"):
        raise checkpoint.CheckpointError(
            f"{path} has no segmentation head: it is a {kind or 'unknown'} checkpoint; fine-tune it first "
            f"(napari-ssl finetune --pretrained {path} ...) and segment with the fine-tuned model"
        )
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    info = CheckpointMeta.from_dict(meta, source=str(path))  # an old or incomplete meta.json: a sentence
    state, meta = checkpoint.load(path, device="cpu")
    spec = BackboneSpec.from_dict(dict(info.backbone or {}))
    net = build_unet(spec, out_channels=int(meta["out_channels"]))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise checkpoint.CheckpointError(f"{path}: weights do not match the network in meta.json ({first})") from exc
    net.eval().to(dev)
    return SegmentationModel(net=net, meta=meta, path=str(path), device=dev)


# ---------------------------------------------------------------- sliding window
def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of windows MONAI's sliding window places on ``shape`` (for progress)."""
    total = 1
    for size, r in zip(shape, roi, strict=False):
        size = max(size, r)
        interval = max(1, int(r * (1 - overlap))) if r < size else r
        total *= max(1, math.ceil((size - r) / interval) + 1)
    return total


def _slabs(depth: int, core: int, halo: int) -> list[tuple[int, int, int, int]]:
    """``(start, stop, keep_start, keep_stop)`` slabs along axis 0: compute ``start:stop``, keep the core."""
    out = []
    for k0 in range(0, depth, core):
        k1 = min(depth, k0 + core)
        out.append((max(0, k0 - halo), min(depth, k1 + halo), k0, k1))
    return out


def predict_labels(
    net: Any,
    image: np.ndarray,
    *,
    roi: Sequence[int],
    n_classes: int,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    sw_device: Any = None,
    device: Any = None,
    amp: bool = True,
    max_memory_mb: float = MAX_MEMORY_MB,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    pad_value: Sequence[float] | None = None,
) -> np.ndarray:
    """Argmax labels (uint8, ``image.shape[1:]``) of ``net`` on ``image`` (C, z, y, x), normalised float32.

    ``n_classes`` counts the output channels (background included). Stitched logits are kept on ``device``
    (default: ``sw_device``); when they would exceed ``max_memory_mb`` the scan is processed in slabs. A scan
    smaller than ``roi`` is padded with ``pad_value`` (one per channel; default each channel's minimum), as
    training pads it. On a CPU with bfloat16 the net's weights are put in ``channels_last_3d`` memory format, in
    place (training already holds them so; a loaded model keeps it for the next scan).
    """
    import torch
    from monai.inferers import sliding_window_inference

    from napari_ssl.device import autocast_dtype, cpu_channels_last

    sw_device = torch.device(sw_device or "cpu")
    device = torch.device(device) if device is not None else sw_device
    roi = tuple(int(r) for r in roi)
    small = [max(0, r - s) for r, s in zip(roi, image.shape[1:], strict=False)]
    if any(small):  # pad as training does (the background of each channel), not with MONAI's constant 0
        from napari_ssl.preprocess import pad_to

        shape = image.shape[1:]
        low = image.reshape(image.shape[0], -1).min(axis=1) if pad_value is None else pad_value
        padded = pad_to(image, roi, list(low))
        out = predict_labels(net, padded, roi=roi, n_classes=n_classes, overlap=overlap, sw_batch_size=sw_batch_size,
                             sw_device=sw_device, device=device, amp=amp, max_memory_mb=max_memory_mb,
                             progress=progress, should_stop=should_stop)
        return np.ascontiguousarray(out[: shape[0], : shape[1], : shape[2]])
    depth, rest = image.shape[1], image.shape[2:]
    plane_bytes = (n_classes + 1) * 4 * max(rest[0], roi[1]) * max(rest[1], roi[2])
    halo = roi[0] // 2
    core = max(roi[0], int(max_memory_mb * 2**20 // plane_bytes) - 2 * halo)
    slabs = [(0, depth, 0, depth)] if core >= depth else _slabs(depth, core, halo)
    total = sum(count_windows((b - a, *rest), roi, overlap) for a, b, _, _ in slabs)
    total_calls = max(1, sum(math.ceil(count_windows((b - a, *rest), roi, overlap) / sw_batch_size) for a, b, _, _ in slabs))
    done = [0]
    amp_dtype = autocast_dtype(sw_device, amp)
    use_amp = amp_dtype is not None
    channels_last = cpu_channels_last(sw_device, amp_dtype)
    if channels_last:
        net.to(memory_format=torch.channels_last_3d)

    def predictor(x: torch.Tensor) -> torch.Tensor:
        if should_stop is not None and should_stop():
            raise SegmentationCancelled("segmentation cancelled")
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(sw_device.type, dtype=amp_dtype, enabled=use_amp):
            y = net(x)
        done[0] += 1
        if progress is not None:
            progress(min(1.0, done[0] / total_calls))
        return y.float() if use_amp else y

    del total
    out = np.zeros(image.shape[1:], dtype=np.uint8)
    with torch.inference_mode():
        for start, stop, keep0, keep1 in slabs:
            x = torch.from_numpy(np.ascontiguousarray(image[:, start:stop]))[None]
            logits = sliding_window_inference(
                inputs=x,
                roi_size=roi,
                sw_batch_size=sw_batch_size,
                predictor=predictor,
                overlap=overlap,
                mode="gaussian",
                sw_device=sw_device,
                device=device,
            )
            step = max(1, (16 * 2**20) // max(1, int(np.prod(rest))))  # argmax (int64) a few slices at a time
            for k in range(keep0, keep1, step):
                stop_k = min(keep1, k + step)
                out[k:stop_k] = torch.argmax(logits[0, :, k - start : stop_k - start], dim=0).to("cpu", torch.uint8).numpy()
            del logits, x
    return out


def largest_components(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Keep only the largest connected component (26-connectivity) of each class in ``classes``."""
    from scipy import ndimage

    out = labels.copy()
    structure = np.ones((3, 3, 3), dtype=bool)
    for value in classes:
        mask = labels == value
        if not mask.any():
            continue
        comp, n = ndimage.label(mask, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        out[mask & (comp != int(np.argmax(sizes)))] = 0
    return out


# ---------------------------------------------------------------- the public entry points
def _channels(image: Volume | Sequence[Volume]) -> list[Volume]:
    if isinstance(image, Volume):
        if image.array.ndim == 4:  # a (c, z, y, x) volume: channels
            return [image.with_array(frame) for frame in image.array]
        return [image]
    chans = list(image)
    if not chans:
        raise ValueError("no image given")
    return chans


def segment(
    image: Volume | Sequence[Volume],
    model: SegmentationModel | str | os.PathLike[str],
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    device: str | None = None,
    sw_device: str | None = None,
    largest_component: bool = False,
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
    channels = _channels(image)
    if len(channels) != model.in_channels:
        raise ValueError(
            f"model {model.path} expects {model.in_channels} input channel(s) "
            f"({', '.join(model.channel_names)}), got {len(channels)}"
        )
    reference = channels[0]
    check_scan(reference)
    norm = model.normalization()
    array, grid = prepare_channels(channels, spacing=model.spacing, normalization=norm, orientation=model.orientation)
    pad = backgrounds(array, norm)
    swd = torch.device(sw_device) if sw_device else next(model.net.parameters()).device
    if str(swd) != str(next(model.net.parameters()).device):
        model.net.to(swd)
    if device is None:
        big = array[0].size * (len(model.classes) + 2) * 4 > max_memory_mb * 2**20
        device = "cpu" if (swd.type != "cpu" and big) else str(swd)
    labels = predict_labels(
        model.net, array, roi=model.patch_size, n_classes=len(model.classes) + 1, overlap=float(overlap),
        sw_batch_size=sw_batch_size, sw_device=swd, device=device, max_memory_mb=max_memory_mb,
        progress=progress, should_stop=should_stop, pad_value=pad,
    )
    del array
    if largest_component:
        labels = largest_components(labels, [int(c["index"]) for c in model.classes])
    mask = back_to_grid(grid.with_array(labels), reference)
    name = f"{reference.name} masks" if reference.name else "masks"
    meta = {"classes": {str(k): v for k, v in model.names().items()}, "model": model.path}
    return Volume(mask.array, mask.spacing, mask.origin, mask.direction, None, name, meta)


@dataclass(frozen=True)
class SegmentProgress:
    """Fraction of the windows done."""

    fraction: float


@dataclass(frozen=True)
class SegmentResult:
    """The finished label volume."""

    labels: Volume
    names: Mapping[int, str] = field(default_factory=dict)
    colors: Mapping[int, str] = field(default_factory=dict)


def segment_iter(
    image: Volume | Sequence[Volume], model: SegmentationModel | str | os.PathLike[str], *,
    cancel: threading.Event | None = None, **options: Any
) -> Iterator[SegmentProgress | SegmentResult]:
    """:func:`segment` in a helper thread: yields :class:`SegmentProgress`, then one :class:`SegmentResult`.

    Closing the generator, or setting ``cancel``, stops the run before its next window (the latter raises
    :class:`SegmentationCancelled` from the generator). Errors of :func:`segment` are raised from the generator.
    """
    if not isinstance(model, SegmentationModel):
        model = load_model(model, device=options.pop("sw_device", None) or "auto")
    messages: queue.Queue[tuple[str, Any]] = queue.Queue()
    stop = cancel if cancel is not None else threading.Event()

    def work() -> None:
        try:
            result = segment(image, model, progress=lambda f: messages.put(("progress", f)),
                             should_stop=stop.is_set, **options)
            messages.put(("result", result))
        except BaseException as exc:  # relayed to the generator's caller
            messages.put(("error", exc))

    thread = threading.Thread(target=work, name="napari-ssl-segment", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = messages.get()
            if kind == "progress":
                yield SegmentProgress(float(value))
            elif kind == "result":
                yield SegmentResult(value, model.names(), model.colors())
                return
            else:
                raise value
    finally:
        stop.set()
        thread.join()


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
    "SegmentProgress",
    "SegmentResult",
    "SegmentationCancelled",
    "SegmentationModel",
    "back_to_grid",
    "canonical",
    "load_model",
    "predict_labels",
    "segment",
    "segment_iter",
    "to_model_grid",
]
