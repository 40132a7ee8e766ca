"""What the Segment dock shows about a model, from its typed checkpoint only (no torch on the GUI thread).

:func:`read_model_info` checks a checkpoint folder the way loading it would (a segmentation head, the weights
file of the size ``meta.json`` records) and returns :class:`ModelInfo`, a view of the
:class:`~napari_ssl.meta.SegmenterCheckpoint` inference uses: classes, input channels, the plan (spacing, patch,
normalisation), the steps trained, the held-out Dice, a description (the bundled demonstration model says what it
is) and the training data's fingerprint (:mod:`napari_ssl.inference.scan_check`). Also the remembered recent models,
the masks layer's colours and ``class`` feature, and :func:`prepare_masks`, which builds the masks layer in the
relay's worker thread (napari's ``Labels`` constructor imports pandas and scikit-image on first use and scans
the data: a quarter of a second the GUI thread no longer spends).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_ssl._napari.segment.masks import masks_layer_kwargs, stage
from napari_ssl.meta import SegmenterCheckpoint
from napari_ssl.preprocess import Normalization

__all__ = [
    "LOW_DICE",
    "MaskTarget",
    "ModelInfo",
    "PreparedMasks",
    "prepare_masks",
    "read_model_info",
    "recent_models",
    "remember_model",
]

#: a held-out Dice below this gets a warning: the masks are likely wrong
LOW_DICE = 0.5
RECENT_KEY = "segment/recent_models"
MAX_RECENT = 8


@dataclass(frozen=True)
class ModelInfo:
    """A segmentation checkpoint as the dock describes it: a view of its typed
    :class:`~napari_ssl.meta.SegmenterCheckpoint`, showing the values inference uses."""

    checkpoint: SegmenterCheckpoint

    @property
    def path(self) -> str:
        return self.checkpoint.path

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.checkpoint.classes)

    @property
    def channels(self) -> tuple[str, ...]:
        return self.checkpoint.channel_names

    @property
    def dice(self) -> dict[str, float]:
        return self.checkpoint.dice

    @property
    def trained_on(self) -> Any:
        """A :class:`napari_ssl.inference.scan_check.TrainedOn`: what a scan is compared with before segmenting."""
        from napari_ssl.inference.scan_check import TrainedOn

        return TrainedOn.from_checkpoint(self.checkpoint)

    @property
    def mean_dice(self) -> float | None:
        dice = self.dice
        if "mean" in dice:
            return dice["mean"]
        return sum(dice.values()) / len(dice) if dice else None

    @property
    def low_dice(self) -> bool:
        return self.mean_dice is not None and self.mean_dice < LOW_DICE

    def summary(self) -> str:
        """Rich text for the dock: classes, inputs, plan, training, held-out Dice (with a warning when low)."""
        from napari_ssl.inference.scan_check import short_number

        ck = self.checkpoint
        spacing = " x ".join(short_number(s) for s in ck.spacing) + " mm" if ck.spacing else "the scan's own grid"
        patch = " x ".join(str(p) for p in ck.patch_size)
        total = ck.total or ck.step
        lines = [f'<span style="color:#f0a030">{ck.description}</span>'] if ck.description else []
        lines += [
            f"<b>classes</b>: {', '.join(self.classes)}",
            f"<b>inputs</b>: {', '.join(self.channels)}",
            f"<b>plan</b>: voxels {spacing}, windows of {patch}, {_normalization_words(ck.normalization)}",
            f"<b>trained</b>: {ck.step} of {total} steps" + (f" on {ck.n_train} case(s)" if ck.n_train else ""),
        ]
        if self.dice:
            per_class = ", ".join(f"{k} {v:.2f}" for k, v in self.dice.items() if k != "mean")
            lines.append(f"<b>held-out Dice</b>: {self.mean_dice:.2f} ({per_class})")
            if self.low_dice:
                lines.append(
                    f'<span style="color:#f0a030">held-out Dice below {LOW_DICE}: expect wrong masks; '
                    "train longer or on more cases</span>"
                )
        else:
            lines.append("<b>held-out Dice</b>: not measured")
        return "<br>".join(lines)


def _normalization_words(norm: Normalization) -> str:
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


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """Describe the segmentation checkpoint at ``path`` (its typed checkpoint; no torch, the weights not read).

    Raises
    ------
    FileNotFoundError
        No such folder.
    ValueError
        Not a napari-ssl checkpoint, a pretraining checkpoint (no segmentation head), or a weights file
        whose size differs from ``meta.json`` (truncated or altered).
    """
    from napari_ssl import checkpoint
    from napari_ssl.inference.bundled import resolve_model

    folder = resolve_model(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    try:
        ck = checkpoint.open_checkpoint(folder, kinds=("segment",))
    except checkpoint.CheckpointKindError as exc:
        raise ValueError(
            f"{folder} has no segmentation head: it is a {exc.kind or 'unknown'} checkpoint; fine-tune it first "
            "(Fine-tune dock) and segment with the fine-tuned model"
        ) from None
    assert isinstance(ck, SegmenterCheckpoint)
    checkpoint.check_weights(ck)
    return ModelInfo(ck)


def _settings() -> Any:
    from qtpy.QtCore import QSettings

    return QSettings("napari-ssl", "napari-ssl")


def recent_models() -> list[str]:
    """Model folders used last (most recent first) that still exist; bundled models are listed apart."""
    from napari_ssl.inference.bundled import bundled_name

    value = _settings().value(RECENT_KEY, [])
    items = [value] if isinstance(value, str) else list(value or [])
    return [p for p in items if Path(p).is_dir() and bundled_name(p) is None]


def remember_model(path: str) -> None:
    items = [str(path)] + [p for p in recent_models() if p != str(path)]
    _settings().setValue(RECENT_KEY, items[:MAX_RECENT])


@dataclass(frozen=True)
class MaskTarget:
    """Where a segmentation's masks go: the layer name and the metadata it records (set on the GUI thread)."""

    name: str
    scan_path: str | None = None
    model_path: str | None = None


@dataclass
class PreparedMasks:
    """A finished segmentation made ready off the GUI thread: its ``Labels`` layer, voxel count per class, and
    the steps that show it (:func:`~napari_ssl._napari.segment.masks.stage`)."""

    layer: Any
    counts: dict[str, int]
    steps: tuple[str, ...] = ()


def prepare_masks(event: Any, target: MaskTarget) -> Any:
    """Turn a :class:`~napari_ssl.inference.segment.SegmentResult` into :class:`PreparedMasks`; other events pass.

    Runs in the relay's worker thread: the layer is a detached napari ``Labels`` (no viewer, no Qt), which
    the dock adds (in steps), or whose data it moves into its earlier masks layer, on the GUI thread.
    """
    from napari_ssl.inference.segment import SegmentResult

    if not isinstance(event, SegmentResult):
        return event
    import numpy as np
    from napari.layers import Labels

    from napari_ssl._napari.layers import volume_to_layer_data

    data, kwargs, _ = volume_to_layer_data(event.labels, "labels")
    kwargs.update(masks_layer_kwargs(dict(event.names), dict(event.colors)))
    kwargs["name"] = target.name
    meta = kwargs.setdefault("metadata", {}).setdefault("napari_ssl", {})
    meta["path"] = target.scan_path
    meta["classes"] = {str(k): v for k, v in event.names.items()}
    meta["model"] = target.model_path
    found = np.bincount(data.ravel(), minlength=max(event.names, default=0) + 1)
    counts = {n: int(found[v]) for v, n in event.names.items() if v}
    layer = Labels(data, **kwargs)
    return PreparedMasks(layer=layer, counts=counts, steps=stage(layer))
