"""Fine-tuning: a segmentation U-Net from a pretrained encoder (or from scratch), fed to the one training loop.

``finetune(config)`` yields :mod:`napari_ssl.events` (``Started``, ``Progress`` every step, ``Validated`` with the
held-out Dice per class, ``Saved``, ``Finished``) like ``engine.pretrain``; closing it (cancel) saves a valid
checkpoint. The recipe comes from the data (:mod:`napari_ssl.plan`: spacing, patch, batch, normalisation, steps;
from a pretrained checkpoint its spacing and normalisation), the cases are prepared by :mod:`napari_ssl.preprocess`
exactly as inference prepares a scan, and the patches by :mod:`napari_ssl.augment` (foreground oversampling and
MONAI augmentation). Dice + cross-entropy, warm-up then poly decay, sliding-window validation on held-out cases
during training, and the best held-out weights are the ones saved. The checkpoint (``kind: "segment"``) records
what inference needs: classes, backbone, channels, the plan, orientation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from napari_ssl.classes import (
    PALETTE,
    SegClass,
    dice_per_class,
    lateralised,
    parse_classes,
    read_class_names,
    region_members,
    remap_labels,
)
from napari_ssl.events import Validated
from napari_ssl.preprocess import Normalization
from napari_ssl.volume import Volume


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of a fine-tuning run (stored in the checkpoint's ``meta.json`` as ``config``).

    ``None`` means "from the plan" (:func:`napari_ssl.plan.make_plan`): the data's fingerprint decides, or the
    pretrained checkpoint for ``spacing``, ``normalization`` and the backbone.

    Parameters
    ----------
    images, labels : tuple of str
        Paired scan files (or DICOM folders) and their label volumes. An image item may list several
        files joined by commas (``flair.nii.gz,t1ce.nii.gz``): the channels of one case.
    classes : str or tuple of str
        Ids, names or ``NAME=ID+ID`` groups (see :func:`~napari_ssl.classes.parse_classes`).
    classes_file : str, optional
        JSON file naming the label ids (needed for names).
    pretrained : str or None
        Pretraining (or segmentation) checkpoint whose encoder (and decoder, when context restoration
        trained one) initialises the network; ``None`` trains from scratch.
    out : str
        Checkpoint folder.
    steps, minutes : optional
        Budget: ``steps`` optimisation steps (default the plan's), stopping earlier after ``minutes`` of training.
    batch_size, patch_size, spacing, normalization, backbone : optional
        Overrides of the plan (patch edges are multiples of 16).
    device, seed, lr, weight_decay, amp, num_threads
        As in pretraining (``num_threads`` 0: every core).
    warmup : int
        Steps of linear learning-rate warm-up before the poly decay.
    label_fraction, n_labelled
        Fraction / number of the training cases whose labels are used (at least one case).
    val_fraction : float
        Cases held out for the validation Dice; with a single case, the last ``val_fraction`` of its
        slices (first axis after reorientation) are held out instead.
    val_images, val_labels : tuple of str
        An explicit held-out set (then nothing is split off the training cases).
    foreground_ratio : float
        Fraction of the patches forced onto the foreground (nnU-Net: a third).
    augment : bool
        Spatial and intensity augmentation (MONAI transforms).
    mirror : bool, optional
        Random flips; default on unless a class is lateralised (a ``left`` / ``right`` name).
    val_every : int
        Validate every this many steps (0: eight times over the budget).
    transfer : {"auto", "encoder", "encoder+decoder"}
        Which pretrained parts to load; ``auto`` adds the decoder when context restoration trained it.
    pretrained_lr_scale : float
        Learning-rate factor of the pretrained layers (below 1 keeps them closer to what pretraining learned).
    overlap : float
        Sliding-window overlap of the validation inference.
    pairs, val_pairs : tuple
        In-memory cases ``(image, labels)`` with ``image`` a Volume (or a tuple of Volumes, one per channel)
        and ``labels`` a Volume: napari layers. Not written to ``meta.json``.
    """

    images: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    classes_file: str | None = None
    pretrained: str | None = None
    out: str = "napari-ssl-segmenter"
    steps: int | None = None
    minutes: float | None = None
    batch_size: int | None = None
    patch_size: Any = None
    backbone: str | None = None
    device: str = "auto"
    seed: int = 0
    lr: float = 3e-3
    weight_decay: float = 3e-5
    warmup: int = 20
    spacing: tuple[float, float, float] | None = None
    normalization: Normalization | None = None
    label_fraction: float = 1.0
    n_labelled: int | None = None
    val_fraction: float = 0.2
    val_images: tuple[str, ...] = ()
    val_labels: tuple[str, ...] = ()
    foreground_ratio: float = 1 / 3
    augment: bool = True
    mirror: bool | None = None
    val_every: int = 0
    save_every: int = 0
    transfer: str = "auto"
    pretrained_lr_scale: float = 1.0
    overlap: float = 0.25
    num_threads: int = 0
    amp: bool = True
    pairs: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    val_pairs: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        from napari_ssl.plan import check_patch_size

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
        for name, low in (("steps", 1), ("batch_size", 1), ("val_every", 0), ("save_every", 0), ("warmup", 0)):
            value = getattr(self, name)
            if value is not None and int(value) < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if self.minutes is not None and not (float(self.minutes) > 0 and math.isfinite(float(self.minutes))):
            raise ValueError(f"minutes must be a positive number of minutes, got {self.minutes}")
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", check_patch_size(self.patch_size))
        if self.backbone is not None:
            from napari_ssl.models.sizes import SIZES

            if self.backbone not in SIZES:
                raise ValueError(f"backbone must be one of {tuple(SIZES)}, got {self.backbone!r}")
        for name in ("lr", "pretrained_lr_scale"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)}")
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


