"""A checkpoint's ``meta.json`` as typed, versioned dataclasses: :class:`SegmenterCheckpoint` and
:class:`PretrainCheckpoint`, made of the types the rest of the package uses (:class:`~napari_ssl.plan.Plan`,
:class:`~napari_ssl.preprocess.Normalization`, :class:`~napari_ssl.models.sizes.BackboneSpec`,
:class:`~napari_ssl.classes.SegClass`).

This module is the schema: dicts in (:func:`from_dict`), dicts out (:meth:`Checkpoint.to_dict`). The only module
that reads a checkpoint's ``meta.json`` is :mod:`napari_ssl.checkpoint` (:func:`~napari_ssl.checkpoint.open_checkpoint`);
the trainer writes through :func:`from_dict` too, so what is written is what is read. No torch here: the GUI reads
a checkpoint on its own thread.

One version number, ``format_version`` (:data:`FORMAT_VERSION`): 1 wrote ``meta_version`` beside it (1: before the
plan; 2: plan, training, typed fields); 3 drops ``meta_version`` and stores the plan once (the top-level ``spacing``
is written only where it differs from the plan's). Every older file still opens; a newer one is refused in words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from napari_ssl.classes import SegClass
from napari_ssl.models.sizes import BackboneSpec
from napari_ssl.plan import Plan
from napari_ssl.preprocess import ORIENTATION, Normalization

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KINDS",
    "Checkpoint",
    "CheckpointError",
    "CheckpointKindError",
    "PretrainCheckpoint",
    "SegmenterCheckpoint",
    "build",
    "from_dict",
    "version_of",
]

FORMAT = "napari-ssl-checkpoint"
#: the one version of the checkpoint format this code writes (see the module docstring)
FORMAT_VERSION = 3
KINDS = ("segment", "pretrain")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, corrupt or unsafe."""


class CheckpointKindError(CheckpointError):
    """A checkpoint of another kind than the caller asked for (``kind``: what it is; ``None`` when unknown)."""

    def __init__(self, source: str, kind: Any) -> None:
        self.kind = kind if kind in KINDS else None
        super().__init__(f"{source} is a {self.kind or 'unknown'} checkpoint")


def _tuple(values: Any, kind: type = str) -> tuple[Any, ...]:
    return tuple(kind(v) for v in values or ())


