"""Training loops as generators of events: ``pretrain(config)`` here, ``finetune(config)`` delegated.

``pretrain`` yields :mod:`napari_ssl.events` (``Started``, ``Progress`` every step, ``Saved``, ``Finished``).
Closing the generator (cancel) or a ``KeyboardInterrupt`` saves a valid checkpoint in its ``finally`` block.
The same generator runs in the napari dock (through :mod:`napari_ssl.runner`, in a child process), behind the
CLI's progress bar, and under ``torchrun`` (DistributedDataParallel, DistributedSampler, gloo on CPU; only
rank 0 writes).

Reproducibility: sample ``i`` of the run is drawn from ``default_rng([seed, i])`` and step ``s`` uses samples
``s * B * W ... (s + 1) * B * W - 1``, so resuming from a checkpoint at step ``s`` continues exactly as the
uninterrupted run would (same weights on CPU).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from napari_ssl import events
from napari_ssl.data import Normalization

PRETEXT_NAMES = ("rubik", "context", "planes")
_PRETEXT_CLASSES = {
    "rubik": ("napari_ssl.pretext.rubik", "RubikCube"),
    "context": ("napari_ssl.pretext.context", "ContextRestoration"),
    "planes": ("napari_ssl.pretext.planes", "ImagingPlanes"),
}


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of a pretraining run (stored in the checkpoint's ``meta.json`` as ``config``).

    Parameters
    ----------
    pretexts : tuple of str
        One or more of ``rubik``, ``context``, ``planes``; combined runs share the 3D encoder.
    data : tuple of str
        Scan files or folders (searched recursively; DICOM series folders count as one scan).
    out : str
        Checkpoint folder (rewritten atomically at every save).
    steps : int
        Final step count (a resumed run continues up to it).
    batch_size, patch_size : int
        Samples per step and process; 3D patch edge in voxels (``None``: device default, 48 on CPU).
    backbone : str or None
        ``tiny``, ``small``, ``medium``, ``large``; ``None`` follows the device (small on CPU).
    device : str
        ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda:1``, ``mps``.
    seed : int
        Seed of the initial weights and of every sample.
    resume : str or None
        Checkpoint folder to continue from (its weights, optimizer state and step).
    lr, weight_decay : float
        AdamW settings; ``schedule`` is ``constant`` (default, so budgets can be extended on resume)
        or ``cosine`` (decays to 0 at ``steps``).
    weights : mapping of str to float
        Loss weight of each pretext in a combined run (default 1).
    pretext_options : mapping of str to mapping
        Constructor arguments of each pretext (e.g. ``{"rubik": {"gap": 4}}``); unset ones get defaults
        scaled to the patch size.
    spacing : tuple of float or None
        Resample every scan to this voxel size (mm, z y x) first.
    normalization : Normalization
        Intensity normalisation (stored in the checkpoint).
    val_fraction, val_samples : float, int
        Scans held out for the final metrics, and how many samples the metrics use.
    save_every : int
        Save every this many steps (0: only at the end and on cancel).
    num_workers : int
        DataLoader worker processes (-1: automatic, leaving cores for training and the GUI).
    num_threads : int
        CPU threads for torch (0: all cores but one, leaving one for the GUI).
    amp : bool
        Mixed precision (bfloat16, or float16 with loss scaling) on CUDA; ignored elsewhere.
    channels_last : bool
        ``channels_last_3d`` memory format on CUDA.
    volumes : tuple
        In-memory scans (:class:`~napari_ssl.volume.Volume` or arrays, e.g. napari layers), used with ``data``;
        not written to ``meta.json``.
    """

    pretexts: tuple[str, ...] = ("rubik",)
    data: tuple[str, ...] = ()
    out: str = "napari-ssl-pretrain"
    steps: int = 1000
    batch_size: int = 2
    patch_size: int | None = None
    backbone: str | None = None
    device: str = "auto"
    seed: int = 0
    resume: str | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-5
    schedule: str = "constant"
    weights: Mapping[str, float] = field(default_factory=dict)
    pretext_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    spacing: tuple[float, float, float] | None = None
    normalization: Normalization = field(default_factory=Normalization)
    val_fraction: float = 0.2
    val_samples: int = 8
    save_every: int = 500
    num_workers: int = -1
    num_threads: int = 0
    amp: bool = True
    channels_last: bool = False
    volumes: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        pretexts = (self.pretexts,) if isinstance(self.pretexts, str) else tuple(self.pretexts)
        pretexts = tuple(p.strip().lower() for name in pretexts for p in name.split(",") if p.strip())
        bad = [p for p in pretexts if p not in PRETEXT_NAMES]
        if not pretexts or bad or len(set(pretexts)) != len(pretexts):
            raise ValueError(
                f"pretext must be distinct names among {PRETEXT_NAMES}, got {','.join(pretexts) or 'none'}"
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
            if int(getattr(self, name)) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.patch_size is not None and self.patch_size < 32:
            raise ValueError(
                f"patch_size must be >= 32 voxels (four 2x poolings of the U-Net), got {self.patch_size}"
            )
        if self.backbone is not None:
            from napari_ssl.models.sizes import SIZES

            if self.backbone not in SIZES:
                raise ValueError(f"backbone must be one of {tuple(SIZES)}, got {self.backbone!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        unknown = set(self.weights) - set(pretexts)
        if unknown:
            raise ValueError(f"weights given for pretexts not in the run: {sorted(unknown)}")
        if any(float(w) < 0 for w in self.weights.values()):
            raise ValueError(f"loss weights must be >= 0, got {dict(self.weights)}")
        if isinstance(self.normalization, Mapping):
            object.__setattr__(self, "normalization", Normalization.from_dict(self.normalization))
        if self.spacing is not None:
            sp = tuple(
                float(s)
                for s in (self.spacing if isinstance(self.spacing, (list, tuple)) else [self.spacing] * 3)
            )
            if len(sp) != 3 or min(sp) <= 0:
                raise ValueError(f"spacing must be 3 positive mm values (z, y, x), got {self.spacing!r}")
            object.__setattr__(self, "spacing", sp)
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (without in-memory ``volumes``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "volumes"}
        out["normalization"] = self.normalization.to_dict()
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


def make_pretext(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The pretext object ``name`` with constructor ``options``."""
    import importlib

    module_name, class_name = _PRETEXT_CLASSES[name]
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:  # pragma: no cover - pretext package incomplete
        raise ValueError(f"pretext {name!r} is not available in this installation ({exc})") from exc
    try:
        return cls(**dict(options or {}))
    except TypeError as exc:
        raise ValueError(f"bad options for pretext {name!r}: {exc}") from exc


def default_pretext_options(name: str, patch: int) -> dict[str, Any]:
    """Defaults scaled to the patch: Rubik's gap ~ a quarter of a cell (the paper's 10 voxels at most),
    context patches of ``patch // 6`` voxels, plane images of ``patch`` x ``patch`` pixels."""
    if name == "rubik":
        return {"gap": int(min(10, max(1, (patch // 2) // 4)))}
    if name == "context":
        return {"patch_size": max(2, patch // 6)}
    if name == "planes":  # planes as large as the 3D patch, so one backbone size fits both
        return {"size": patch}
    return {}


def finetune(config: Any) -> Iterator[Any]:
    """Fine-tuning generator: delegates to :func:`napari_ssl.finetune.finetune` (imported on first use)."""
    from napari_ssl.finetune import finetune as _finetune

    yield from _finetune(config)


def pretrain(config: PretrainConfig) -> Iterator[events.Event]:
    """Pretrain on ``config.data`` with ``config.pretexts``; yields events (see the module docstring).

    Bad input (missing path, unreadable scan, patch larger than a scan, unknown option) raises
    ``ValueError`` / ``OSError`` at the first ``next()``, before any training.
    """
    yield from events.run_trainer(_Trainer(config))


__all__ = ["PretrainConfig", "default_pretext_options", "finetune", "make_pretext", "pretrain"]


# ---------------------------------------------------------------- the training loop
def _auto_workers(device_type: str, cores: int) -> int:
    if device_type == "cuda":
        return max(0, min(8, cores - 2))
    return 0 if cores <= 2 else min(4, cores // 4)


class _Trainer:
    """State of one pretraining run; :meth:`run` is the generator behind :func:`pretrain`."""

    def __init__(self, config: PretrainConfig) -> None:
        self.config = config
        self.step = 0
        self.model: Any = None
        self.saved_step = -1
        self.history: dict[str, list[float]] = {}
        self.metrics: dict[str, float] = {}
        self._threads: int | None = None
        self._dist = False

    # ------------------------------------------------------------ setup
    def _setup(self) -> None:
        import torch

        from napari_ssl import checkpoint
        from napari_ssl.data import PretextDataset, SampleSpec, load_volumes, split_volumes
        from napari_ssl.device import (
            default_backbone,
            default_num_threads,
            default_patch_size,
            resolve_device,
        )
        from napari_ssl.models import ModelSpec, PretrainModel

        cfg = self.config
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(cfg.device)
        if device.type == "cuda" and self.world > 1:
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        self.device = device
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.num_workers = _auto_workers(device.type, cores) if cfg.num_workers < 0 else cfg.num_workers
        threads = cfg.num_threads or default_num_threads(
            leave_free=1 + (self.num_workers if device.type == "cpu" else 0)
        )
        if self.world > 1:
            threads = max(1, threads // self.world)
        self._threads = torch.get_num_threads()
        torch.set_num_threads(threads)

        # resume: the checkpoint's choices fill what the config leaves open
        self.resume_meta: dict[str, Any] | None = None
        backbone, patch = cfg.backbone, cfg.patch_size
        if cfg.resume:
            self.resume_meta = checkpoint.read_meta(cfg.resume)
            if self.resume_meta.get("kind") != "pretrain":
                raise ValueError(
                    f"{cfg.resume} is not a pretraining checkpoint (kind {self.resume_meta.get('kind')!r})"
                )
            backbone = backbone or self.resume_meta["model"]["backbone"]
            saved_patch = self.resume_meta["patch_size"]
            patch = patch or int(saved_patch[0] if isinstance(saved_patch, list) else saved_patch)
        self.backbone = backbone or default_backbone(device)
        self.patch = int(patch or default_patch_size(device))

        if self.rank == 0:
            checkpoint.check_target(cfg.out)  # before any work: never replace a folder of other files

        # data
        volumes = load_volumes(
            [*cfg.data, *cfg.volumes], spacing=cfg.spacing, normalization=cfg.normalization
        )
        train, val = split_volumes(volumes, cfg.val_fraction if len(volumes) > 1 else 0.0, cfg.seed)
        # with a single scan nothing is held out: the metrics use fresh samples of it
        held_out = len(volumes) > 1 and cfg.val_fraction > 0
        self.n_train, self.n_val = len(train), (len(val) if held_out else 0)
        self.pretext_options = {
            name: {**default_pretext_options(name, self.patch), **dict(cfg.pretext_options.get(name, {}))}
            for name in cfg.pretexts
        }
        unknown = set(cfg.pretext_options) - set(cfg.pretexts)
        if unknown:
            raise ValueError(f"pretext_options given for pretexts not in the run: {sorted(unknown)}")
        pretexts = {name: make_pretext(name, opts) for name, opts in self.pretext_options.items()}
        sample_spec = SampleSpec(patch=(self.patch,) * 3, pretexts=pretexts)
        per_step = cfg.batch_size * self.world
        self.train_ds = PretextDataset(train, sample_spec, cfg.seed, cfg.steps * per_step)
        self.val_ds = PretextDataset(val, sample_spec, cfg.seed + 1_000_003, max(1, cfg.val_samples))

        # model
        probe = self.train_ds[0]
        rubik = pretexts.get("rubik")
        self.spec = ModelSpec(
            pretexts=cfg.pretexts,
            backbone=self.backbone,
            in_channels=1,
            cube_shape=tuple(probe["rubik.cubes"].shape[-3:]) if rubik is not None else (),
            n_cubes=rubik.grid**3 if rubik is not None else 8,
            n_permutations=rubik.n_permutations if rubik is not None else 100,
            n_views=int(probe["planes.images"].shape[0]) if "planes" in pretexts else 3,
        )
        torch.manual_seed(cfg.seed)
        model = PretrainModel(self.spec).to(device)
        self.core = model
        if self.use_channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.amp_dtype = None
        if cfg.amp and device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        self.start = 0
        if self.resume_meta is not None:
            self._load_resume()
        if self.start >= cfg.steps:
            raise ValueError(
                f"checkpoint {cfg.resume} is already at step {self.start}; ask for more --steps than that"
            )
        self.step = self.start

        if self.world > 1:
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel

            if not dist.is_initialized():
                from datetime import timedelta

                # a lost peer fails the run after this many seconds instead of hanging (PyTorch's default: 30 min)
                timeout = timedelta(seconds=float(os.environ.get("NAPARI_SSL_DIST_TIMEOUT", "1800")))
                dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout)
                self._dist = True
            model = DistributedDataParallel(
                model,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=self.core.unused_parameters_possible(),
            )
        self.model = model

    @property
    def use_channels_last(self) -> bool:
        return bool(
            self.config.channels_last and self.device.type == "cuda" and "planes" not in self.config.pretexts
        )

    def _load_resume(self) -> None:
        from napari_ssl import checkpoint

        cfg = self.config
        assert self.resume_meta is not None
        saved = self.resume_meta.get("model", {})
        if saved != self.spec.to_dict():
            diff = sorted(
                k for k in set(saved) | set(self.spec.to_dict()) if saved.get(k) != self.spec.to_dict().get(k)
            )
            raise ValueError(
                f"cannot resume from {cfg.resume}: it was trained with a different network ({', '.join(diff)} differ)"
            )
        state, meta = checkpoint.load(cfg.resume, device=self.device)
        self.core.load_state_dict(state)
        extra = checkpoint.load_optimizer(cfg.resume, device=self.device)
        if extra is None:
            raise ValueError(f"cannot resume from {cfg.resume}: it holds no optimizer state")
        self.optimizer.load_state_dict(extra["optimizer"])
        if extra.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(extra["scaler"])
        self.start = int(meta["step"])
        self.history = {k: list(v) for k, v in meta.get("history", {}).items()}

    def _loader(self, dataset: Any, start_index: int, stop_index: int, *, workers: int) -> Any:
        import torch
        from torch.utils.data import DataLoader, Subset
        from torch.utils.data.distributed import DistributedSampler

        subset = Subset(dataset, range(start_index, stop_index))
        sampler = None
        if self.world > 1:
            sampler = DistributedSampler(
                subset, num_replicas=self.world, rank=self.rank, shuffle=False, drop_last=True
            )
        return DataLoader(
            subset,
            batch_size=self.config.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
            prefetch_factor=4 if workers else None,
            generator=torch.Generator().manual_seed(0),
        )

    def _to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        out = {}
        for key, value in batch.items():
            value = value.to(self.device, non_blocking=True)
            if self.use_channels_last and value.ndim == 5 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last_3d)
            out[key] = value
        return out

    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step`` (0-based)."""
        cfg = self.config
        if cfg.schedule == "cosine":
            return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))
        return cfg.lr

    # ------------------------------------------------------------ run
    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One optimisation step on a device batch; returns the losses as floats."""
        import torch

        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            out = self.model(batch)
            losses = self.core.losses(out, batch, self.config.weights)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # Losses are this process's (rank 0's in the events). No all-reduce of Python tensors here: with gloo, a
        # work item releasing such a tensor on its own thread while the process group is torn down deadlocks on
        # the GIL (seen at exit under load: ~ProcessGroupGloo joins a runloop thread waiting for the GIL).
        return {k: float(v.detach()) for k, v in losses.items()}

    def run(self) -> Iterator[events.Event]:
        from napari_ssl.device import describe_device

        self._setup()
        cfg = self.config
        yield events.Started(
            total=cfg.steps,
            start_step=self.start,
            device=describe_device(self.device),
            n_train=self.n_train,
            n_val=self.n_val,
            n_parameters=sum(p.numel() for p in self.core.parameters() if p.requires_grad),
            world_size=self.world,
        )
        per_step = cfg.batch_size * self.world
        loader = self._loader(
            self.train_ds, self.start * per_step, cfg.steps * per_step, workers=self.num_workers
        )
        self.model.train()
        rate = 0.0
        tick = time.perf_counter()
        for batch in loader:
            losses = self.train_step(self._to_device(batch))
            self.step += 1
            for key, value in losses.items():
                self.history.setdefault(key, []).append(round(value, 6))
            now = time.perf_counter()
            inst = per_step / max(now - tick, 1e-9)
            rate = inst if rate == 0.0 else 0.8 * rate + 0.2 * inst
            tick = now
            parts = {k: v for k, v in losses.items() if k != "loss"}
            yield events.Progress(
                self.step, cfg.steps, losses["loss"], parts, self.lr_at(self.step - 1), rate
            )
            if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                path = self.save()
                if path is not None:
                    yield events.Saved(path, self.step)
            if self.step >= cfg.steps:
                break
        self.metrics = self.evaluate()
        path = self.save()
        if path is not None:
            yield events.Saved(path, self.step)
        yield events.Finished(self.step, dict(self.metrics), path)

    def evaluate(self) -> dict[str, float]:
        """Pretext metrics on the held-out samples (rank 0 only; empty elsewhere)."""
        import torch

        if self.rank != 0 or self.config.val_samples == 0:
            return {}
        loader = self._loader(self.val_ds, 0, self.config.val_samples, workers=0) if self.world == 1 else None
        if loader is None:  # the DDP sampler would split the held-out set; rank 0 evaluates all of it
            world, self.world = self.world, 1
            loader = self._loader(self.val_ds, 0, self.config.val_samples, workers=0)
            self.world = world
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        self.core.eval()
        with (
            torch.no_grad(),
            torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None),
        ):
            for batch in loader:
                batch = self._to_device(batch)
                n = len(next(iter(batch.values())))
                for key, value in self.core.metrics(self.core(batch), batch).items():
                    totals[key] = totals.get(key, 0.0) + value * n
                    counts[key] = counts.get(key, 0) + n
        self.core.train()
        return {k: totals[k] / counts[k] for k in totals}

    def meta(self) -> dict[str, Any]:
        from napari_ssl.models import backbone_prefixes

        cfg = self.config
        return {
            "kind": "pretrain",
            "config": cfg.to_dict(),
            "pretexts": list(cfg.pretexts),
            "pretext_options": self.pretext_options,
            "model": self.spec.to_dict(),
            "backbones": {
                "3d": self.spec.spec3d.to_dict() if self.spec.spec3d else None,
                "2d": self.spec.spec2d.to_dict() if self.spec.spec2d else None,
            },
            "prefixes": backbone_prefixes(cfg.pretexts),
            "patch_size": [self.patch] * 3,
            "spacing": list(cfg.spacing) if cfg.spacing else None,
            "normalization": cfg.normalization.to_dict(),
            "step": self.step,
            "total": cfg.steps,
            "history": self.history,
            "metrics": self.metrics,
            "world_size": self.world,
            "device": str(self.device),
            "n_train": self.n_train,
            "n_val": self.n_val,
        }

    @property
    def has_model(self) -> bool:
        return self.model is not None

    def save(self) -> str | None:
        """Write the checkpoint (rank 0 only); returns its path, or None on other ranks."""
        from napari_ssl import checkpoint

        if self.rank != 0 or self.model is None:
            return None
        extra: dict[str, Any] = {"optimizer": self.optimizer.state_dict()}
        if self.scaler.is_enabled():
            extra["scaler"] = self.scaler.state_dict()
        path = checkpoint.save(self.config.out, self.core.state_dict(), self.meta(), extra)
        self.saved_step = self.step
        return str(path)

    def close(self) -> None:
        """End of the generator (finished, cancelled or failed)."""
        import torch

        if self._threads is not None:
            torch.set_num_threads(self._threads)
            self._threads = None
        if self._dist:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._dist = False
