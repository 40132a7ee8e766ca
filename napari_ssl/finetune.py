"""Fine-tuning: a segmentation U-Net from a pretrained encoder (or from scratch), as a generator of events.

``finetune(config)`` yields :mod:`napari_ssl.events` (``Started``, ``Progress`` every step, :class:`Validated`
with the held-out Dice per class, ``Saved``, ``Finished``) like ``engine.pretrain``; closing it (cancel) saves a
valid checkpoint. The checkpoint (``kind: "segment"``) records what inference needs: class names, ids and
colours, backbone, input channels, normalisation, spacing, orientation and patch size.

Classes (:func:`parse_classes`) are label ids (``5``), names looked up in a classes file (``liver``, with
``classes.json`` mapping ids to names) or merged groups ``NAME=ID+ID`` (``whole_tumor=1+2+4``); every other
label is background. Groups may overlap (BraTS regions are nested): a voxel goes to the *last* listed class
that contains its id, and the Dice of a class is computed on its whole region (all classes whose ids it
contains), so ``whole_tumor,tumor_core,enhancing`` reports the three BraTS region Dice scores.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl import events
from napari_ssl.data import Normalization
from napari_ssl.volume import Volume

#: label colours (hex) given to classes in order; background is transparent in napari
PALETTE = (
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
)


# ---------------------------------------------------------------- classes
@dataclass(frozen=True)
class SegClass:
    """One output class: label value ``index`` in the masks, from the source label ``ids``."""

    index: int
    name: str
    ids: tuple[int, ...]
    color: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "ids": list(self.ids), "color": self.color}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegClass:
        return cls(int(data["index"]), str(data["name"]), tuple(int(i) for i in data["ids"]), str(data["color"]))


def read_class_names(path: str | os.PathLike[str]) -> dict[int, str]:
    """Label id -> name from a JSON file: ``{"5": "liver"}``, ``{"liver": 5}`` or ``[{"id": 5, "name": ...}]``."""
    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"classes file {p} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"classes file {p}: not valid JSON ({exc})") from exc
    out: dict[int, str] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            if str(key).strip().lstrip("-").isdigit():
                out[int(key)] = str(value)
            elif isinstance(value, int):
                out[int(value)] = str(key)
            else:
                raise ValueError(f"classes file {p}: entry {key!r}: {value!r} is neither 'id': 'name' nor 'name': id")
    elif isinstance(data, list):
        for item in data:
            if not isinstance(item, Mapping) or "id" not in item or "name" not in item:
                raise ValueError(f"classes file {p}: list entries must be {{'id': ..., 'name': ...}}, got {item!r}")
            out[int(item["id"])] = str(item["name"])
    else:
        raise ValueError(f"classes file {p}: expected an object or a list")
    return out


def parse_classes(spec: str | Sequence[str], class_names: Mapping[int, str] | None = None) -> tuple[SegClass, ...]:
    """Parse ``"liver,spleen"``, ``"5,1"`` or ``"whole_tumor=1+2+4,tumor_core=1+4,enhancing=4"``.

    Parameters
    ----------
    spec : str or sequence of str
        Comma-separated items: a label id, a class name (looked up in ``class_names``), or ``NAME=A+B``
        where each of A, B is an id or a name.
    class_names : mapping of int to str, optional
        From :func:`read_class_names` (e.g. ``ct_organs/classes.json``).
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    parts = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    if not parts:
        raise ValueError("no classes given: name label ids, names from a classes file, or NAME=ID+ID groups")
    by_name = {v.lower(): k for k, v in (class_names or {}).items()}
    known = sorted(by_name)

    def resolve(token: str) -> int:
        token = token.strip()
        if token.lstrip("-").isdigit():
            value = int(token)
            if not 0 < value < 2**16:
                raise ValueError(f"class id {value} must be a positive label value (background 0 is implicit)")
            return value
        if not class_names:
            raise ValueError(f"class {token!r} is not a label id; give a classes file (--classes-file) to use names")
        if token.lower() not in by_name:
            near = difflib.get_close_matches(token.lower(), known, n=3, cutoff=0.6)
            near += [n for n in known if token.lower() in n and n not in near][: 5 - len(near)]
            hint = f"; did you mean {', '.join(near)}?" if near else f" ({len(known)} names in the classes file)"
            raise ValueError(f"class {token!r} is not in the classes file{hint}")
        return by_name[token.lower()]

    out: list[SegClass] = []
    for part in parts:
        if "=" in part:
            name, _, members = part.partition("=")
            name = name.strip()
            if not name:
                raise ValueError(f"class group {part!r} needs a name before '='")
            ids = tuple(dict.fromkeys(resolve(t) for t in members.split("+") if t.strip()))
            if not ids:
                raise ValueError(f"class group {part!r} lists no ids after '='")
        else:
            ids = (resolve(part),)
            name = (class_names or {}).get(ids[0], part if not part.isdigit() else f"class_{ids[0]}")
        out.append(SegClass(len(out) + 1, name, ids, PALETTE[len(out) % len(PALETTE)]))
    names = [c.name for c in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"class names must be distinct, got {', '.join(dupes)} twice")
    if len(out) > 254:
        raise ValueError(f"at most 254 classes, got {len(out)}")
    return tuple(out)