@dataclass(frozen=True)
class Checkpoint:
    """What every checkpoint records: the run (step, budget, history, metrics, training details, config), the grid
    its scans were prepared on (``spacing``, ``patch_size``, ``normalization``, ``plan``) and where it was read
    (``path``, ``files``: the sizes and checksums :mod:`napari_ssl.checkpoint` verifies)."""

    kind: ClassVar[str] = ""
    step: int = 0
    total: int = 0
    config: Mapping[str, Any] = field(default_factory=dict)  # the run's config as written (old keys stay readable)
    history: Mapping[str, list[Any]] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    patch_size: tuple[int, ...] = ()
    spacing: tuple[float, float, float] | None = None  # the plan's, unless the run resampled elsewhere (or not)
    normalization: Normalization = field(default_factory=Normalization)
    plan: Plan | None = None
    training: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    world_size: int = 1
    n_train: int = 0
    n_val: int = 0
    versions: Mapping[str, str] = field(default_factory=dict)  # package versions (written by checkpoint.save)
    version: int = FORMAT_VERSION
    path: str = field(default="", compare=False)  # where it was read; not written
    files: Mapping[str, Any] = field(default_factory=dict, compare=False)  # written by checkpoint.save

    def __post_init__(self) -> None:
        if isinstance(self.normalization, Mapping):
            object.__setattr__(self, "normalization", Normalization.from_dict(self.normalization))
        if isinstance(self.plan, Mapping):
            object.__setattr__(self, "plan", Plan.from_dict(self.plan))
        object.__setattr__(self, "patch_size", _tuple(self.patch_size, int))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", _tuple(self.spacing, float))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict written to ``meta.json`` (``kind`` included; ``format_version``, ``files`` and
        ``versions`` are added by :func:`napari_ssl.checkpoint.save`)."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("version", "path", "files") or (f.name == "versions" and not value):
                continue
            if f.name == "spacing" and self.plan is not None and value == self.plan.spacing:
                continue  # the plan stored once: spacing is read from it
            out[f.name] = _plain(value)
        return out


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class SegmenterCheckpoint(Checkpoint):
    """A fine-tuned segmenter: what inference needs (classes, network, channels, grid) and what the Segment dock
    shows (description, held-out Dice in ``metrics``, the training data's ``fingerprint``)."""

    kind: ClassVar[str] = "segment"
    classes: tuple[SegClass, ...] = ()
    backbone: BackboneSpec | None = None
    in_channels: int = 1
    out_channels: int = 0
    channels: tuple[str, ...] = ()
    orientation: str = ORIENTATION
    pretrained: Mapping[str, Any] | None = None
    fingerprint: Mapping[str, Any] | None = None
    mirror: bool | None = None
    channel_dropout: float | None = None  # modality dropout's share of patches (None: written before it was stored)
    validation: str = ""
    train_cases: tuple[str, ...] = ()
    ignore_label: int | None = None  # the source label value taken as unlabelled (nnU-Net's ignore label)
    labelled_fraction: float = 1.0  # the share of the training voxels labelled (below 1: partial annotations)
    description: str = ""  # a sentence the Segment dock shows first (the bundled demonstration model says what it is)
    model_version: int = 1  # 1 for a new segmenter; a run continued from one (--from) is its version + 1
    continued_from: Mapping[str, Any] | None = None  # --from: the previous version's path, step, version, weights hash

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "classes", tuple(c if isinstance(c, SegClass) else SegClass.from_dict(c)
                                                  for c in self.classes))
        if isinstance(self.backbone, Mapping):
            object.__setattr__(self, "backbone", BackboneSpec.from_dict(self.backbone))
        for name in ("channels", "train_cases"):
            object.__setattr__(self, name, _tuple(getattr(self, name)))

    @property
    def names(self) -> dict[int, str]:
        """Label value -> class name, background included."""
        return {0: "background", **{c.index: c.name for c in self.classes}}

    @property
    def colors(self) -> dict[int, str]:
        """Label value -> hex colour (background excluded)."""
        return {c.index: c.color for c in self.classes}

    @property
    def channel_names(self) -> tuple[str, ...]:
        """The input channels' names (``channel i`` where none were recorded)."""
        return self.channels or tuple(f"channel {i}" for i in range(self.in_channels))

    @property
    def modality_dropout(self) -> float:
        """The share of training patches with one channel blanked (modality dropout); 0 for one channel. Files written
        before it was stored give what their config chose: its value, else the default of that time for several
        channels with augmentation (0.3), else none (configs older than the option)."""
        if self.in_channels < 2:
            return 0.0
        if self.channel_dropout is not None:
            return float(self.channel_dropout)
        config = self.config or {}
        if "channel_dropout" not in config or not config.get("augment", True):
            return 0.0
        chosen = config["channel_dropout"]
        return 0.3 if chosen is None else float(chosen)

    @property
    def dice(self) -> dict[str, float]:
        """The held-out Dice per class (and ``mean``) from ``metrics``; empty when not measured."""
        return {k.split("/", 1)[1]: float(v) for k, v in self.metrics.items() if k.startswith("dice/")}


@dataclass(frozen=True)
class PretrainCheckpoint(Checkpoint):
    """A pretraining run: what fine-tuning takes (``backbones``, ``prefixes``), what resuming and the explorer need
    (``pretexts``, their resolved ``pretext_options``, the network's ``model`` spec)."""

    kind: ClassVar[str] = "pretrain"
    pretexts: tuple[str, ...] = ()
    pretext_options: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] | None = None  # a models.ModelSpec as a dict (building it needs torch: model_spec())
    backbones: Mapping[str, BackboneSpec | None] = field(default_factory=dict)
    prefixes: Mapping[str, str] = field(default_factory=dict)
    native_views: Mapping[str, Any] | None = None  # planes on native 2D views: channels, split (pretext.planes.native)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "pretexts", _tuple(self.pretexts))
        object.__setattr__(self, "backbones", {
            k: BackboneSpec.from_dict(v) if isinstance(v, Mapping) else v for k, v in (self.backbones or {}).items()
        })

    @property
    def backbone(self) -> BackboneSpec | None:
        """The backbone fine-tuning takes: the 3D one, else the 2D one (inflated to 3D)."""
        return self.backbones.get("3d") or self.backbones.get("2d")

    def model_spec(self) -> Any:
        """The network as a :class:`~napari_ssl.models.pretrain.ModelSpec` (imports torch)."""
        from napari_ssl.models import ModelSpec

        return ModelSpec.from_dict(dict(self.model or {}))


