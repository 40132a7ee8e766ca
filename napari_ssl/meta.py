"""A checkpoint's ``meta.json`` as one typed, versioned dataclass, read and written here only.

:class:`CheckpointMeta` holds what every checkpoint records (kind, step, budget, history, metrics, the plan's
spacing / patch / normalisation, the training config) and the fields of its kind: a segmenter's classes, network and
channels (what inference needs), a pretraining run's pretexts and backbones (what fine-tuning and resuming need).
The trainer writes it (:meth:`CheckpointMeta.to_dict`); :func:`read` and :meth:`CheckpointMeta.from_dict` read it
back, upgrading version 1 files (written before the plan existed) and refusing, with a sentence, a file that lacks
what its kind needs or comes from a newer napari-ssl.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from napari_ssl.checkpoint import CheckpointError
from napari_ssl.preprocess import ORIENTATION, Normalization

#: version of the meta.json schema this code writes (1: before the plan; 2: plan, training, typed fields)
META_VERSION = 2
KINDS = ("segment", "pretrain")
_REQUIRED = {
    "segment": ("classes", "backbone", "in_channels", "out_channels", "patch_size"),
    "pretrain": ("pretexts", "model", "backbones", "patch_size"),
}


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything ``meta.json`` says about a checkpoint (see the module docstring)."""

    kind: str
    step: int = 0
    total: int = 0
    config: Mapping[str, Any] = field(default_factory=dict)
    history: Mapping[str, list[Any]] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    patch_size: tuple[int, ...] = ()
    spacing: tuple[float, float, float] | None = None
    normalization: Normalization = field(default_factory=Normalization)
    plan: Mapping[str, Any] | None = None
    training: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    world_size: int = 1
    n_train: int = 0
    n_val: int = 0
    # a segmenter
    classes: tuple[Mapping[str, Any], ...] = ()
    backbone: Mapping[str, Any] | None = None
    in_channels: int = 1
    out_channels: int = 0
    channels: tuple[str, ...] = ()
    orientation: str = ORIENTATION
    pretrained: Mapping[str, Any] | None = None
    fingerprint: Mapping[str, Any] | None = None
    mirror: bool | None = None
    validation: str = ""
    train_cases: tuple[str, ...] = ()
    description: str = ""  # a sentence the Segment dock shows first (the bundled demonstration model says what it is)
    # a pretraining run
    pretexts: tuple[str, ...] = ()
    pretext_options: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] | None = None
    backbones: Mapping[str, Any] | None = None
    prefixes: Mapping[str, str] = field(default_factory=dict)
    native_views: Mapping[str, Any] | None = None  # planes on native 2D views: channels, split (pretext.planes_native)
    # written by checkpoint.save
    versions: Mapping[str, str] = field(default_factory=dict)
    version: int = META_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CheckpointError(f"unknown checkpoint kind {self.kind!r} (known: {', '.join(KINDS)})")
        if isinstance(self.normalization, Mapping):
            object.__setattr__(self, "normalization", Normalization.from_dict(self.normalization))
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        for name in ("classes", "channels", "train_cases", "pretexts"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def names(self) -> dict[int, str]:
        """A segmenter's label value -> class name, background included."""
        return {0: "background", **{int(c["index"]): str(c["name"]) for c in self.classes}}

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict written to ``meta.json`` (``meta_version`` included)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "version":
                out["meta_version"] = value
            elif f.name == "versions" and not value:
                continue  # checkpoint.save records the package versions
            elif f.name == "normalization":
                out[f.name] = value.to_dict()
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            elif isinstance(value, Mapping):
                out[f.name] = dict(value)
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "checkpoint") -> CheckpointMeta:
        """Read a ``meta.json`` dict; version 1 files are upgraded, incomplete or newer ones refused in words."""
        version = int(data.get("meta_version", 1))
        if version > META_VERSION:
            raise CheckpointError(
                f"{source} was written by a newer napari-ssl (meta version {version}, this one reads up to "
                f"{META_VERSION}); upgrade napari-ssl to use it"
            )
        kind = data.get("kind")
        if kind not in KINDS:
            raise CheckpointError(f"{source} is not a napari-ssl model checkpoint (kind {kind!r})")
        missing = [k for k in _REQUIRED[kind] if data.get(k) in (None, [], {})]
        if missing:
            what = "fine-tune it again" if kind == "segment" else "pretrain it again"
            raise CheckpointError(f"{source}: an incomplete {kind} checkpoint (no {', '.join(missing)}); {what}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known and k != "version"}
        if kind == "pretrain" and isinstance(values.get("patch_size"), int):
            values["patch_size"] = [values["patch_size"]] * 3
        if values.get("normalization") is None:  # version 1 pretraining without a recorded normalisation
            values.pop("normalization", None)
        values["version"] = META_VERSION
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: unreadable meta.json ({exc})") from exc


def read(path: str | os.PathLike[str]) -> CheckpointMeta:
    """The typed meta of the checkpoint folder ``path`` (its files are verified by :mod:`napari_ssl.checkpoint`)."""
    from napari_ssl import checkpoint

    return CheckpointMeta.from_dict(checkpoint.read_meta(path), source=str(path))


__all__ = ["META_VERSION", "CheckpointMeta", "read"]
