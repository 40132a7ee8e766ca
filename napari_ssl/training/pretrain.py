"""Pretraining: the pretext task that feeds the one training loop (:mod:`napari_ssl.training.trainer`).

``pretrain(config)`` yields :mod:`napari_ssl.events` (``Started``, ``Progress`` every step, ``Saved``, ``Finished``).
Closing the generator (cancel) or a ``KeyboardInterrupt`` saves a valid checkpoint in its ``finally`` block.
The same generator runs in the napari dock (through :mod:`napari_ssl.runner`, in a child process), behind the
CLI's progress bar, and under ``torchrun`` (DistributedDataParallel, DistributedSampler, gloo on CPU; only
rank 0 writes; rank 0 builds the prepared dataset while the others wait, and each rank samples from its own disjoint
share of the training scans: :func:`rank_share`).

Reproducibility: sample ``i`` of the run is drawn from ``default_rng([seed, i])`` and step ``s`` uses samples
``s * B * W ... (s + 1) * B * W - 1``, so resuming from a checkpoint at step ``s`` continues exactly as the
uninterrupted run would (same weights on CPU).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from napari_ssl import events
from napari_ssl.io.volume import Volume
from napari_ssl.preprocess import Normalization
from napari_ssl.training.config import PretrainConfig


def make_pretext(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The pretext object ``name`` (any name of :mod:`napari_ssl.pretext.registry`) with constructor ``options``."""
    from napari_ssl.pretext import registry

    return registry.get(name).make(options)


def default_pretext_options(name: str, patch: int) -> dict[str, Any]:
    """The registered pretext's defaults scaled to the patch (e.g. Rubik's gap, context's patch size)."""
    from napari_ssl.pretext import registry

    return registry.get(name).default_options(patch)


def default_batch_size(pretexts: Mapping[str, Any], patch: int, *, native: bool = False) -> int:
    """Samples per step when the user gives none: the smallest of the pretexts' own defaults
    (:meth:`~napari_ssl.pretext.registry.PretextSpec.default_batch`; 2 for the 3D pretexts, more for the 2D
    imaging planes); native 2D views (an exam, not planes of the patch's size) keep the 3D default."""
    from napari_ssl.plan import DEFAULT_BATCH
    from napari_ssl.pretext import registry

    if native or not pretexts:
        return DEFAULT_BATCH
    return min(registry.get(name).default_batch(task, patch, DEFAULT_BATCH) for name, task in pretexts.items())


def finetune(config: Any) -> Iterator[Any]:
    """Fine-tuning generator: delegates to :func:`napari_ssl.training.finetune.finetune` (imported on first use)."""
    from napari_ssl.training.finetune import finetune as _finetune

    yield from _finetune(config)


def pretrain(config: PretrainConfig) -> Iterator[events.Event]:
    """Pretrain on ``config.data`` with ``config.pretexts``; yields events (see the module docstring).

    Bad input (missing path, unreadable scan, unknown option) raises ``ValueError`` / ``OSError`` before
    ``Started``, before any training (after the prepared dataset's ``Preparing`` events, if any). Scans smaller
    than the patch are padded.
    """
    from napari_ssl.training.trainer import LoopSettings, train

    settings = LoopSettings(
        steps=config.steps, out=config.out, lr=config.lr, weight_decay=config.weight_decay, schedule=config.schedule,
        minutes=config.minutes, device=config.device, seed=config.seed, num_threads=config.num_threads,
        amp=config.amp, channels_last=config.channels_last, save_every=config.save_every, resume=config.resume,
    )
    yield from train(PretrainTask(config), settings)


__all__ = [
    "PretrainConfig", "PretrainTask", "default_batch_size", "default_pretext_options", "finetune", "make_pretext",
    "pretrain",
]