_CLASSES: dict[str, type[Checkpoint]] = {"segment": SegmenterCheckpoint, "pretrain": PretrainCheckpoint}
_REQUIRED = {
    "segment": ("classes", "backbone", "in_channels", "out_channels", "patch_size"),
    "pretrain": ("pretexts", "model", "backbones", "patch_size"),
}


def build(kind: str, **values: Any) -> SegmenterCheckpoint | PretrainCheckpoint:
    """The typed checkpoint of a run of ``kind`` (what the trainer writes; what is written is then read back by
    :func:`from_dict`)."""
    if kind not in _CLASSES:
        raise CheckpointError(f"unknown checkpoint kind {kind!r} (known: {', '.join(KINDS)})")
    return _CLASSES[kind](**values)  # type: ignore[return-value]


def version_of(data: Mapping[str, Any]) -> int:
    """The one version of a ``meta.json`` dict (files before version 3 carried ``meta_version`` beside it)."""
    version = int(data.get("format_version", 1))
    return version if version >= 3 else int(data.get("meta_version", 1))


def from_dict(data: Mapping[str, Any], source: str = "checkpoint", *,
              kinds: tuple[str, ...] | None = None, path: str = "") -> SegmenterCheckpoint | PretrainCheckpoint:
    """The typed checkpoint of a ``meta.json`` dict; older versions are upgraded, incomplete or newer ones refused
    in words (``source`` names the file in them). ``kinds``: the kinds the caller takes; another kind raises
    :class:`CheckpointKindError` before the file's completeness is checked (so the caller can say what the
    checkpoint is instead). ``path``: the folder it was read from."""
    version = version_of(data)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} was written by a newer napari-ssl (format version {version}, this one reads up to "
            f"{FORMAT_VERSION}); upgrade napari-ssl to use it"
        )
    kind = data.get("kind")
    if kinds is not None and kind not in kinds:
        raise CheckpointKindError(source, kind)
    if kind not in KINDS:
        raise CheckpointError(f"{source} is not a napari-ssl model checkpoint (kind {kind!r})")
    backbones = data.get("backbones") or {}
    if kind == "pretrain" and isinstance(backbones, Mapping) and not (backbones.get("3d") or backbones.get("2d")):
        raise CheckpointError(f"{source} holds no backbone (pretexts {data.get('pretexts')})")
    missing = [k for k in _REQUIRED[kind] if data.get(k) in (None, [], {})]
    if missing:
        what = "fine-tune it again" if kind == "segment" else "pretrain it again"
        raise CheckpointError(f"{source}: an incomplete {kind} checkpoint (no {', '.join(missing)}); {what}")
    cls = _CLASSES[kind]
    known = {f.name for f in fields(cls)} - {"version", "path"}
    values = {k: v for k, v in data.items() if k in known}
    if kind == "pretrain" and isinstance(values.get("patch_size"), int):
        values["patch_size"] = [values["patch_size"]] * 3
    if values.get("normalization") is None:  # version 1 pretraining without a recorded normalisation
        values.pop("normalization", None)
    try:
        if "spacing" not in values and values.get("plan"):  # version 3: the plan's spacing
            values["spacing"] = Plan.from_dict(values["plan"]).spacing
        return cls(version=FORMAT_VERSION, path=path or source, **values)  # type: ignore[return-value]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: unreadable meta.json ({exc})") from exc