def remap_labels(labels: np.ndarray, classes: Sequence[SegClass]) -> np.ndarray:
    """Source label ids -> class indices (uint8); later classes win where groups overlap; the rest -> 0."""
    out = np.zeros(labels.shape, dtype=np.uint8)
    for cls in classes:
        out[np.isin(labels, cls.ids)] = cls.index
    return out


def region_members(classes: Sequence[SegClass]) -> list[list[int]]:
    """For each class, the class indices whose voxels make up its region (see the module docstring)."""
    effective = []
    for i, cls in enumerate(classes):
        later = set().union(*[set(c.ids) for c in classes[i + 1 :]]) if i + 1 < len(classes) else set()
        effective.append(set(cls.ids) - later)
    return [[c.index for c, eff in zip(classes, effective, strict=False) if eff and eff <= set(k.ids)] for k in classes]


def dice_per_class(pred: np.ndarray, target: np.ndarray, classes: Sequence[SegClass]) -> dict[str, float]:
    """MONAI ``DiceMetric`` of each class region (class-index volumes ``pred`` and ``target``, same shape).

    A class absent from both gives 1.0 (nothing to find, nothing found); absent from the target only, 0.0.
    """
    import torch
    from monai.metrics import DiceMetric

    members = region_members(classes)
    p = np.stack([np.isin(pred, m) for m in members])[None]
    t = np.stack([np.isin(target, m) for m in members])[None]
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    scores = metric(y_pred=torch.from_numpy(p.astype(np.float32)), y=torch.from_numpy(t.astype(np.float32)))
    vals = scores[0].tolist()
    return {c.name: (1.0 if not p[0, i].any() and not t[0, i].any() else float(vals[i])) for i, c in enumerate(classes)}


