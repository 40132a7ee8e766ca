"""What the Segment dock shows about a model, read from its ``meta.json`` only (no torch on the GUI thread).

:func:`read_model_info` checks a checkpoint folder the way loading it would (a segmentation head, the weights
file of the size ``meta.json`` records) and returns :class:`ModelInfo`: classes, input channels, the plan
(spacing, patch, normalisation), the steps trained, the held-out Dice, a description (the bundled demonstration
model says what it is) and the training data's fingerprint (:mod:`napari_ssl.scan_check`). Also the remembered recent models,
the masks layer's colours and ``class`` feature, and :func:`prepare_masks`, which builds the masks layer in the
relay's worker thread (napari's ``Labels`` constructor imports pandas and scikit-image on first use and scans
the data: a quarter of a second the GUI thread no longer spends).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_ssl._napari.masks_show import masks_layer_kwargs, stage

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
    """A segmentation checkpoint as the dock describes it."""

    path: str
    classes: tuple[str, ...]
    channels: tuple[str, ...]
    spacing: tuple[float, ...] | None
    patch: tuple[int, ...]
    normalization: str
    step: int
    total: int
    dice: dict[str, float] = field(default_factory=dict)
    n_train: int = 0
    description: str = ""
    trained_on: Any = None  # a napari_ssl.scan_check.TrainedOn: what a scan is compared with before segmenting

    @property
    def mean_dice(self) -> float | None:
        if "mean" in self.dice:
            return self.dice["mean"]
        values = [v for k, v in self.dice.items()]
        return sum(values) / len(values) if values else None

    @property
    def low_dice(self) -> bool:
        return self.mean_dice is not None and self.mean_dice < LOW_DICE

    def summary(self) -> str:
        """Rich text for the dock: classes, inputs, plan, training, held-out Dice (with a warning when low)."""
        from napari_ssl.scan_check import short_number

        spacing = " x ".join(short_number(s) for s in self.spacing) + " mm" if self.spacing else "the scan's own grid"
        patch = " x ".join(str(p) for p in self.patch)
        lines = [f'<span style="color:#f0a030">{self.description}</span>'] if self.description else []
        lines += [
            f"<b>classes</b>: {', '.join(self.classes)}",
            f"<b>inputs</b>: {', '.join(self.channels)}",
            f"<b>plan</b>: voxels {spacing}, windows of {patch}, {self.normalization}",
            f"<b>trained</b>: {self.step} of {self.total} steps" + (f" on {self.n_train} case(s)" if self.n_train else ""),
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


def _normalization_words(norm: Any) -> str:
    """The checkpoint's intensity normalisation in words (``zscore_nonzero`` -> "z-score over the body ...")."""
    from napari_ssl.scan_check import short_number

    if not isinstance(norm, dict):
        return "default intensity normalisation"
    mode = str(norm.get("mode", norm.get("kind", "")) or "default")

    def hu(pair: Any, default: tuple[float, float]) -> str:
        low, high = pair if isinstance(pair, (list, tuple)) and len(pair) == 2 else default
        return f"{short_number(float(low))}..{short_number(float(high))} HU"

    words = {
        "zscore_nonzero": "z-score over the body (non-zero voxels)",
        "ct_zscore": f"CT clipped to {hu(norm.get('clip'), (-1000, 1000))}, then z-score",
        "ct": f"CT window {hu(norm.get('window'), (-1000, 1000))}",
        "zscore": "z-score of the whole scan (percentile-clipped)",
        "minmax": "intensity percentiles scaled to -1..1",
        "none": "raw intensities (no normalisation)",
    }
    return words.get(mode, f"{mode.replace('_', ' ')} intensity normalisation")


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """Describe the segmentation checkpoint at ``path``.

    Raises
    ------
    FileNotFoundError
        No such folder.
    ValueError
        Not a napari-ssl checkpoint, a pretraining checkpoint (no segmentation head), or a weights file
        whose size differs from ``meta.json`` (truncated or altered).
    """
    from napari_ssl import checkpoint
    from napari_ssl.bundled import resolve_model
    from napari_ssl.scan_check import TrainedOn

    folder = resolve_model(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    meta = checkpoint.read_meta(folder)
    kind = meta.get("kind")
    if kind != "segment" or not meta.get("classes"):
        raise ValueError(
            f"{folder} has no segmentation head: it is a {kind or 'unknown'} checkpoint; fine-tune it first "
            "(Fine-tune dock) and segment with the fine-tuned model"
        )
    expected = (meta.get("files") or {}).get("model.safetensors") or {}
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ValueError(f"{weights}: the weights file is missing")
    size = weights.stat().st_size
    if expected.get("size") is not None and size != int(expected["size"]):
        raise ValueError(f"{weights}: truncated or altered ({size} bytes, meta.json says {expected['size']})")
    metrics = meta.get("metrics") or {}
    dice = {k.split("/", 1)[1]: float(v) for k, v in metrics.items() if k.startswith("dice/")}
    channels = meta.get("channels") or [f"input {i + 1}" for i in range(int(meta.get("in_channels", 1)))]
    return ModelInfo(
        path=str(folder),
        classes=tuple(str(c["name"]) for c in meta["classes"]),
        channels=tuple(str(c) for c in channels),
        spacing=tuple(float(s) for s in meta["spacing"]) if meta.get("spacing") else None,
        patch=tuple(int(p) for p in meta.get("patch_size") or ()),
        normalization=_normalization_words(meta.get("normalization")),
        step=int(meta.get("step", 0)),
        total=int(meta.get("total", meta.get("step", 0))),
        dice=dice,
        n_train=int(meta.get("n_train", 0)),
        description=str(meta.get("description") or ""),
        trained_on=TrainedOn.from_meta(meta),
    )


def _settings() -> Any:
    from qtpy.QtCore import QSettings

    return QSettings("napari-ssl", "napari-ssl")


def recent_models() -> list[str]:
    """Model folders used last (most recent first) that still exist; bundled models are listed apart."""
    from napari_ssl.bundled import bundled_name

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
    the steps that show it (:func:`~napari_ssl._napari.masks_show.stage`)."""

    layer: Any
    counts: dict[str, int]
    steps: tuple[str, ...] = ()


def prepare_masks(event: Any, target: MaskTarget) -> Any:
    """Turn a :class:`~napari_ssl.segment.SegmentResult` into :class:`PreparedMasks`; other events pass.

    Runs in the relay's worker thread: the layer is a detached napari ``Labels`` (no viewer, no Qt), which
    the dock adds (in steps), or whose data it moves into its earlier masks layer, on the GUI thread.
    """
    from napari_ssl.segment import SegmentResult

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
