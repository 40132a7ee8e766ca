"""Fine-tuning: a segmentation U-Net from a pretrained encoder (or from scratch), fed to the one training loop.

``finetune(config)`` yields :mod:`napari_ssl.events` (``Started``, ``Progress`` every step, ``Validated`` with the
held-out Dice per class, ``Saved``, ``Finished``) like ``engine.pretrain``; closing it (cancel) saves a valid
checkpoint. The recipe comes from the data (:mod:`napari_ssl.plan`: spacing, patch, batch, normalisation, steps;
from a pretrained checkpoint its spacing and normalisation), the cases are prepared by :mod:`napari_ssl.preprocess`
exactly as inference prepares a scan, and the patches by :mod:`napari_ssl.training.augment` (foreground oversampling and
MONAI augmentation). Dice + cross-entropy, warm-up then poly decay, sliding-window validation on held-out cases
during training, and the best held-out weights are the ones saved. The checkpoint (``kind: "segment"``) records
what inference needs: classes, backbone, channels, the plan, orientation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from napari_ssl.classes import (
    IGNORE,
    PALETTE,
    SegClass,
    dice_per_class,
    mirror_by_default,
    parse_classes,
    read_class_names,
    region_members,
    remap_labels,
)
from napari_ssl.events import Validated
from napari_ssl.training.cases import channel_names, check_pair, prepare_case, read_pairs
from napari_ssl.training.config import HOLD_OUT_MIN_CASES, VAL_FRACTION, FinetuneConfig, held_out_fraction


def finetune(config: FinetuneConfig) -> Iterator[Any]:
    """Fine-tune on ``config``; yields events (see the module docstring).

    Bad input (missing file, labels off the image grid, label volume without any of the classes, 2D image,
    pretrained checkpoint of another kind) raises ``ValueError`` / ``OSError`` at the first ``next()``, before
    any training and before anything is written.
    """
    from napari_ssl.training.trainer import LoopSettings, train

    task = FinetuneTask(config)
    settings = LoopSettings(
        steps=1, out=config.out, lr=config.lr, weight_decay=config.weight_decay, schedule="poly",
        warmup=config.warmup, minutes=config.minutes, device=config.device, seed=config.seed,
        num_threads=config.num_threads, amp=config.amp, save_every=config.save_every, val_every=config.val_every,
        keep_best=config.keep == "best",
    )
    yield from train(task, settings)


def dice_ce_loss(logits: Any, target: Any, ignore: int = IGNORE) -> Any:
    """Dice + cross-entropy of ``logits`` (B, K, ...) against class indices ``target`` (B, 1, ...), skipping voxels
    whose target is ``ignore`` (unlabelled: nnU-Net's ignore label): they add nothing to either term, so their
    gradient is exactly zero. Without ignored voxels it equals MONAI's
    ``DiceCELoss(to_onehot_y=True, softmax=True, batch=True)``; a batch with no labelled voxel gives 0.
    """
    import torch
    import torch.nn.functional as F
    from monai.losses import DiceLoss

    t = target[:, 0] if target.ndim == logits.ndim else target
    t = t.long()
    keep = t != ignore
    t = torch.where(keep, t, torch.zeros_like(t))
    ce = F.cross_entropy(logits, t, reduction="none")
    ce = (ce * keep).sum() / keep.sum().clamp(min=1)
    mask = keep[:, None].to(logits.dtype)
    probs = torch.softmax(logits, 1) * mask  # as nnU-Net: ignored voxels leave prediction and target alike
    onehot = F.one_hot(t, logits.shape[1]).movedim(-1, 1).to(logits.dtype) * mask
    return DiceLoss(batch=True)(probs, onehot) + ce


def held_out_dice(pred: np.ndarray, labels: np.ndarray, classes: Any) -> dict[str, float]:
    """:func:`~napari_ssl.classes.dice_per_class` on the labelled voxels only: where ``labels`` is :data:`IGNORE`
    neither the prediction nor the target counts."""
    labelled = labels != IGNORE
    return dice_per_class(np.where(labelled, pred, 0), np.where(labelled, labels, 0), classes)


def has_class(labels: np.ndarray) -> bool:
    """Whether class-index ``labels`` hold a voxel of any class (not background, not unlabelled)."""
    return bool(np.any((labels != 0) & (labels != IGNORE)))


__all__ = [
    "IGNORE",
    "PALETTE",
    "FinetuneConfig",
    "FinetuneTask",
    "SegClass",
    "Validated",
    "dice_ce_loss",
    "dice_per_class",
    "finetune",
    "held_out_dice",
    "parse_classes",
    "prepare_case",
    "read_class_names",
    "region_members",
    "remap_labels",
]


# ---------------------------------------------------------------- the task
class FinetuneTask:
    """Cases, plan, patches, Dice+CE loss and held-out Dice for :class:`~napari_ssl.training.trainer.Trainer`."""

    kind = "segment"
    cpu_bfloat16_ok = True  # Dice+CE learns as well in bfloat16 on a CPU (BraTS, liver measured)

    def __init__(self, config: FinetuneConfig) -> None:
        self.config = config
        self.n_train = self.n_val = 0
        self.pretrained_info: dict[str, Any] | None = None

    @property
    def samples_per_step(self) -> int:
        return self.plan.batch_size

    def _pretrained(self) -> tuple[Any, Any]:
        """The typed pretrained checkpoint (:mod:`napari_ssl.meta`) and the backbone it hands on, or ``(None, None)``."""
        from napari_ssl import checkpoint

        cfg = self.config
        if cfg.pretrained is None:
            return None, None
        try:
            pre = checkpoint.open_checkpoint(cfg.pretrained, kinds=("pretrain", "segment"))
        except checkpoint.CheckpointKindError as exc:
            raise ValueError(f"{cfg.pretrained} is a {exc.kind!r} checkpoint, not a pretraining or segmentation one") \
                from None
        # a 2D backbone alone (imaging planes) is inflated to 3D (I3D: each 2D kernel spread along z)
        return pre, pre.backbone

    def setup(self, trainer: Any) -> Any:
        import torch

        from napari_ssl.models import BackboneSpec, build_unet
        from napari_ssl.plan import fingerprint, make_plan
        from napari_ssl.training.augment import CHANNEL_DROPOUT, PatchSampler, loader_threads

        cfg = self.config
        self.trainer = trainer
        names = read_class_names(cfg.classes_file) if cfg.classes_file else None
        prev = self._previous() if cfg.from_model is not None else None
        if prev is not None:
            self.classes = self._previous_classes(prev, names)
        else:
            self.classes = parse_classes(cfg.classes, names)
        self.ignore_label = cfg.ignore_label
        if self.ignore_label is None and prev is not None and not names:
            self.ignore_label = prev.ignore_label
        if self.ignore_label is None and names:  # nnU-Net's convention: a label named "ignore" is unlabelled
            self.ignore_label = next((i for i, n in names.items() if n.strip().lower() == "ignore"), None)
        if self.ignore_label is not None and any(c.ids == (self.ignore_label,) for c in self.classes):
            raise ValueError(f"label {self.ignore_label} is the ignore label (unlabelled), it cannot be a class")
        pmeta, pspec = self._pretrained()
        if pspec is not None and cfg.backbone is not None and cfg.backbone != pspec.size:
            raise ValueError(
                f"--backbone {cfg.backbone} differs from the pretrained checkpoint's backbone {pspec.size}; "
                "leave it out (it comes from the checkpoint)"
            )
        raw = read_pairs(cfg.images, cfg.labels, cfg.pairs)
        raw_val = read_pairs(cfg.val_images, cfg.val_labels, cfg.val_pairs)
        n_chan = len(raw[0][0])
        for chans, _, _ in raw + raw_val:
            if len(chans) != n_chan:
                raise ValueError(f"every case needs the same number of channels: {n_chan} and {len(chans)} given")
        raw = [(c, check_pair(c, lab, lenient), lenient) for c, lab, lenient in raw]
        raw_val = [(c, check_pair(c, lab, lenient), lenient) for c, lab, lenient in raw_val]
        present = set().union(*[set(np.unique(lab.array).tolist()) for _, lab, _ in raw])
        missing = [c for c in self.classes if not present.intersection(c.ids)]
        if missing:
            raise ValueError(
                "no label file holds "
                + ", ".join(f"class {c.name} (ids {', '.join(map(str, c.ids))})" for c in missing)
                + f"; the labels hold ids {', '.join(str(int(v)) for v in sorted(present) if v)}"
            )
        self.channel_names = channel_names([c for c, _, _ in raw])  # by modality, never one case's name
        inherit = {}
        if pmeta is not None:
            inherit = {"spacing": pmeta.spacing, "normalization": pmeta.normalization, "backbone": pspec.size}
        fp = fingerprint([c for c, _, _ in raw], [lab for _, lab, _ in raw],
                         label_ids={i for c in self.classes for i in c.ids})  # the classes trained: nnU-Net's foreground
        if prev is not None:
            self.channel_names = self._previous_channels(prev, n_chan)
            self.plan = self._previous_plan(prev, fp, trainer)
        else:
            self.plan = make_plan(fp, trainer.device.type, spacing=cfg.spacing, patch_size=cfg.patch_size,
                                  batch_size=cfg.batch_size, normalization=cfg.normalization, steps=cfg.steps,
                                  backbone=cfg.backbone, inherit=inherit,
                                  mixed_precision=trainer.amp_dtype is not None)
        self.channel_dropout = cfg.channel_dropout
        if self.channel_dropout is None:
            self.channel_dropout = CHANNEL_DROPOUT if n_chan > 1 and cfg.augment else 0.0
        if self.channel_dropout and n_chan > 1 and cfg.augment:
            self._note(f"modality dropout: one of the {n_chan} channels blanked in {self.channel_dropout:.0%} of the "
                       "patches, so each structure is learnt from every modality that shows it")
        self.planned_steps = self.plan.steps
        self.fingerprint = fp
        plan = self.plan
        how = {"annotated": cfg.annotated, "ignore_label": self.ignore_label}
        cases = [prepare_case(c, lab, self.classes, plan.spacing, plan.normalization, **how) for c, lab, _ in raw]
        for case, weight in zip(cases, cfg.case_weights, strict=False):
            case.weight = weight
        val = [prepare_case(c, lab, self.classes, plan.spacing, plan.normalization, **how) for c, lab, _ in raw_val]
        self.val_mode = "explicit" if val else "none"
        fraction = held_out_fraction(cfg.val_fraction, len(cases))
        if cfg.val_fraction is None and not val and cases:
            self._note(f"held out: {fraction:.0%} of the cases, for the held-out Dice and the best weights" if fraction
                       else f"held out: none; all {len(cases)} case(s) train and the last weights are kept (below "
                       f"{HOLD_OUT_MIN_CASES} cases a held-out {VAL_FRACTION:.0%} costs more than it tells; --val-fraction "
                       f"{VAL_FRACTION:g} holds one out)")
        if not val and fraction > 0:
            if len(cases) >= 2:
                order = np.random.default_rng([cfg.seed, 11]).permutation(len(cases))
                n_val = min(len(cases) - 1, max(1, round(len(cases) * fraction)))
                val = [cases[i] for i in order[:n_val]]
                cases = [cases[i] for i in sorted(order[n_val:])]
                self.val_mode = "cases"
            else:  # one scan: hold out its last slices
                only = cases[0]
                cut = max(1, round(only.labels.shape[0] * (1 - fraction)))
                val = [type(only)(only.name + " (held-out slices)", only.image[:, cut:], only.labels[cut:],
                                  only.background)]
                cases = [type(only)(only.name, only.image[:, :cut], only.labels[:cut], only.background)]
                self.val_mode = f"slices {cut}:{only.labels.shape[0]} of axis 0"
        n_lab = min(cfg.n_labelled or max(1, round(len(cases) * cfg.label_fraction)), len(cases))
        pick = np.random.default_rng([cfg.seed, 13]).permutation(len(cases))[:n_lab]
        cases = [cases[i] for i in sorted(pick)]
        if not any(has_class(c.labels) for c in cases):
            raise ValueError("the labelled training cases hold none of the classes (after the hold-out split)")
        self.cases, self.val_cases = cases, val
        self.n_train, self.n_val = len(cases), len(val)
        self.mirror = cfg.mirror if cfg.mirror is not None else mirror_by_default(self.classes)
        self.sampler = PatchSampler(cases, plan.patch_size, len(self.classes), fg_ratio=cfg.foreground_ratio,
                                    augment=cfg.augment, mirror=self.mirror, channel_dropout=self.channel_dropout,
                                    seed=cfg.seed + 7919 * trainer.rank)  # each torchrun process its own patches
        # a GPU step outpaces one augmenting thread; on a CPU the step itself needs the cores
        self.loader_threads = loader_threads(trainer.device.type)

        size = plan.backbone
        if prev is not None:
            self.spec = prev.backbone
        else:
            self.spec = BackboneSpec(size=size, spatial_dims=3, in_channels=n_chan,
                                     **({"features": pspec.features} if pspec is not None else {}))
        torch.manual_seed(cfg.seed)
        net = build_unet(self.spec, out_channels=len(self.classes) + 1)
        self.pretrained_keys: set[str] = set()
        if pmeta is not None:
            self.pretrained_info = self._load_pretrained(net, pmeta)
        if prev is not None:
            self._load_previous(net, prev)
        self.loss_fn = dice_ce_loss  # MONAI's Dice + CE, skipping unlabelled voxels (IGNORE)
        self.net = net
        return net

    # ---- --from: continue a segmenter (a new version; the previous one is only read)
    def _previous(self) -> Any:
        """The typed segmenter checkpoint ``--from`` names (a pretraining one is refused in one sentence)."""
        from napari_ssl import checkpoint
        from napari_ssl.preprocess import ORIENTATION

        src = self.config.from_model
        try:
            prev = checkpoint.open_checkpoint(src, kinds=("segment",))
        except checkpoint.CheckpointKindError as exc:
            if exc.kind == "pretrain":
                raise ValueError(f"{src} is a pretraining checkpoint: give it to --pretrained (a new segmenter from "
                                 "its encoder); --from continues a fine-tuned segmenter") from None
            raise ValueError(f"{src} is not a segmenter checkpoint, --from continues a fine-tuned one") from None
        if prev.orientation != ORIENTATION:
            raise ValueError(f"{src} was trained in {prev.orientation} orientation, this napari-ssl trains in "
                             f"{ORIENTATION}; fine-tune a new segmenter instead")
        return prev

    def _previous_classes(self, prev: Any, names: Mapping[int, str] | None) -> list[SegClass]:
        """The previous version's classes (names, ids, colours); ``--classes`` given too must name the same."""
        cfg = self.config
        if cfg.classes:
            own = {i: c.name for c in prev.classes for i in c.ids if len(c.ids) == 1}
            asked = parse_classes(cfg.classes, {**own, **(names or {})})
            if [(c.name, c.ids) for c in asked] != [(c.name, c.ids) for c in prev.classes]:
                def show(classes: Any) -> str:
                    return ", ".join(f"{c.name} (ids {'+'.join(map(str, c.ids))})" for c in classes)

                raise ValueError(f"--classes {show(asked)} differ from the classes of {cfg.from_model}, "
                                 f"{show(prev.classes)}; leave --classes out (they come from the model)")
        return list(prev.classes)

    def _note(self, text: str) -> None:
        """Add a line to the plan the run prints (what the data or the defaults decided)."""
        self.plan = replace(self.plan, notes=(*self.plan.notes, text))

    def _previous_channels(self, prev: Any, n_chan: int) -> list[str]:
        if n_chan != prev.in_channels:
            raise ValueError(f"{self.config.from_model} takes {prev.in_channels} input channel(s) "
                             f"({', '.join(prev.channel_names)}) and the images give {n_chan}; give each case as "
                             "the same channels, in the same order")
        return list(prev.channel_names)

    def _previous_plan(self, prev: Any, fp: Any, trainer: Any) -> Any:
        """The previous version's plan (spacing, patch, normalisation, backbone); this run's budget and batch."""
        from napari_ssl.plan import check_patch_size, make_plan

        cfg = self.config
        fixed = {"spacing": prev.spacing, "patch_size": prev.patch_size, "normalization": prev.normalization,
                 "backbone": prev.backbone.size}
        given = {"spacing": cfg.spacing, "patch_size": None if cfg.patch_size is None else check_patch_size(
            cfg.patch_size), "normalization": cfg.normalization, "backbone": cfg.backbone}
        for key, value in given.items():
            if value is not None and value != fixed[key]:
                flag = "--" + key.replace("_", "-")
                raise ValueError(f"{flag} differs from the plan of {cfg.from_model} ({fixed[key]}); leave it out "
                                 "(a continued model keeps its plan)")
        batch = cfg.batch_size or (prev.plan.batch_size if prev.plan is not None else None)
        plan = make_plan(fp, trainer.device.type, spacing=prev.spacing, patch_size=prev.patch_size,
                         batch_size=batch, normalization=prev.normalization, steps=cfg.steps,
                         backbone=prev.backbone.size, mixed_precision=trainer.amp_dtype is not None)
        sources = {**plan.sources, **dict.fromkeys(fixed, "checkpoint")}
        return replace(plan, sources=sources, notes=(*plan.notes, f"continued from {cfg.from_model}"))

    def _load_previous(self, net: Any, prev: Any) -> None:
        """The whole network (encoder, decoder, head) from the previous version; its provenance for the meta."""
        from napari_ssl import checkpoint

        state = checkpoint.load_weights(prev.path, device="cpu")  # size and SHA-256 checked
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"{self.config.from_model}: its weights do not fit its network ({first})") from None
        self.pretrained_info = dict(prev.pretrained) if prev.pretrained else None
        self.continued_from = {
            "path": str(prev.path), "step": prev.step, "model_version": prev.model_version,
            "sha256": (prev.files or {}).get(checkpoint.MODEL_FILE, {}).get("sha256"),
        }
        self.model_version = prev.model_version + 1

    def _load_pretrained(self, net: Any, pre: Any) -> dict[str, Any]:
        from napari_ssl import checkpoint
        from napari_ssl.models import has_decoder as trained_decoder
        from napari_ssl.models import load_parts, sub_state

        cfg = self.config
        state, _ = checkpoint.load(cfg.pretrained, device="cpu")
        pretexts = list(getattr(pre, "pretexts", ()))
        prefixes = getattr(pre, "prefixes", None) or {}
        inflated = False
        if pre.kind == "pretrain" and "3d" not in prefixes and "2d" in prefixes:
            # planes trained a whole 2D U-Net: it is inflated to 3D
            prefix, has_decoder, inflated = prefixes["2d"], trained_decoder(pretexts, "2d"), True
        elif pre.kind == "pretrain":
            prefix = prefixes.get("3d", "backbone3d.")
            has_decoder = trained_decoder(pretexts)
        else:
            prefix, has_decoder = "", True
        parts = ["encoder"]
        if cfg.transfer == "encoder+decoder" or (cfg.transfer == "auto" and has_decoder):
            parts.append("decoder")
        picked = sub_state(state, prefix, parts)
        own = net.state_dict()
        if inflated:
            from napari_ssl.models.backbone import inflate_2d

            picked = inflate_2d(picked)
        for key, value in list(picked.items()):  # a 1-channel encoder on a multi-channel input: spread its filters
            if key in own and value.ndim == 5 and own[key].shape[1] != value.shape[1] and value.shape[1] == 1:
                picked[key] = value.repeat(1, own[key].shape[1], 1, 1, 1) / own[key].shape[1]
        loaded = load_parts(net, picked, prefix="", parts=parts)
        self.pretrained_keys = set(loaded)
        return {"path": str(cfg.pretrained), "kind": pre.kind, "pretexts": pretexts,
                "parts": parts, "n_tensors": len(loaded), "step": pre.step, "inflated_2d": inflated}

    def param_groups(self, model: Any) -> list[dict[str, Any]]:
        scale = self.config.pretrained_lr_scale
        pre = [p for k, p in model.named_parameters() if k in self.pretrained_keys]
        rest = [p for k, p in model.named_parameters() if k not in self.pretrained_keys]
        groups = [{"params": rest, "lr_scale": 1.0}]
        if pre:
            groups.append({"params": pre, "lr_scale": scale})
        return groups

    def batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
        yield from self.sampler.batches(start_step, self.trainer.settings.steps, self.plan.batch_size,
                                        workers=self.loader_threads)

    def losses(self, model: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        logits = model(batch["image"])
        loss = self.loss_fn(logits.float(), batch["label"])
        return {"loss": loss, "dice_ce": loss.detach()}

    def validate(self, model: Any) -> dict[str, float]:
        """Mean held-out Dice per class (sliding window over each held-out case); ``score`` is their mean."""
        from napari_ssl.inference.sliding import predict_labels
        from napari_ssl.preprocess import pad_to

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
            for name, value in held_out_dice(pred, case.labels, self.classes).items():
                totals.setdefault(name, []).append(value)
        dice = {name: float(np.mean(v)) for name, v in totals.items()}
        mean = float(np.mean(list(dice.values())))
        out = {**{f"dice/{k}": v for k, v in dice.items()}, "dice/mean": mean}
        if any(has_class(c.labels) for c in self.val_cases):  # a held-out set without any class selects nothing
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
            "channel_dropout": self.sampler.channel_dropout if self.spec.in_channels > 1 else 0.0,
            "pretrained": self.pretrained_info,
            "model_version": getattr(self, "model_version", 1),
            "continued_from": getattr(self, "continued_from", None),
            "n_train": self.n_train,
            "n_val": self.n_val,
            "validation": self.val_mode,
            "train_cases": [c.name for c in self.cases],
            "ignore_label": self.ignore_label,
            # the share of the training voxels that are labelled (below 1: partial annotations)
            "labelled_fraction": float(sum(np.count_nonzero(c.labels != IGNORE) for c in self.cases)
                                       / max(1, sum(c.labels.size for c in self.cases))),
        }