# ---------------------------------------------------------------- config
def _tuple3(value: Any, name: str) -> tuple[int, int, int] | None:
    if value is None:
        return None
    vals = [value] * 3 if isinstance(value, (int, np.integer)) else list(value)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise ValueError(f"{name} must be one edge or 3 edges (z, y, x), got {value!r}")
    return (int(vals[0]), int(vals[1]), int(vals[2]))


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of a fine-tuning run (stored in the checkpoint's ``meta.json`` as ``config``).

    Parameters
    ----------
    images, labels : tuple of str
        Paired scan files (or DICOM folders) and their label volumes. An image item may list several
        files joined by commas (``flair.nii.gz,t1ce.nii.gz``): the channels of one case.
    classes : str or tuple of str
        Ids, names or ``NAME=ID+ID`` groups (see :func:`parse_classes`).
    classes_file : str, optional
        JSON file naming the label ids (needed for names).
    pretrained : str or None
        Pretraining (or segmentation) checkpoint whose encoder (and decoder, when context restoration
        trained one) initialises the network; ``None`` trains from scratch.
    out : str
        Checkpoint folder.
    steps, batch_size : int
        Optimisation steps and patches per step.
    patch_size : int or (z, y, x), optional
        Patch edge(s) in voxels, each a multiple of 16 and >= 32; default: the pretrained checkpoint's, else 48
        (32 when a scan is smaller).
    backbone : str, optional
        Size when training from scratch (``tiny`` ... ``large``); a pretrained checkpoint fixes it.
    device, seed, lr, weight_decay, amp, num_threads
        As in pretraining.
    spacing : (z, y, x) mm, optional
        Voxel size to train at; default the pretrained checkpoint's, else the first training scan's.
    normalization : Normalization, optional
        Default the pretrained checkpoint's, else percentile z-score.
    label_fraction : float
        Fraction of the training cases whose labels are used (at least one case).
    n_labelled : int, optional
        Number of labelled training cases (overrides ``label_fraction``).
    val_fraction : float
        Cases held out for the validation Dice; with a single case, the last ``val_fraction`` of its
        slices (first axis after reorientation) are held out instead.
    val_images, val_labels : tuple of str
        An explicit held-out set (then nothing is split off the training cases).
    foreground_ratio : float
        Probability that a patch is centred on a foreground voxel of a random class.
    val_every : int
        Validate every this many steps (0: only at the end).
    transfer : {"auto", "encoder", "encoder+decoder"}
        Which pretrained parts to load; ``auto`` adds the decoder when context restoration trained it.
    overlap : float
        Sliding-window overlap of the validation inference.
    pairs : tuple
        In-memory cases ``(image, labels)`` with ``image`` a Volume (or a tuple of Volumes, one per channel)
        and ``labels`` a Volume: napari layers. Not written to ``meta.json``.
    """

    images: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    classes_file: str | None = None
    pretrained: str | None = None
    out: str = "napari-ssl-segmenter"
    steps: int = 500
    batch_size: int = 2
    patch_size: Any = None
    backbone: str | None = None
    device: str = "auto"
    seed: int = 0
    lr: float = 3e-3
    weight_decay: float = 1e-5
    spacing: tuple[float, float, float] | None = None
    normalization: Normalization | None = None
    label_fraction: float = 1.0
    n_labelled: int | None = None
    val_fraction: float = 0.2
    val_images: tuple[str, ...] = ()
    val_labels: tuple[str, ...] = ()
    foreground_ratio: float = 0.67
    val_every: int = 0
    save_every: int = 0
    transfer: str = "auto"
    overlap: float = 0.25
    num_threads: int = 0
    amp: bool = True
    pairs: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    val_pairs: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("images", "labels", "val_images", "val_labels"):
            value = getattr(self, name)
            value = (value,) if isinstance(value, (str, Path)) else tuple(value)
            object.__setattr__(self, name, tuple(str(v) for v in value))
        classes = (self.classes,) if isinstance(self.classes, str) else tuple(self.classes)
        object.__setattr__(self, "classes", tuple(str(c) for c in classes))
        object.__setattr__(self, "pairs", tuple(self.pairs))
        object.__setattr__(self, "val_pairs", tuple(self.val_pairs))
        if self.pretrained is not None and str(self.pretrained).strip().lower() in ("", "none", "scratch"):
            object.__setattr__(self, "pretrained", None)
        if len(self.images) != len(self.labels):
            raise ValueError(f"give one label volume per image: {len(self.images)} images, {len(self.labels)} labels")
        if len(self.val_images) != len(self.val_labels):
            raise ValueError(
                f"give one label volume per validation image: {len(self.val_images)} images, {len(self.val_labels)} labels"
            )
        if not self.images and not self.pairs:
            raise ValueError("no training data: give images and labels (--images, --labels) or layer pairs")
        if not self.classes:
            raise ValueError("no classes given (--classes): label ids, names from --classes-file, or NAME=ID+ID")
        for name, low in (("steps", 1), ("batch_size", 1), ("val_every", 0), ("save_every", 0)):
            if int(getattr(self, name)) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        patch = _tuple3(self.patch_size, "patch_size")
        if patch is not None and any(p < 32 or p % 16 for p in patch):
            raise ValueError(f"patch_size edges must be multiples of 16 and >= 32 (four 2x poolings), got {patch}")
        object.__setattr__(self, "patch_size", patch)
        if self.backbone is not None:
            from napari_ssl.models.backbone import SIZES

            if self.backbone not in SIZES:
                raise ValueError(f"backbone must be one of {tuple(SIZES)}, got {self.backbone!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if self.n_labelled is not None and self.n_labelled < 1:
            raise ValueError(f"n_labelled must be >= 1, got {self.n_labelled}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.foreground_ratio <= 1:
            raise ValueError(f"foreground_ratio must be in [0, 1], got {self.foreground_ratio}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.transfer not in ("auto", "encoder", "encoder+decoder"):
            raise ValueError(f"transfer must be 'auto', 'encoder' or 'encoder+decoder', got {self.transfer!r}")
        if isinstance(self.normalization, Mapping):
            object.__setattr__(self, "normalization", Normalization.from_dict(self.normalization))
        if self.spacing is not None:
            sp = self.spacing if isinstance(self.spacing, (list, tuple)) else [self.spacing] * 3
            sp = tuple(float(s) for s in sp)
            if len(sp) != 3 or min(sp) <= 0:
                raise ValueError(f"spacing must be 3 positive mm values (z, y, x), got {self.spacing!r}")
            object.__setattr__(self, "spacing", sp)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (without in-memory pairs)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("pairs", "val_pairs")}
        out["normalization"] = None if self.normalization is None else self.normalization.to_dict()
        return json.loads(json.dumps(out))


@dataclass(frozen=True)
class Validated:
    """Held-out Dice per class (by class name) at ``step``; ``mean`` is their average."""

    step: int
    dice: dict[str, float]

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.dice.values()))) if self.dice else 0.0


def finetune(config: FinetuneConfig) -> Iterator[Any]:
    """Fine-tune on ``config``; yields events (see the module docstring).

    Bad input (missing file, label volume without any of the classes, 2D image, pretrained checkpoint of
    another kind) raises ``ValueError`` / ``OSError`` at the first ``next()``, before any training.
    """
    yield from events.run_trainer(_Trainer(config))


__all__ = [
    "PALETTE",
    "FinetuneConfig",
    "SegClass",
    "Validated",
    "dice_per_class",
    "finetune",
    "parse_classes",
    "read_class_names",
    "region_members",
    "remap_labels",
]


# ---------------------------------------------------------------- cases
@dataclass
class _Case:
    """One labelled scan on the model grid: ``image`` (C, z, y, x) float32, ``labels`` (z, y, x) class indices."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    fg: dict[int, np.ndarray] = field(default_factory=dict)


def _read_channels(item: str) -> list[Volume]:
    from napari_ssl import io

    return [io.read(part.strip()) for part in str(item).split(",") if part.strip()]


def _stem(volume: Volume, fallback: str) -> str:
    from napari_ssl.io import scan_suffix

    if volume.name:
        return str(volume.name)
    if volume.path:
        p = Path(volume.path)
        return p.name[: -len(scan_suffix(p))] if scan_suffix(p) else p.name
    return fallback


def _raw_cases(images: Sequence[str], labels: Sequence[str], pairs: Sequence[Any]) -> list[tuple[list[Volume], Volume, bool]]:
    """``(channels, labels, from_layers)`` for every file pair and in-memory pair."""
    from napari_ssl import io

    out: list[tuple[list[Volume], Volume, bool]] = []
    for image, label in zip(images, labels, strict=False):
        out.append((_read_channels(image), io.read(label), False))
    for i, pair in enumerate(pairs):
        try:
            image, label = pair
        except (TypeError, ValueError):
            raise ValueError(f"pair {i} must be (image, labels), got {type(pair).__name__}") from None
        chans = [image] if isinstance(image, Volume) else list(image)
        chans = [c if isinstance(c, Volume) else Volume(np.asarray(c)) for c in chans]
        lab = label if isinstance(label, Volume) else Volume(np.asarray(label))
        out.append((chans, lab, True))
    return out


def _prepare_case(channels: list[Volume], label: Volume, lenient: bool, classes: Sequence[SegClass],
                  spacing: tuple[float, float, float], norm: Normalization) -> _Case:
    from napari_ssl.segment import back_to_grid, check_scan, prepare_channels

    name = _stem(channels[0], "scan")
    for chan in channels:
        check_scan(chan)
    if label.array.ndim != 3:
        raise ValueError(f"labels of {name}: expected a 3D label volume, got shape {label.array.shape}")
    if label.array.dtype.kind == "f":
        if not np.all(np.mod(label.array[:: max(1, label.array.shape[0] // 8)], 1) == 0):
            raise ValueError(f"labels of {name}: label volumes must hold integer ids, got fractional values")
        label = label.with_array(label.array.astype(np.int32))
    if label.spatial_shape != channels[0].spatial_shape:
        raise ValueError(
            f"labels {label.name or label.path or '?'} of shape {label.spatial_shape} do not match image {name} "
            f"of shape {channels[0].spatial_shape}"
        )
    if not label.same_geometry(channels[0], atol=1e-2):
        if not lenient:
            raise ValueError(
                f"labels {label.path or label.name} are not on the grid of image {channels[0].path or name} "
                "(spacing, origin or direction differ)"
            )
        label = channels[0].with_array(label.array)  # a layer painted over the image: same voxels
    if not np.any(label.array):
        raise ValueError(f"labels {label.name or label.path or 'of ' + name} are empty (all 0): nothing to learn from")
    array, grid = prepare_channels(channels, spacing=spacing, normalization=norm)
    mapped = remap_labels(back_to_grid(label, grid).array, classes)
    return _Case(name=name, image=array, labels=mapped)


def _pad_to(case: _Case, patch: Sequence[int]) -> _Case:
    pads = [(0, max(0, p - s)) for s, p in zip(case.labels.shape, patch, strict=False)]
    if not any(b for _, b in pads):
        return case
    low = case.image.reshape(case.image.shape[0], -1).min(axis=1)
    image = np.stack([np.pad(ch, pads, constant_values=float(v)) for ch, v in zip(case.image, low, strict=False)])
    return _Case(case.name, image, np.pad(case.labels, pads), case.fg)


def _index_foreground(case: _Case, rng: np.random.Generator, limit: int = 20000) -> None:
    for value in np.unique(case.labels):
        if value == 0:
            continue
        coords = np.argwhere(case.labels == value).astype(np.int32)
        if len(coords) > limit:
            coords = coords[rng.choice(len(coords), limit, replace=False)]
        case.fg[int(value)] = coords


# ---------------------------------------------------------------- the training loop
class _Trainer:
    """State of one fine-tuning run; :meth:`run` is the generator behind :func:`finetune`."""

    def __init__(self, config: FinetuneConfig) -> None:
        self.config = config
        self.net: Any = None
        self.step = 0
        self.saved_step = -1
        self.history: dict[str, list[float]] = {"loss": []}
        self.metrics: dict[str, float] = {}
        self.pretrained_info: dict[str, Any] | None = None
        self._threads: int | None = None

    # ------------------------------------------------------------ setup
    def _pretrained(self) -> tuple[dict[str, Any] | None, Any]:
        from napari_ssl import checkpoint
        from napari_ssl.models import BackboneSpec

        cfg = self.config
        if cfg.pretrained is None:
            return None, None
        meta = checkpoint.read_meta(cfg.pretrained)
        kind = meta.get("kind")
        if kind == "pretrain":
            spec = (meta.get("backbones") or {}).get("3d")
            if not spec:
                raise ValueError(
                    f"{cfg.pretrained} holds no 3D encoder (pretexts {meta.get('pretexts')}); pretrain with rubik or "
                    "context to fine-tune a 3D segmenter"
                )
        elif kind == "segment":
            spec = meta["backbone"]
        else:
            raise ValueError(f"{cfg.pretrained} is a {kind!r} checkpoint, not a pretraining or segmentation one")
        return meta, BackboneSpec.from_dict(spec)

    def _setup(self) -> None:
        import torch
        from monai.losses import DiceCELoss

        from napari_ssl.device import default_num_threads, resolve_device
        from napari_ssl.models import BackboneSpec, build_unet
        from napari_ssl.segment import ORIENTATION, canonical

        cfg = self.config
        self.device = resolve_device(cfg.device)
        self._threads = torch.get_num_threads()
        torch.set_num_threads(cfg.num_threads or default_num_threads(leave_free=1))
        names = read_class_names(cfg.classes_file) if cfg.classes_file else None
        self.classes = parse_classes(cfg.classes, names)
        pmeta, pspec = self._pretrained()
        if pspec is not None and cfg.backbone is not None and cfg.backbone != pspec.size:
            raise ValueError(
                f"--backbone {cfg.backbone} differs from the pretrained checkpoint's backbone {pspec.size}; "
                "leave it out (it comes from the checkpoint)"
            )
        raw = _raw_cases(cfg.images, cfg.labels, cfg.pairs)
        raw_val = _raw_cases(cfg.val_images, cfg.val_labels, cfg.val_pairs)
        n_chan = len(raw[0][0])
        for chans, _, _ in raw + raw_val:
            if len(chans) != n_chan:
                raise ValueError(f"every case needs the same number of channels: {n_chan} and {len(chans)} given")
        self.channel_names = [_stem(c, f"channel {i}") for i, c in enumerate(raw[0][0])]
        if pmeta is not None and pmeta.get("spacing") is not None and cfg.spacing is None:
            self.spacing = tuple(float(s) for s in pmeta["spacing"])
        else:
            self.spacing = cfg.spacing or canonical(raw[0][0][0]).spacing
        if cfg.normalization is not None:
            self.norm = cfg.normalization
        elif pmeta is not None and pmeta.get("normalization"):
            self.norm = Normalization.from_dict(pmeta["normalization"])
        else:
            self.norm = Normalization()
        self.orientation = ORIENTATION

        cases = [_prepare_case(c, lab, lenient, self.classes, self.spacing, self.norm) for c, lab, lenient in raw]
        val = [_prepare_case(c, lab, lenient, self.classes, self.spacing, self.norm) for c, lab, lenient in raw_val]
        if not any(np.any(c.labels) for c in cases):
            raise ValueError(
                f"the training labels hold none of the classes {', '.join(f'{c.name} (ids {list(c.ids)})' for c in self.classes)}"
            )
        order = np.random.default_rng([cfg.seed, 11]).permutation(len(cases))
        self.val_mode = "explicit" if val else "none"
        if not val and cfg.val_fraction > 0:
            if len(cases) >= 2:
                n_val = min(len(cases) - 1, max(1, round(len(cases) * cfg.val_fraction)))
                val = [cases[i] for i in order[:n_val]]
                cases = [cases[i] for i in sorted(order[n_val:])]
                self.val_mode = "cases"
            else:  # one scan: hold out its last slices
                only = cases[0]
                cut = max(1, round(only.labels.shape[0] * (1 - cfg.val_fraction)))
                val = [_Case(only.name + " (held-out slices)", only.image[:, cut:], only.labels[cut:])]
                cases = [_Case(only.name, only.image[:, :cut], only.labels[:cut])]
                self.val_mode = f"slices {cut}:{only.labels.shape[0]} of axis 0"
        n_lab = cfg.n_labelled or max(1, round(len(cases) * cfg.label_fraction))
        n_lab = min(n_lab, len(cases))
        pick = np.random.default_rng([cfg.seed, 13]).permutation(len(cases))[:n_lab]
        cases = [cases[i] for i in sorted(pick)]
        if not any(np.any(c.labels) for c in cases):
            raise ValueError("the labelled training cases hold none of the classes (after the hold-out split)")

        if cfg.patch_size is not None:
            self.patch = cfg.patch_size
        else:
            default = tuple(int(p) for p in pmeta["patch_size"]) if pmeta and pmeta.get("patch_size") else (48, 48, 48)
            smallest = np.min([c.labels.shape for c in cases], axis=0)
            self.patch = tuple(int(min(d, max(32, 16 * math.ceil(s / 16)))) for d, s in zip(default, smallest, strict=False))
        rng = np.random.default_rng([cfg.seed, 17])
        self.cases = [_pad_to(c, self.patch) for c in cases]
        for case in self.cases:
            _index_foreground(case, rng)
        self.val_cases = val

        size = pspec.size if pspec is not None else (cfg.backbone or "small")
        self.spec = BackboneSpec(size=size, spatial_dims=3, in_channels=n_chan,
                                 **({"features": pspec.features} if pspec is not None else {}))
        torch.manual_seed(cfg.seed)
        net = build_unet(self.spec, out_channels=len(self.classes) + 1)
        if pmeta is not None:
            self.pretrained_info = self._load_pretrained(net, pmeta)
        self.net = net.to(self.device)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        self.amp = bool(cfg.amp and self.device.type == "cuda")

    def _load_pretrained(self, net: Any, meta: dict[str, Any]) -> dict[str, Any]:
        from napari_ssl import checkpoint
        from napari_ssl.models import load_parts, sub_state

        cfg = self.config
        state, _ = checkpoint.load(cfg.pretrained, device="cpu")
        if meta.get("kind") == "pretrain":
            prefix = (meta.get("prefixes") or {}).get("3d", "backbone3d.")
            has_decoder = "context" in (meta.get("pretexts") or [])
        else:
            prefix, has_decoder = "", True
        parts = ["encoder"]
        if cfg.transfer == "encoder+decoder" or (cfg.transfer == "auto" and has_decoder):
            parts.append("decoder")
        picked = sub_state(state, prefix, parts)
        own = net.state_dict()
        for key, value in list(picked.items()):  # a 1-channel encoder on a multi-channel input: spread its filters
            if key in own and value.ndim == 5 and own[key].shape[1] != value.shape[1] and value.shape[1] == 1:
                picked[key] = value.repeat(1, own[key].shape[1], 1, 1, 1) / own[key].shape[1]
        loaded = load_parts(net, picked, prefix="", parts=parts)
        return {"path": str(cfg.pretrained), "kind": meta.get("kind"), "pretexts": meta.get("pretexts"),
                "parts": parts, "n_tensors": len(loaded), "step": meta.get("step")}

    # ------------------------------------------------------------ batches
    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Images (B, C, *patch) and labels (B, 1, *patch) of step ``step`` (from ``default_rng([seed, step])``)."""
        rng = np.random.default_rng([self.config.seed, 1000 + step])
        patch = np.asarray(self.patch)
        xs, ys = [], []
        for _ in range(self.config.batch_size):
            case = self.cases[int(rng.integers(len(self.cases)))]
            shape = np.asarray(case.labels.shape)
            if case.fg and rng.random() < self.config.foreground_ratio:
                keys = sorted(case.fg)
                coords = case.fg[keys[int(rng.integers(len(keys)))]]
                centre = coords[int(rng.integers(len(coords)))]
                jitter = rng.integers(-(patch // 4), patch // 4 + 1)
                corner = np.clip(centre - patch // 2 + jitter, 0, shape - patch)
            else:
                corner = np.array([rng.integers(0, s - p + 1) for s, p in zip(shape, patch, strict=False)])
            box = tuple(slice(int(c), int(c) + int(p)) for c, p in zip(corner, patch, strict=False))
            xs.append(case.image[(slice(None), *box)])
            ys.append(case.labels[box][None])
        return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int64)

    # ------------------------------------------------------------ run
    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        import torch

        xt = torch.from_numpy(x).to(self.device)
        yt = torch.from_numpy(y).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.net(xt)
        loss = self.loss_fn(logits.float(), yt)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def validate(self) -> dict[str, float]:
        """Mean Dice per class over the held-out cases (empty when nothing is held out)."""
        from napari_ssl.segment import predict_labels

        if not self.val_cases:
            return {}
        self.net.eval()
        totals: dict[str, list[float]] = {}
        for case in self.val_cases:
            pred = predict_labels(self.net, case.image, roi=self.patch, n_classes=len(self.classes) + 1,
                                  overlap=self.config.overlap, sw_device=self.device, device=self.device, amp=self.amp)
            for name, value in dice_per_class(pred, case.labels, self.classes).items():
                totals.setdefault(name, []).append(value)
        self.net.train()
        return {name: float(np.mean(v)) for name, v in totals.items()}

    def run(self) -> Iterator[Any]:
        from napari_ssl.device import describe_device

        t0 = time.perf_counter()
        self._setup()
        cfg = self.config
        yield events.Started(
            total=cfg.steps, start_step=0, device=describe_device(self.device), n_train=len(self.cases),
            n_val=len(self.val_cases), n_parameters=sum(p.numel() for p in self.net.parameters() if p.requires_grad),
        )
        self.setup_seconds = time.perf_counter() - t0
        self.net.train()
        rate, tick = 0.0, time.perf_counter()
        for step in range(cfg.steps):
            for group in self.optimizer.param_groups:  # poly decay, as nnU-Net
                group["lr"] = cfg.lr * (1 - step / cfg.steps) ** 0.9
            loss = self.train_step(*self.batch(step))
            self.step = step + 1
            self.history["loss"].append(round(loss, 6))
            now = time.perf_counter()
            inst = cfg.batch_size / max(now - tick, 1e-9)
            rate, tick = (inst if rate == 0.0 else 0.8 * rate + 0.2 * inst), now
            yield events.Progress(self.step, cfg.steps, loss, {"dice_ce": loss},
                                  self.optimizer.param_groups[0]["lr"], rate)
            last = self.step == cfg.steps
            if self.val_cases and (last or (cfg.val_every and self.step % cfg.val_every == 0)):
                dice = self.validate()
                self.history.setdefault("val_step", []).append(self.step)
                for name, value in dice.items():
                    self.history.setdefault(f"val/{name}", []).append(round(value, 6))
                self.metrics = {f"dice/{k}": v for k, v in dice.items()}
                if dice:
                    self.metrics["dice/mean"] = float(np.mean(list(dice.values())))
                yield Validated(self.step, dice)
            if cfg.save_every and self.step % cfg.save_every == 0 and not last:
                yield events.Saved(self.save(), self.step)
        self.metrics["loss"] = float(np.mean(self.history["loss"][-10:]))
        path = self.save()
        yield events.Saved(path, self.step)
        yield events.Finished(self.step, dict(self.metrics), path)

    def meta(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "kind": "segment",
            "config": cfg.to_dict(),
            "classes": [c.to_dict() for c in self.classes],
            "backbone": self.spec.to_dict(),
            "in_channels": self.spec.in_channels,
            "out_channels": len(self.classes) + 1,
            "channels": self.channel_names,
            "patch_size": list(self.patch),
            "spacing": list(self.spacing),
            "orientation": self.orientation,
            "normalization": self.norm.to_dict(),
            "pretrained": self.pretrained_info,
            "step": self.step,
            "total": cfg.steps,
            "history": self.history,
            "metrics": self.metrics,
            "n_train": len(self.cases),
            "n_val": len(self.val_cases),
            "validation": self.val_mode,
            "train_cases": [c.name for c in self.cases],
            "device": str(self.device),
        }

    @property
    def has_model(self) -> bool:
        return self.net is not None

    def save(self) -> str:
        from napari_ssl import checkpoint

        path = checkpoint.save(self.config.out, self.net.state_dict(), self.meta())
        self.saved_step = self.step
        return str(path)

    def close(self) -> None:
        import torch

        if self._threads is not None:
            torch.set_num_threads(self._threads)
            self._threads = None
