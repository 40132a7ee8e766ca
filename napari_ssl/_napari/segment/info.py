"""What the Segment dock shows about a model, from its text files only (no torch on the GUI thread).

:func:`read_model_info` describes a model of any format the way opening it would check it
(:func:`napari_ssl.inference.segmenter.describe_segmenter`: a napari-ssl checkpoint's segmentation head and the
weights file of the size ``meta.json`` records, an nnU-Net folder's folds, a bundle's weights) and returns
:class:`ModelInfo`, a view of its :class:`~napari_ssl.inference.segmenter.SegmenterInfo`: format, classes in their
colours, input channels, the format's own lines (plan, training, folds), the held-out Dice, whether opening it runs
code stored with it, a description (the bundled demonstration model says what it is) and the training data's
fingerprint (:mod:`napari_ssl.inference.scan_check`). Also the remembered recent models,
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
from napari_ssl.inference.segmenter import SegmenterInfo

__all__ = [
    "LOW_DICE",
    "MaskTarget",
    "ModelInfo",
    "PreparedMasks",
    "model_root",
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
    """A segmenter as the dock describes it: a view of its :class:`~napari_ssl.inference.segmenter.SegmenterInfo`
    (any format: napari-ssl, nnU-Net, MONAI bundle, TorchScript), showing the values inference uses."""

    segmenter: SegmenterInfo

    @property
    def path(self) -> str:
        return self.segmenter.path

    @property
    def format(self) -> str:
        return self.segmenter.format

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.segmenter.classes)

    @property
    def channels(self) -> tuple[str, ...]:
        return self.segmenter.channel_names

    @property
    def dice(self) -> dict[str, float]:
        return dict(self.segmenter.dice)

    @property
    def needs_trust(self) -> bool:
        return self.segmenter.needs_trust

    @property
    def trained_on(self) -> Any:
        """A :class:`napari_ssl.inference.scan_check.TrainedOn`: what a scan is compared with before segmenting."""
        return self.segmenter.fingerprint()

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
        """Rich text for the dock: format, classes in their colours, inputs, the format's own lines (plan, training,
        folds), held-out Dice (with a warning when low)."""
        from html import escape

        info = self.segmenter
        lines = [f'<span style="color:#f0a030">{escape(info.description)}</span>'] if info.description else []
        colours = info.colors
        swatches = [f'<span style="color:{colours[c.index]}">&#9632;</span> {escape(c.name)}' for c in info.classes]
        inputs = [escape(c.name) + (f" ({c.modality})" if c.modality and c.modality.lower() != c.name.lower() else "")
                  for c in info.channels]
        lines += [
            f"<b>format</b>: {FORMAT_WORDS.get(info.format, info.format)}",
            f"<b>classes</b>: {', '.join(swatches)}",
            f"<b>inputs</b>: {', '.join(inputs)}",
        ]
        lines += [f"<b>{escape(key)}</b>: {escape(value)}" for key, value in info.details]
        if self.dice:
            per_class = ", ".join(f"{k} {v:.2f}" for k, v in self.dice.items() if k != "mean")
            lines.append(f"<b>held-out Dice</b>: {self.mean_dice:.2f} ({per_class})")
            if self.low_dice:
                lines.append(
                    f'<span style="color:#f0a030">held-out Dice below {LOW_DICE}: expect wrong masks; '
                    "train longer or on more cases</span>"
                )
        return "<br>".join(lines)


#: the formats in words
FORMAT_WORDS = {
    "napari-ssl": "napari-ssl checkpoint",
    "nnunet": "nnU-Net v2 results folder",
    "monai-bundle": "MONAI bundle",
    "torchscript": "TorchScript module",
}


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """Describe the model at ``path`` (any format, :func:`napari_ssl.inference.segmenter.describe_segmenter`: its
    text files only, no torch, nothing executed).

    Raises
    ------
    ValueError
        No such folder or file, a folder of no known format (the sentence names what was looked for), an incomplete one (a missing or
        truncated weights file), or a pretraining checkpoint (no segmentation head).
    """
    from napari_ssl.inference.segmenter import describe_segmenter

    return ModelInfo(describe_segmenter(path))


def model_root(chosen: str | os.PathLike[str]) -> str:
    """The model a file picked in the Choose dialog stands for: a napari-ssl checkpoint's ``meta.json`` or an nnU-Net
    folder's ``dataset.json`` / ``plans.json`` -> its folder, a bundle's ``configs/metadata.json`` -> the bundle,
    anything else (a TorchScript file) as chosen."""
    path = Path(chosen)
    if path.name == "metadata.json" and path.parent.name == "configs":
        return str(path.parent.parent)
    if path.name in ("meta.json", "dataset.json", "plans.json"):
        return str(path.parent)
    return str(path)


def _settings() -> Any:
    from qtpy.QtCore import QSettings

    return QSettings("napari-ssl", "napari-ssl")


def recent_models() -> list[str]:
    """Model folders used last (most recent first) that still exist; bundled models are listed apart."""
    from napari_ssl.inference.bundled import bundled_name

    value = _settings().value(RECENT_KEY, [])
    items = [value] if isinstance(value, str) else list(value or [])
    return [p for p in items if Path(p).exists() and bundled_name(p) is None]


def remember_model(path: str) -> None:
    items = [str(path)] + [p for p in recent_models() if p != str(path)]
    _settings().setValue(RECENT_KEY, items[:MAX_RECENT])


@dataclass(frozen=True)
class MaskTarget:
    """Where a segmentation's masks go: the layer name and the metadata it records (set on the GUI thread)."""

    name: str
    scan_path: str | None = None
    model_path: str | None = None
    scans: tuple[str, ...] = ()  # the scan layers (one per model input) the masks are made from


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
    meta["scans"] = list(target.scans)
    found = np.bincount(data.ravel(), minlength=max(event.names, default=0) + 1)
    counts = {n: int(found[v]) for v, n in event.names.items() if v}
    layer = Labels(data, **kwargs)
    return PreparedMasks(layer=layer, counts=counts, steps=stage(layer))
