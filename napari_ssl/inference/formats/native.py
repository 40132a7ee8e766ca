"""napari-ssl's own segmenters: a checkpoint folder (``meta.json`` + ``model.safetensors``) written by fine-tuning,
or a bundled model's short name (``phantom-demo``). Described from its typed checkpoint
(:func:`napari_ssl.checkpoint.open_checkpoint`), run by :func:`napari_ssl.inference.segment.segment`: reoriented to
the model's orientation, resampled to its spacing, normalised as in training, sliding windows, labels back on the
scan's grid. Safetensors hold no code: no trust needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_ssl.inference.segmenter import (
    Format,
    SegmenterError,
    SegmenterInfo,
)

__all__ = ["FORMAT", "describe", "detect", "open_native"]

NAME = "napari-ssl"


def detect(path: Path) -> bool:
    return path.is_dir() and (path / "meta.json").is_file()


def describe(path: Path) -> SegmenterInfo:
    """Read ``meta.json`` (typed) and check the weights file's size against it; a pretraining checkpoint is refused
    in one sentence."""
    from napari_ssl import checkpoint
    from napari_ssl.inference.segment import info_of

    try:
        ck = checkpoint.open_checkpoint(path, kinds=("segment",))
    except checkpoint.CheckpointKindError as exc:
        raise SegmenterError(
            f"{path} has no segmentation head: it is a {exc.kind or 'unknown'} checkpoint; fine-tune it first "
            f"(napari-ssl finetune --pretrained {path} ...) and segment with the fine-tuned model"
        ) from None
    except checkpoint.CheckpointError as exc:
        raise SegmenterError(str(exc)) from None
    checkpoint.check_weights(ck)
    return info_of(ck)


def open_native(info: SegmenterInfo, device: str = "auto", **options: Any) -> Any:
    from napari_ssl.inference.segment import NativeSegmenter, load_model

    return NativeSegmenter(load_model(info.path, device=device))


FORMAT = Format(name=NAME, looks_for="meta.json and model.safetensors (a napari-ssl checkpoint)", detect=detect,
                describe=describe, open=open_native)