# ---------------------------------------------------------------- the task
class PretrainTask:
    """The pretexts' batches, losses and held-out metrics for :class:`~napari_ssl.training.trainer.Trainer`."""

    kind = "pretrain"
    periodic_validation = False  # metrics once, at the end (held-out samples are cheap but resume must match)

    def __init__(self, config: PretrainConfig) -> None:
        self.config = config
        self.n_train = self.n_val = 0
        self.batch_size = config.batch_size or 0  # resolved in setup

    @property
    def channels_last_ok(self) -> bool:
        from napari_ssl.pretext import registry

        return all(registry.get(name).backbone != "2d" for name in self.config.pretexts)

    @property
    def samples_per_step(self) -> int:
        return self.batch_size

    def prepare(self, trainer: Any) -> Iterator[events.Event]:
        """Everything before the network: settings, the plan and the data; yields the prepared dataset's
        :class:`~napari_ssl.events.Preparing` events (nothing with ``use_cache=False``)."""
        import numpy as np
        import torch

        from napari_ssl import checkpoint
        from napari_ssl.device import data_workers, default_backbone, default_patch_size
        from napari_ssl.pretext import registry
        from napari_ssl.training.data import load_volumes, read_sources

        cfg = self.config
        self.trainer = trainer
        device = trainer.device
        self.num_workers = data_workers(device.type) if cfg.num_workers < 0 else cfg.num_workers
        if device.type == "cpu" and self.num_workers and not cfg.num_threads:  # leave the loader its cores
            torch.set_num_threads(max(1, torch.get_num_threads() - self.num_workers))
        self.resumed: Any = None  # the typed PretrainCheckpoint resumed from
        backbone, patch = cfg.backbone, cfg.patch_size
        spacing, norm = cfg.spacing, cfg.normalization
        saved_options: dict[str, Any] = {}  # a resumed run keeps its checkpoint's task (the user's options win)
        if cfg.resume:
            try:
                info = checkpoint.open_checkpoint(cfg.resume, kinds=("pretrain",))
            except checkpoint.CheckpointKindError as exc:
                raise ValueError(f"{cfg.resume} is not a pretraining checkpoint (kind {exc.kind!r})") from None
            self.resumed = info
            for name, opts in dict(info.pretext_options).items():
                if name in registry.names():  # only options the pretext still has (an older one may be removed)
                    known = {p.name for p in registry.get(name).parameters}
                    saved_options[name] = {k: v for k, v in dict(opts).items() if k in known}
            backbone = backbone or (info.model or {})["backbone"]
            patch = patch or int(info.patch_size[0])
            if spacing is None and info.spacing:
                spacing = info.spacing
            if norm is None:
                norm = info.normalization
        self.backbone = backbone or default_backbone(device)
        self.patch = int(patch or default_patch_size(device))
        self.pretext_options = {
            name: {**default_pretext_options(name, self.patch), **saved_options.get(name, {}),
                   **dict(cfg.pretext_options.get(name, {}))}
            for name in cfg.pretexts
        }
        unknown = set(cfg.pretext_options) - set(cfg.pretexts)
        if unknown:
            raise ValueError(f"pretext_options given for pretexts not in the run: {sorted(unknown)}")
        pretexts = {name: make_pretext(name, opts) for name, opts in self.pretext_options.items()}
        # every option as built (defaults too): a later change of a default does not change this checkpoint's task
        self.resolved_options = {name: registry.get(name).resolved_options(task, self.pretext_options[name])
                                 for name, task in pretexts.items()}
        self.pretexts = pretexts
        hook = registry.get(cfg.pretexts[0]).native_views if len(cfg.pretexts) == 1 else None
        self.plan = None
        self.native_views = False
        self.prepared: Any = None  # the PreparedDataset trained from, if any
        if cfg.use_cache and cfg.data and not cfg.volumes:
            self.prepared = yield from self._prepare_cached(hook, spacing, norm)
        if self.prepared is not None:
            self.raw: list[Any] = []
            self.volumes = list(self.prepared.scans)
            return
        raw = [v if isinstance(v, Volume) else Volume(np.asarray(v), name=f"array{i}")
               for i, v in enumerate(read_sources([*cfg.data, *cfg.volumes]))]
        if any(v.array.ndim not in (3, 4) for v in raw):
            bad = next(v for v in raw if v.array.ndim not in (3, 4))
            raise ValueError(f"{bad.name or 'scan'} must be 3D (z, y, x) or 4D, got shape {bad.array.shape}")
        from napari_ssl.pretext.planes.native import check_3d, is_native  # native 2D views: no grid, no plan

        check_3d(cfg.pretexts, raw, cfg.data)
        native_views = self.native_views = hook is not None and is_native(raw)
        self.batch_size = cfg.batch_size or default_batch_size(pretexts, self.patch, native=native_views)
        if not native_views and (norm is None or (spacing is None and not cfg.resume)):
            from napari_ssl.plan import fingerprint

            scans = [[v] for v in raw if v.array.ndim == 3 and min(v.spatial_shape) >= 2]
            scans += [[v.with_array(v.array[0])] for v in raw if v.array.ndim == 4 and min(v.spatial_shape) >= 2]
            if scans:
                spacing, norm = self._make_plan(fingerprint(scans), spacing, norm)
        self.spacing = spacing
        self.norm = norm or Normalization(mode="zscore_nonzero" if native_views else "zscore")  # native: MR views
        self.raw = raw
        self.volumes = raw if native_views else load_volumes(raw, spacing=self.spacing, normalization=self.norm)

    def _make_plan(self, fp: Any, spacing: Any, norm: Any) -> tuple[Any, Any]:
        from napari_ssl.plan import make_plan

        cfg = self.config
        self.plan = make_plan(fp, self.trainer.device.type, spacing=spacing, normalization=norm,
                              patch_size=self.patch, backbone=self.backbone, steps=cfg.steps,
                              batch_size=cfg.batch_size, default_batch=self.batch_size)
        spacing = spacing if spacing is not None or cfg.resume else self.plan.spacing
        return spacing, norm or self.plan.normalization

    def _prepare_cached(self, hook: Any, spacing: Any, norm: Any) -> Iterator[events.Event]:
        """The prepared dataset of ``config.data``: under DDP rank 0 builds it (and the plan's fingerprint) while the
        other ranks wait at a barrier, then they open the same entries (on storage every node sees, nothing is
        left to build; a node with a cache of its own builds its entries after rank 0)."""
        trainer = self.trainer
        barrier = _rank_barrier() if trainer.world > 1 else None
        if barrier is not None and trainer.rank != 0:
            barrier()  # rank 0 is building
        dataset = yield from self._build_prepared(hook, spacing, norm)
        if barrier is not None and trainer.rank == 0:
            barrier()  # built: the other ranks open it
        return dataset

    def _build_prepared(self, hook: Any, spacing: Any, norm: Any) -> Iterator[events.Event]:
        """The prepared dataset of ``config.data`` (built where missing), or ``None`` where the older path must
        read the scans itself: native 2D views (an exam's DICOM folders for a pretext that learns from them), or
        nothing 3D to prepare (its errors are the older path's)."""
        from pathlib import Path

        from napari_ssl.training import prepared as prep

        cfg = self.config
        folder = Path(cfg.cache).expanduser() if cfg.cache else Path(str(Path(cfg.out).expanduser()) + ".prepared")
        sources, _ = prep.find_sources(cfg.data)
        if not sources:
            return None
        self.batch_size = cfg.batch_size or default_batch_size(self.pretexts, self.patch)
        if norm is None or (spacing is None and not cfg.resume):
            fp = prep.sampled_fingerprint(sources, folder)
            if fp is not None:
                spacing, norm = self._make_plan(fp, spacing, norm)
        self.spacing = spacing
        self.norm = norm or Normalization(mode="zscore")
        gen = prep.iter_prepare(cfg.data, self.spacing, self.norm, folder)
        try:
            while True:
                try:
                    step = next(gen)
                except StopIteration as stop:
                    dataset = stop.value
                    break
                yield events.Preparing(step.done, step.total, step.built, step.skipped, step.eta_s, str(folder))
        finally:
            gen.close()
        if not dataset.scans:  # the older path reads the sources again and raises its error
            return None
        from types import SimpleNamespace

        from napari_ssl.pretext.planes.native import check_3d, is_native

        series = [SimpleNamespace(path=path, spatial_shape=(depth, 1, 1)) for path, depth in dataset.series]
        check_3d(cfg.pretexts, series, cfg.data)  # native 2D views (an exam's series) are not 3D scans
        if hook is not None and is_native(series):  # the pretext learns from them: in RAM, as before
            return None
        yield events.Preparing(len(sources), len(sources), dataset.built, len(dataset.skipped), 0.0, str(folder),
                               dataset.summary(), final=True)
        return dataset

    def setup(self, trainer: Any) -> Any:
        import torch

        from napari_ssl.models import ModelSpec, PretrainModel
        from napari_ssl.pretext import registry
        from napari_ssl.training.data import PretextDataset, SampleSpec, split_volumes

        if not hasattr(self, "volumes"):  # called without prepare (the trainer runs it first)
            for _ in self.prepare(trainer):
                pass
        cfg = self.config
        pretexts, volumes, raw, native_views = self.pretexts, self.volumes, self.raw, self.native_views
        hook = registry.get(cfg.pretexts[0]).native_views if len(cfg.pretexts) == 1 else None
        train, val = split_volumes(volumes, cfg.val_fraction if len(volumes) > 1 else 0.0, cfg.seed)
        held_out = len(volumes) > 1 and cfg.val_fraction > 0  # one scan: metrics on fresh samples of it
        self.n_train, self.n_val = len(train), (len(val) if held_out else 0)
        index = {id(v): i for i, v in enumerate(volumes)}
        share = rank_share(len(train), trainer.world, trainer.rank)
        self.share = [index[id(train[i])] for i in share]  # this rank's scans, as indices into ``volumes``
        if trainer.world > 1 and not native_views:
            train = [train[i] for i in share]
            built = "-" if self.prepared is None else f"{self.prepared.built} built, {self.prepared.reused} reused"
            print(f"napari-ssl rank {trainer.rank}/{trainer.world}: prepared entries {built}; "
                  f"samples from scans {self.share} of {len(volumes)}", file=sys.stderr, flush=True)
        sample_spec = SampleSpec(patch=(self.patch,) * 3, pretexts=pretexts, foreground=cfg.foreground)
        per_step = self.batch_size * trainer.world
        native = None
        if native_views:  # the pretext's samples from native 2D views (an exam)
            native = registry.resolve(hook)(raw, pretexts[cfg.pretexts[0]], cfg.data, self.norm, cfg.seed,
                                            cfg.steps * per_step, cfg.val_samples, cfg.val_fraction)
        self.native_meta = None if native is None else native["meta"]
        if native is not None:
            self.train_ds, self.val_ds = native["train"], native["val"]
            self.n_train, self.n_val = native["n_train"], native["n_val"]
        else:
            self.train_ds = PretextDataset(train, sample_spec, cfg.seed, cfg.steps * per_step)
            self.val_ds = PretextDataset(val, sample_spec, cfg.seed + 1_000_003, max(1, cfg.val_samples),
                                         windowed=False)

        probe = self.train_ds[0]
        heads = {}  # what each pretext's network needs to know (e.g. Rubik's cube shape): its own head fields
        for name, task in pretexts.items():
            heads[name] = registry.get(name).network().model_fields(task, probe)
        self.spec = ModelSpec(pretexts=cfg.pretexts, backbone=self.backbone, in_channels=1, heads=heads)
        if self.resumed is not None:
            # a resumed run continues the checkpoint's heads (older checkpoints: the heads of their time)
            saved_spec = self.resumed.model_spec()
            self.spec = self.spec.with_choices_of(saved_spec)
            saved, now = _flat(saved_spec.to_dict()), _flat(self.spec.to_dict())
            if saved != now:
                diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
                raise ValueError(
                    f"cannot resume from {cfg.resume}: it was trained with a different network ({', '.join(diff)} differ)"
                )
        torch.manual_seed(cfg.seed)
        self.core = PretrainModel(self.spec)
        return self.core

    def param_groups(self, model: Any) -> list[dict[str, Any]]:
        return [{"params": list(model.parameters())}]

    def _loader(self, dataset: Any, start_index: int, stop_index: int, *, workers: int, world: int) -> Any:
        import torch
        from torch.utils.data import DataLoader, Subset
        from torch.utils.data.distributed import DistributedSampler

        subset = Subset(dataset, range(start_index, stop_index))
        sampler = None
        if world > 1:
            sampler = DistributedSampler(subset, num_replicas=world, rank=self.trainer.rank, shuffle=False,
                                         drop_last=True)
        return DataLoader(
            subset, batch_size=self.batch_size, sampler=sampler, shuffle=False, num_workers=workers,
            pin_memory=self.trainer.device.type == "cuda", drop_last=False,
            prefetch_factor=4 if workers else None, generator=torch.Generator().manual_seed(0),
        )

    def batches(self, start_step: int) -> Iterator[Any]:
        per_step = self.batch_size * self.trainer.world
        yield from self._loader(self.train_ds, start_step * per_step, self.config.steps * per_step,
                                workers=self.num_workers, world=self.trainer.world)

    def losses(self, model: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        # Losses are this process's (rank 0's in the events). No all-reduce of Python tensors here: with gloo, a
        # work item releasing such a tensor on its own thread while the process group is torn down deadlocks on
        # the GIL (seen at exit under load).
        return self.core.losses(model(batch), batch, self.config.weights)

    def validate(self, model: Any) -> dict[str, float]:
        """Pretext metrics on the held-out samples."""
        import torch

        if self.config.val_samples == 0:
            return {}
        loader = self._loader(self.val_ds, 0, self.config.val_samples, workers=0, world=1)
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        amp = self.trainer.amp_dtype
        with torch.autocast(self.trainer.device.type, dtype=amp, enabled=amp is not None):
            for batch in loader:
                batch = self.trainer._to_device(batch)
                n = len(next(iter(batch.values())))
                for key, value in model.metrics(model(batch), batch).items():
                    totals[key] = totals.get(key, 0.0) + value * n
                    counts[key] = counts.get(key, 0) + n
        return {k: totals[k] / counts[k] for k in totals}

    def meta(self) -> dict[str, Any]:
        from napari_ssl.models import backbone_prefixes

        cfg = self.config
        return {
            "config": cfg.to_dict(),
            "pretexts": list(cfg.pretexts),
            "pretext_options": self.resolved_options,
            "model": self.spec.to_dict(),
            "backbones": {
                "3d": self.spec.spec3d.to_dict() if self.spec.spec3d else None,
                "2d": self.spec.spec2d.to_dict() if self.spec.spec2d else None,
            },
            "prefixes": backbone_prefixes(cfg.pretexts),
            "patch_size": [self.patch] * 3,
            "spacing": list(self.spacing) if self.spacing else None,
            "normalization": self.norm.to_dict(),
            "plan": None if self.plan is None else self.plan.to_dict(),
            "n_train": self.n_train,
            "n_val": self.n_val,
            **({"native_views": self.native_meta} if getattr(self, "native_meta", None) else {}),
        }


def rank_share(n: int, world: int, rank: int) -> list[int]:
    """The training scans (of ``n``) rank ``rank`` of ``world`` draws its samples from: every ``world``-th from
    ``rank``, disjoint between ranks; all of them when there are fewer scans than ranks (nothing to split)."""
    if world <= 1 or n < world:
        return list(range(n))
    return list(range(rank, n, world))


def _rank_barrier() -> Any:
    """A barrier across the DDP ranks for the prepared dataset's build, on a gloo group of its own whose timeout
    (``NAPARI_SSL_PREPARE_TIMEOUT`` seconds, a day by default) is a build's, not a training collective's;
    ``None`` without a process group."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return None
    from datetime import timedelta

    timeout = timedelta(seconds=float(os.environ.get("NAPARI_SSL_PREPARE_TIMEOUT", "86400")))
    group = dist.new_group(backend="gloo", timeout=timeout)

    return lambda: dist.barrier(group=group)


def _flat(model: dict[str, Any]) -> dict[str, Any]:
    """A ModelSpec dict with each head field keyed ``pretext.field`` beside the shared fields (to name what differs)."""
    out = {k: v for k, v in model.items() if k != "heads"}
    out.update({f"{name}.{k}": v for name, fields in model.get("heads", {}).items() for k, v in fields.items()})
    return out