def finetune(config: FinetuneConfig) -> Iterator[Any]:
    """Fine-tune on ``config``; yields events (see the module docstring).

    Bad input (missing file, labels off the image grid, label volume without any of the classes, 2D image,
    pretrained checkpoint of another kind) raises ``ValueError`` / ``OSError`` at the first ``next()``, before
    any training and before anything is written.
    """
    from napari_ssl.trainer import LoopSettings, train

    task = FinetuneTask(config)
    settings = LoopSettings(
        steps=1, out=config.out, lr=config.lr, weight_decay=config.weight_decay, schedule="poly",
        warmup=config.warmup, minutes=config.minutes, device=config.device, seed=config.seed,
        num_threads=config.num_threads, amp=config.amp, save_every=config.save_every, val_every=config.val_every,
        keep_best=True,
    )
    yield from train(task, settings)


__all__ = [
    "PALETTE",
    "FinetuneConfig",
    "FinetuneTask",
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
        out.append(([io.read(p.strip()) for p in str(image).split(",") if p.strip()], io.read(label), False))
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


def _check_pair(channels: list[Volume], label: Volume, lenient: bool) -> Volume:
    """The label volume checked against the image grid (integer ids, same shape and geometry, not empty)."""
    from napari_ssl.preprocess import check_scan

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
    return label


def prepare_case(channels: Sequence[Volume], label: Volume, classes: Sequence[SegClass], spacing: Sequence[float],
                 norm: Normalization) -> Any:
    """One labelled case on the model grid (:func:`napari_ssl.preprocess.prepare_channels`, as inference does)."""
    from napari_ssl.augment import Case
    from napari_ssl.preprocess import back_to_grid, backgrounds, prepare_channels

    array, grid = prepare_channels(list(channels), spacing=spacing, normalization=norm)
    mapped = remap_labels(back_to_grid(label, grid).array, classes)
    return Case(_stem(channels[0], "scan"), array, mapped, backgrounds(array, norm))


# ---------------------------------------------------------------- the task
class FinetuneTask:
    """Cases, plan, patches, Dice+CE loss and held-out Dice for :class:`~napari_ssl.trainer.Trainer`."""

    kind = "segment"

    def __init__(self, config: FinetuneConfig) -> None:
        self.config = config
        self.n_train = self.n_val = 0
        self.pretrained_info: dict[str, Any] | None = None

    @property
    def samples_per_step(self) -> int:
        return self.plan.batch_size

    def _pretrained(self) -> tuple[dict[str, Any] | None, Any]:
        from napari_ssl import checkpoint
        from napari_ssl.meta import CheckpointMeta
        from napari_ssl.models import BackboneSpec

        cfg = self.config
        if cfg.pretrained is None:
            return None, None
        raw = checkpoint.read_meta(cfg.pretrained)
        if raw.get("kind") not in ("pretrain", "segment"):
            raise ValueError(f"{cfg.pretrained} is a {raw.get('kind')!r} checkpoint, not a pretraining or segmentation one")
        if raw.get("kind") == "pretrain" and not (raw.get("backbones") or {}).get("3d"):
            raise ValueError(
                f"{cfg.pretrained} holds no 3D encoder (pretexts {raw.get('pretexts')}); pretrain with rubik or "
                "context to fine-tune a 3D segmenter"
            )
        info = CheckpointMeta.from_dict(raw, source=str(cfg.pretrained))
        spec = (info.backbones or {}).get("3d") if info.kind == "pretrain" else info.backbone
        meta = {"kind": info.kind, "pretexts": list(info.pretexts), "prefixes": dict(info.prefixes),
                "step": info.step, "spacing": info.spacing, "normalization": info.normalization.to_dict()}
        return meta, BackboneSpec.from_dict(dict(spec or {}))

    def setup(self, trainer: Any) -> Any:
        import torch
        from monai.losses import DiceCELoss

        from napari_ssl.augment import PatchSampler
        from napari_ssl.models import BackboneSpec, build_unet
        from napari_ssl.plan import fingerprint, make_plan

        cfg = self.config
        self.trainer = trainer
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
        raw = [(c, _check_pair(c, lab, lenient), lenient) for c, lab, lenient in raw]
        raw_val = [(c, _check_pair(c, lab, lenient), lenient) for c, lab, lenient in raw_val]
        present = set().union(*[set(np.unique(lab.array).tolist()) for _, lab, _ in raw])
        missing = [c for c in self.classes if not present.intersection(c.ids)]
        if missing:
            raise ValueError(
                "no label file holds "
                + ", ".join(f"class {c.name} (ids {', '.join(map(str, c.ids))})" for c in missing)
                + f"; the labels hold ids {', '.join(str(int(v)) for v in sorted(present) if v)}"
            )
        self.channel_names = [_stem(c, f"channel {i}") for i, c in enumerate(raw[0][0])]
        inherit = {}
        if pmeta is not None:
            inherit = {"spacing": pmeta.get("spacing"), "normalization": pmeta.get("normalization"),
                       "backbone": pspec.size}
        fp = fingerprint([c for c, _, _ in raw], [lab for _, lab, _ in raw])
        self.plan = make_plan(fp, trainer.device.type, spacing=cfg.spacing, patch_size=cfg.patch_size,
                              batch_size=cfg.batch_size, normalization=cfg.normalization, steps=cfg.steps,
                              backbone=cfg.backbone, inherit=inherit)
        self.planned_steps = self.plan.steps
        self.fingerprint = fp
        plan = self.plan
        cases = [prepare_case(c, lab, self.classes, plan.spacing, plan.normalization) for c, lab, _ in raw]
        val = [prepare_case(c, lab, self.classes, plan.spacing, plan.normalization) for c, lab, _ in raw_val]
        self.val_mode = "explicit" if val else "none"
        if not val and cfg.val_fraction > 0:
            if len(cases) >= 2:
                order = np.random.default_rng([cfg.seed, 11]).permutation(len(cases))
                n_val = min(len(cases) - 1, max(1, round(len(cases) * cfg.val_fraction)))
                val = [cases[i] for i in order[:n_val]]
                cases = [cases[i] for i in sorted(order[n_val:])]
                self.val_mode = "cases"
            else:  # one scan: hold out its last slices
                only = cases[0]
                cut = max(1, round(only.labels.shape[0] * (1 - cfg.val_fraction)))
                val = [type(only)(only.name + " (held-out slices)", only.image[:, cut:], only.labels[cut:],
                                  only.background)]
                cases = [type(only)(only.name, only.image[:, :cut], only.labels[:cut], only.background)]
                self.val_mode = f"slices {cut}:{only.labels.shape[0]} of axis 0"
        n_lab = min(cfg.n_labelled or max(1, round(len(cases) * cfg.label_fraction)), len(cases))
        pick = np.random.default_rng([cfg.seed, 13]).permutation(len(cases))[:n_lab]
        cases = [cases[i] for i in sorted(pick)]
        if not any(np.any(c.labels) for c in cases):
            raise ValueError("the labelled training cases hold none of the classes (after the hold-out split)")
        self.cases, self.val_cases = cases, val
        self.n_train, self.n_val = len(cases), len(val)
        self.mirror = cfg.mirror if cfg.mirror is not None else not lateralised(self.classes)
        self.sampler = PatchSampler(cases, plan.patch_size, len(self.classes), fg_ratio=cfg.foreground_ratio,
                                    augment=cfg.augment, mirror=self.mirror, seed=cfg.seed)

        size = plan.backbone
        self.spec = BackboneSpec(size=size, spatial_dims=3, in_channels=n_chan,
                                 **({"features": pspec.features} if pspec is not None else {}))
        torch.manual_seed(cfg.seed)
        net = build_unet(self.spec, out_channels=len(self.classes) + 1)
        self.pretrained_keys: set[str] = set()
        if pmeta is not None:
            self.pretrained_info = self._load_pretrained(net, pmeta)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        self.net = net
        return net

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
        self.pretrained_keys = set(loaded)
        return {"path": str(cfg.pretrained), "kind": meta.get("kind"), "pretexts": meta.get("pretexts"),
                "parts": parts, "n_tensors": len(loaded), "step": meta.get("step")}

    def param_groups(self, model: Any) -> list[dict[str, Any]]:
        scale = self.config.pretrained_lr_scale
        pre = [p for k, p in model.named_parameters() if k in self.pretrained_keys]
        rest = [p for k, p in model.named_parameters() if k not in self.pretrained_keys]
        groups = [{"params": rest, "lr_scale": 1.0}]
        if pre:
            groups.append({"params": pre, "lr_scale": scale})
        return groups

    def batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
        yield from self.sampler.batches(start_step, self.trainer.settings.steps, self.plan.batch_size)

    def losses(self, model: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        logits = model(batch["image"])
        loss = self.loss_fn(logits.float(), batch["label"])
        return {"loss": loss, "dice_ce": loss.detach()}

    def validate(self, model: Any) -> dict[str, float]:
        """Mean held-out Dice per class (sliding window over each held-out case); ``score`` is their mean."""
        from napari_ssl.preprocess import pad_to
        from napari_ssl.segment import predict_labels

        if not self.val_cases:
            return {}
        totals: dict[str, list[float]] = {}
        device = self.trainer.device
        for case in self.val_cases:
            image = pad_to(case.image, self.plan.patch_size, list(case.background))
            pred = predict_labels(model, image, roi=self.plan.patch_size, n_classes=len(self.classes) + 1,
                                  overlap=self.config.overlap, sw_device=device, device=device,
                                  amp=self.trainer.amp_dtype is not None)
            pred = pred[tuple(slice(0, s) for s in case.labels.shape)]
            for name, value in dice_per_class(pred, case.labels, self.classes).items():
                totals.setdefault(name, []).append(value)
        dice = {name: float(np.mean(v)) for name, v in totals.items()}
        mean = float(np.mean(list(dice.values())))
        out = {**{f"dice/{k}": v for k, v in dice.items()}, "dice/mean": mean}
        if any(np.any(c.labels) for c in self.val_cases):  # a held-out set without any class selects nothing
            out["score"] = mean
        return out

    def meta(self) -> dict[str, Any]:
        from napari_ssl.preprocess import ORIENTATION

        plan = self.plan
        return {
            "config": self.config.to_dict(),
            "classes": [c.to_dict() for c in self.classes],
            "backbone": self.spec.to_dict(),
            "in_channels": self.spec.in_channels,
            "out_channels": len(self.classes) + 1,
            "channels": self.channel_names,
            "patch_size": list(plan.patch_size),
            "spacing": list(plan.spacing),
            "orientation": ORIENTATION,
            "normalization": plan.normalization.to_dict(),
            "plan": plan.to_dict(),
            "fingerprint": self.fingerprint.to_dict(),
            "mirror": self.mirror,
            "pretrained": self.pretrained_info,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "validation": self.val_mode,
            "train_cases": [c.name for c in self.cases],
        }
