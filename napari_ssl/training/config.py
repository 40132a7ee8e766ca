"""Run settings: :class:`PretrainConfig` and :class:`FinetuneConfig` (frozen dataclasses, validated on creation,
stored in the checkpoint's ``meta.json`` as ``config``). :mod:`napari_ssl.training.pretrain` and :mod:`napari_ssl.training.finetune`
re-export them; ``None`` values are filled by the plan from the data (:mod:`napari_ssl.plan`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from napari_ssl.io.volume import mm_spacing
from napari_ssl.preprocess import Normalization


def __getattr__(name: str) -> Any:
    if name == "PRETEXT_NAMES":  # pretexts a run can combine: every registered one (napari_ssl.pretext.registry)
        from napari_ssl.pretext import registry

        return registry.names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: fine-tuning's share of held-out cases when there are enough of them (:func:`held_out_fraction`)
VAL_FRACTION = 0.2
#: below this many labelled cases, fine-tuning holds none out by default: on the shared BraTS cases (10 labelled,
#: four channels, 2000 steps) training on all ten beat the 8 / 2 split in 3 of 3 seeds, +0.066 +- 0.016 mean Dice on
#: the unseen cases (docs/brats_four_channels.md); two held-out cases are a noisy judge of the best weights too
HOLD_OUT_MIN_CASES = 20


def held_out_fraction(val_fraction: float | None, n_cases: int) -> float:
    """The share of the ``n_cases`` labelled cases fine-tuning holds out: ``val_fraction`` when given, else
    (automatic) :data:`VAL_FRACTION` with at least :data:`HOLD_OUT_MIN_CASES` cases and none below."""
    if val_fraction is not None:
        return float(val_fraction)
    return VAL_FRACTION if n_cases >= HOLD_OUT_MIN_CASES else 0.0


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of a pretraining run (stored in the checkpoint's ``meta.json`` as ``config``).

    Parameters
    ----------
    pretexts : tuple of str
        One or more registered pretexts (``rubik``, ``context``, ``planes``, ``genesis``, see
        :mod:`napari_ssl.pretext.registry`); combined runs share the 3D encoder.
    data : tuple of str
        Scan files or folders (searched recursively; DICOM series folders count as one scan).
    out : str
        Checkpoint folder (rewritten atomically at every save).
    steps : int
        Final step count (a resumed run continues up to it).
    batch_size, patch_size : int or None
        Samples per step and process (``None``: the pretexts' default, 2; imaging planes alone take as many plane
        pixels per step as two 3D patches hold voxels, 9 at the CPU defaults: ``PretextSpec.batch``); 3D patch
        edge in voxels (``None``: device default, 48 on CPU).
    backbone : str or None
        ``tiny``, ``small``, ``medium``, ``large``; ``None`` follows the device (small on CPU).
    device : str
        ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda:1``, ``mps``.
    seed : int
        Seed of the initial weights and of every sample.
    resume : str or None
        Checkpoint folder to continue from (its weights, optimizer state and step).
    lr, weight_decay : float
        AdamW settings; ``schedule`` is ``constant`` (default, so budgets can be extended on resume),
        ``cosine`` or ``poly`` (decay to 0 at the end of the budget).
    minutes : float, optional
        Stop after this many minutes of training (saving as at the end); ``steps`` still applies.
    weights : mapping of str to float
        Loss weight of each pretext in a combined run (default 1).
    pretext_options : mapping of str to mapping
        Constructor arguments of each pretext (e.g. ``{"rubik": {"gap": 4}}``); unset ones get defaults
        scaled to the patch size.
    spacing : tuple of float or None
        Resample every scan to this voxel size (mm, z y x) first; ``None``: the plan's (from the data,
        :mod:`napari_ssl.plan`), or the resumed checkpoint's.
    normalization : Normalization or None
        Intensity normalisation (stored in the checkpoint); ``None``: the plan's (CT: foreground-clipped dataset
        z-score; MR: per-scan z-score inside the nonzero mask).
    val_fraction, val_samples : float, int
        Scans held out for the final metrics, and how many samples the metrics use.
    save_every : int
        Save every this many steps (0: only at the end and on cancel).
    num_workers : int
        DataLoader worker processes (-1: automatic, leaving cores for training and the GUI).
    num_threads : int
        CPU threads for torch (0: every core; the GUI's child asks for one less).
    amp : bool
        Mixed precision (bfloat16, or float16 with loss scaling) on CUDA; ignored elsewhere.
    channels_last : bool
        ``channels_last_3d`` memory format on CUDA (off by default: it made the large U-Net's bf16 step 1.3x slower on an H200).
    foreground : bool
        Centre patches on the body and place cubes, swaps and planes there (a body mask: Otsu / nonzero / HU);
        ``False`` samples anywhere, air included.
    use_cache : bool
        Train from the prepared dataset (:mod:`napari_ssl.training.prepared`: each scan read, resampled and
        normalised once, kept on disk and read by patches); ``False`` reads every scan into RAM (the older path).
    cache : str or None
        The prepared dataset's folder (shared between runs); ``None``: ``<out>.prepared`` beside the checkpoint folder.
    volumes : tuple
        In-memory scans (:class:`~napari_ssl.io.volume.Volume` or arrays, e.g. napari layers), used with ``data``;
        not written to ``meta.json``.
    """

    pretexts: tuple[str, ...] = ("rubik",)
    data: tuple[str, ...] = ()
    out: str = "napari-ssl-pretrain"
    steps: int = 1000
    batch_size: int | None = None
    patch_size: int | None = None
    backbone: str | None = None
    device: str = "auto"
    seed: int = 0
    resume: str | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-5
    schedule: str = "constant"
    minutes: float | None = None
    weights: Mapping[str, float] = field(default_factory=dict)
    pretext_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    spacing: tuple[float, float, float] | None = None
    normalization: Normalization | None = None
    val_fraction: float = 0.2
    val_samples: int = 8
    save_every: int = 500
    num_workers: int = -1
    num_threads: int = 0
    amp: bool = True
    channels_last: bool = False
    foreground: bool = True
    use_cache: bool = True
    cache: str | None = None
    volumes: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        pretexts = (self.pretexts,) if isinstance(self.pretexts, str) else tuple(self.pretexts)
        pretexts = tuple(p.strip().lower() for name in pretexts for p in name.split(",") if p.strip())
        from napari_ssl.pretext import registry

        known = registry.names()
        bad = [p for p in pretexts if p not in known]
        if not pretexts or bad or len(set(pretexts)) != len(pretexts):
            raise ValueError(
                f"pretext must be distinct names among {known}, got {','.join(pretexts) or 'none'}"
            )
        object.__setattr__(self, "pretexts", pretexts)
        object.__setattr__(
            self,
            "data",
            tuple(str(d) for d in ((self.data,) if isinstance(self.data, (str, Path)) else self.data)),
        )
        object.__setattr__(self, "volumes", tuple(self.volumes))
        if not self.data and not self.volumes:
            raise ValueError("no data: give scan files or folders (--data) or in-memory volumes")
        for name, low in (("steps", 1), ("batch_size", 1), ("val_samples", 0), ("save_every", 0)):
            if getattr(self, name) is not None and int(getattr(self, name)) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.patch_size is not None and (self.patch_size < 16 or self.patch_size % 16):
            raise ValueError(
                f"patch_size must be a multiple of 16 voxels (four 2x poolings of the U-Net), got {self.patch_size}"
            )
        if self.patch_size == 16:
            raise ValueError("patch_size 16 leaves one voxel at the U-Net's bottleneck (four 2x poolings), where "
                             "instance normalisation cannot train: use 32 or more")
        if self.backbone is not None:
            from napari_ssl.models.sizes import SIZES

            if self.backbone not in SIZES:
                raise ValueError(f"backbone must be one of {tuple(SIZES)}, got {self.backbone!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.schedule not in ("constant", "cosine", "poly"):
            raise ValueError(f"schedule must be 'constant', 'cosine' or 'poly', got {self.schedule!r}")
        if self.minutes is not None and not (float(self.minutes) > 0 and math.isfinite(float(self.minutes))):
            raise ValueError(f"minutes must be a positive number, got {self.minutes}")
        unknown = set(self.weights) - set(pretexts)
        if unknown:
            raise ValueError(f"weights given for pretexts not in the run: {sorted(unknown)}")
        if any(float(w) < 0 for w in self.weights.values()):
            raise ValueError(f"loss weights must be >= 0, got {dict(self.weights)}")
        if isinstance(self.normalization, Mapping):
            object.__setattr__(self, "normalization", Normalization.from_dict(self.normalization))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", mm_spacing(self.spacing))
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (without in-memory ``volumes``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "volumes"}
        out["normalization"] = None if self.normalization is None else self.normalization.to_dict()
        out["weights"] = dict(self.weights)
        out["pretext_options"] = {k: dict(v) for k, v in self.pretext_options.items()}
        return json.loads(json.dumps(out))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **changes: Any) -> PretrainConfig:
        """Build from a dict (``meta.json``'s ``config`` or a ``--config`` file); unknown keys are refused."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        values = dict(data)
        values.update(changes)
        for key in ("pretexts", "data"):
            if key in values and isinstance(values[key], list):
                values[key] = tuple(values[key])
        if isinstance(values.get("spacing"), list):
            values["spacing"] = tuple(values["spacing"])
        return cls(**values)


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
    from_model : str or None
        A segmenter checkpoint to continue (``--from``): the whole network starts from its weights, with its plan
        (spacing, patch, normalisation, orientation), classes and input channels; ``classes`` may be left out (given,
        they must agree). The new model is a new version written to ``out``, which must be another folder.
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
    val_fraction : float, optional
        Cases held out for the validation Dice (and the best weights); with a single case, the last ``val_fraction``
        of its slices (first axis after reorientation) are held out instead. Default (``None``): a fifth with at least
        :data:`HOLD_OUT_MIN_CASES` labelled cases, none below (every case trains, the last weights are kept):
        :func:`held_out_fraction`.
    val_images, val_labels : tuple of str
        An explicit held-out set (then nothing is split off the training cases).
    foreground_ratio : float
        Fraction of the patches forced onto the foreground (nnU-Net: a third).
    case_weights : tuple of float
        How often each training case (``images`` then ``pairs``, in order) gives a patch, relative to the others;
        empty: all alike. The correction loop weights a user's corrections as much as all the model's own cases.
    channel_dropout : float, optional
        With several input channels, the share of patches in which one random channel is blanked (its background
        value): modality dropout, so a structure is learnt from every modality that shows it. Default:
        :data:`~napari_ssl.training.augment.CHANNEL_DROPOUT` with several channels (BraTS, four modalities: the
        unseen case FLAIR hides, 0.17 -> 0.52-0.62 in three of four runs; docs/brats_four_channels.md), 0 with one.
    annotated : {"all", "slices"}
        ``"all"``: every voxel of a label volume is labelled (0 is background). ``"slices"``: only the slices (along
        the label array's first axis, the one napari slices through) holding a painted voxel are; the others are
        unlabelled and skipped by the loss and the held-out Dice (nnU-Net's ignore label): paint every 5th slice.
    ignore_label : int, optional
        A source label value meaning "unlabelled" (nnU-Net's ``ignore`` class): its voxels are skipped likewise.
    augment : bool
        Spatial and intensity augmentation (MONAI transforms).
    mirror : bool, optional
        Random flips; default (``None``) on for lesions and unnamed classes, off for a lateralised class (a ``left``
        / ``right`` name) and named anatomy (``liver``): :func:`napari_ssl.classes.mirror_by_default`.
    val_every : int
        Validate every this many steps (0: eight times over the budget).
    keep : {"best", "last"}
        The weights saved: ``"best"`` held-out Dice over the run's validations, or ``"last"`` (nnU-Net's final
        checkpoint; the held-out Dice is still measured and reported).
    transfer : {"auto", "encoder", "encoder+decoder"}
        Which pretrained parts to load; ``auto`` adds the decoder a pretext trained when it transfers (not context restoration's).
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
    from_model: str | None = None
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
    val_fraction: float | None = None
    val_images: tuple[str, ...] = ()
    val_labels: tuple[str, ...] = ()
    foreground_ratio: float = 1 / 3
    channel_dropout: float | None = None
    case_weights: tuple[float, ...] = ()
    annotated: str = "all"
    ignore_label: int | None = None
    augment: bool = True
    mirror: bool | None = None
    val_every: int = 0
    keep: str = "best"
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
        object.__setattr__(self, "case_weights", tuple(float(w) for w in self.case_weights))
        if self.case_weights and (len(self.case_weights) != len(self.images) + len(self.pairs)
                                  or not all(w > 0 and math.isfinite(w) for w in self.case_weights)):
            raise ValueError(f"case_weights: one positive weight per training case ({len(self.images) + len(self.pairs)}"
                             f"), got {self.case_weights}")
        if self.from_model is not None:
            object.__setattr__(self, "from_model", str(self.from_model))
            if self.pretrained is not None:
                raise ValueError("give either --from (continue a segmenter) or --pretrained (start a new one), not both")
            out, src = Path(self.out).expanduser().resolve(), Path(self.from_model).expanduser().resolve()
            if out == src:
                raise ValueError(f"--out {self.out} is the --from folder: the continued model is a new version, "
                                 "give it another --out so the previous one is kept")
            if src in out.parents:
                raise ValueError(f"--out {self.out} is inside the --from folder: give the new version a folder "
                                 "of its own so the previous one is kept as it is")
        if not self.classes and self.from_model is None:
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
        if self.val_fraction is not None and not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.foreground_ratio <= 1:
            raise ValueError(f"foreground_ratio must be in [0, 1], got {self.foreground_ratio}")
        if self.channel_dropout is not None and not 0 <= self.channel_dropout <= 1:
            raise ValueError(f"channel_dropout must be in [0, 1], got {self.channel_dropout}")
        if self.annotated not in ("all", "slices"):
            raise ValueError(f"annotated must be 'all' or 'slices', got {self.annotated!r}")
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {self.keep!r}")
        if self.ignore_label is not None and not 0 < int(self.ignore_label) < 2**16:
            raise ValueError(f"ignore_label must be a positive label value, got {self.ignore_label}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.transfer not in ("auto", "encoder", "encoder+decoder"):
            raise ValueError(f"transfer must be 'auto', 'encoder' or 'encoder+decoder', got {self.transfer!r}")
        if isinstance(self.normalization, Mapping):
            object.__setattr__(self, "normalization", Normalization.from_dict(self.normalization))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", mm_spacing(self.spacing))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (without in-memory pairs)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("pairs", "val_pairs")}
        out["normalization"] = None if self.normalization is None else self.normalization.to_dict()
        return json.loads(json.dumps(out))


__all__ = ["HOLD_OUT_MIN_CASES", "VAL_FRACTION", "FinetuneConfig", "PretrainConfig", "held_out_fraction"]
