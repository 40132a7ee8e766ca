"""The one training loop, shared by pretraining (:mod:`napari_ssl.training.pretrain`) and fine-tuning (:mod:`napari_ssl.training.finetune`).

The loop owns what every run needs (MONAI ``SupervisedTrainer`` / Lightning's split): CPU threads, the device,
mixed precision (CUDA; bfloat16 on CPUs that compute it natively, there with ``channels_last_3d``),
DistributedDataParallel under ``torchrun``, the optimizer and its
schedule (linear warm-up, then poly or cosine decay, or constant), the ``steps`` / ``minutes`` budget, periodic
held-out validation with the best weights kept, events, checkpoints and save-on-cancel. A :class:`Task` owns the
rest: the model, its batches, its losses and its metrics.

A run stops at ``steps`` or after ``minutes`` of training, whichever comes first; the schedule follows the larger
of the two fractions used, so a run cut by time still anneals its learning rate.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from napari_ssl import events

#: gradient-norm clip of every step (nnU-Net's 12)
GRAD_CLIP = 12.0


class Task(Protocol):
    """What a training task provides to :class:`Trainer`.

    Optional attributes: ``prepare(trainer)`` (a generator of events run before ``setup``: the data's preparation),
    ``planned_steps`` (the plan's budget), ``plan``, ``periodic_validation`` (default True),
    ``samples_per_step``, ``channels_last_ok`` (default True) and ``cpu_bfloat16_ok`` (default False: a CPU trains
    the task in bfloat16 only when it says so).
    """

    kind: str  # "pretrain" or "segment": the checkpoint's kind

    def setup(self, trainer: Trainer) -> Any:
        """Read the data, build and return the model (on the CPU); called once, before the optimizer."""

    def param_groups(self, model: Any) -> list[dict[str, Any]]:
        """Optimizer parameter groups; an ``lr_scale`` key scales a group's learning rate."""

    def batches(self, start_step: int) -> Iterator[Mapping[str, Any]]:
        """Batches of steps ``start_step``, ``start_step + 1``, ... (CPU tensors or numpy arrays)."""

    def losses(self, model: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Loss tensors; ``"loss"`` is the one minimised."""

    def validate(self, model: Any) -> dict[str, float]:
        """Held-out metrics (``{}`` when nothing is held out); ``"score"`` (higher is better) selects the best."""

    def meta(self) -> dict[str, Any]:
        """The task's part of the checkpoint's ``meta.json``."""


@dataclass(frozen=True)
class LoopSettings:
    """How :class:`Trainer` runs (each task's config maps onto it).

    ``schedule`` is ``constant``, ``cosine`` or ``poly`` (exponent 0.9, nnU-Net); ``warmup`` steps of linear warm-up
    come first. ``val_every`` 0 means automatic (eight validations over the budget); ``minutes`` None means no time
    limit; ``num_threads`` 0 uses every core (a GUI's child passes one less).
    """

    steps: int
    out: str
    lr: float = 1e-3
    weight_decay: float = 1e-5
    schedule: str = "constant"
    warmup: int = 0
    minutes: float | None = None
    device: str = "auto"
    seed: int = 0
    num_threads: int = 0
    amp: bool = True
    channels_last: bool = False
    save_every: int = 0
    val_every: int = 0
    resume: str | None = None
    keep_best: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine", "poly"):
            raise ValueError(f"schedule must be 'constant', 'cosine' or 'poly', got {self.schedule!r}")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise ValueError(f"minutes must be a positive number, got {self.minutes}")


class Trainer:
    """State of one run; :meth:`run` is the generator the public ``pretrain`` / ``finetune`` yield from."""

    def __init__(self, task: Task, settings: LoopSettings) -> None:
        self.task = task
        self.settings = settings
        self.step = 0
        self.start = 0
        self.saved_step = -1
        self.model: Any = None
        self.core: Any = None
        self.history: dict[str, list[float]] = {}
        self.metrics: dict[str, float] = {}
        self.best: dict[str, Any] | None = None
        self.elapsed = 0.0
        self.stopped_by_time = False
        self.skipped_steps = 0
        self.amp_dtype: Any = None
        self._threads: int | None = None
        self._dist = False
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))

    # ------------------------------------------------------------ setup
    def _setup(self) -> Iterator[Any]:
        import torch

        from napari_ssl import checkpoint
        from napari_ssl.device import autocast_dtype, default_num_threads, resolve_device

        s = self.settings
        device = resolve_device(s.device)
        if device.type == "cuda" and self.world > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        self.device = device
        threads = s.num_threads or default_num_threads(leave_free=0)
        if self.world > 1:
            threads = max(1, threads // self.world)
        self._threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        if self.rank == 0:
            checkpoint.check_target(s.out)  # before any work: never replace a folder of other files
        # a CPU's bfloat16 only where the task says it learns as well (segmentation; restoration targets
        # need float32's precision: a 40-step context restoration stalled in bfloat16). Known before the task's
        # setup, so its plan can size the budget to the precision.
        cpu_ok = device.type != "cpu" or getattr(self.task, "cpu_bfloat16_ok", False)
        self.amp_dtype = autocast_dtype(device, s.amp) if cpu_ok else None
        if self.world > 1:  # up before the data: rank 0 builds a prepared dataset while the others wait
            import torch.distributed as dist

            if not dist.is_initialized():
                from datetime import timedelta

                timeout = timedelta(seconds=float(os.environ.get("NAPARI_SSL_DIST_TIMEOUT", "1800")))
                dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout)
                self._dist = True
        prepare = getattr(self.task, "prepare", None)  # the data before the model: events (a dataset's build)
        if prepare is not None:
            yield from prepare(self)
        model = self.task.setup(self)
        planned = getattr(self.task, "planned_steps", None)  # a plan from the data decides the budget
        if planned and planned != s.steps:
            from dataclasses import replace

            self.settings = s = replace(s, steps=int(planned))
        self.core = model.to(device)
        if self.use_channels_last:
            self.core = self.core.to(memory_format=torch.channels_last_3d)
        groups = self.task.param_groups(self.core)
        for group in groups:
            group.setdefault("lr_scale", 1.0)
        self.optimizer = torch.optim.AdamW(groups, lr=s.lr, weight_decay=s.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if s.resume:
            self._load_resume()
        if self.start >= s.steps:
            raise ValueError(f"checkpoint {s.resume} is already at step {self.start}; ask for more --steps than that")
        self.step = self.start
        model = self.core
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            unused = getattr(self.core, "unused_parameters_possible", lambda: False)()
            model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                            find_unused_parameters=unused)
        self.model = model

    @property
    def use_channels_last(self) -> bool:
        from napari_ssl.device import cpu_channels_last

        wanted = self.settings.channels_last if self.device.type == "cuda" else cpu_channels_last(self.device,
                                                                                                 self.amp_dtype)
        return bool(wanted and getattr(self.task, "channels_last_ok", True))

    def _load_resume(self) -> None:
        from napari_ssl import checkpoint

        s = self.settings
        state, resumed = checkpoint.load(s.resume, device=self.device)
        self.core.load_state_dict(state)
        extra = checkpoint.load_optimizer(s.resume, device=self.device)
        if extra is None:
            raise ValueError(f"cannot resume from {s.resume}: it holds no optimizer state")
        self.optimizer.load_state_dict(extra["optimizer"])
        if extra.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(extra["scaler"])
        self.start = resumed.step
        self.history = {k: list(v) for k, v in resumed.history.items()}

    # ------------------------------------------------------------ schedule
    def progress(self, step: int) -> float:
        """Fraction of the budget used at ``step``: the larger of steps and minutes."""
        s = self.settings
        frac = step / s.steps
        if s.minutes:
            frac = max(frac, self.elapsed / (60.0 * s.minutes))
        return min(1.0, frac)

    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step`` (0-based)."""
        s = self.settings
        if s.warmup and step < s.warmup:
            return s.lr * (step + 1) / (s.warmup + 1)
        if s.schedule == "constant":
            return s.lr
        frac = self.progress(step)
        if s.schedule == "cosine":
            return s.lr * 0.5 * (1 + math.cos(math.pi * frac))
        return s.lr * (1 - frac) ** 0.9

    def _to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np
        import torch

        out = {}
        for key, value in batch.items():
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            value = value.to(self.device, non_blocking=True)
            if self.use_channels_last and value.ndim == 5 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last_3d)
            out[key] = value
        return out

    # ------------------------------------------------------------ one step
    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One optimisation step on a device batch; returns the losses as floats (this process's)."""
        import torch

        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            losses = self.task.losses(self.model, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"].float()).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)  # nnU-Net's clip; also the non-finite guard
        if self.scaler.is_enabled() or bool(torch.isfinite(norm)):
            self.scaler.step(self.optimizer)  # the float16 scaler skips non-finite steps itself
        else:  # a rare non-finite bfloat16 gradient: skip the step rather than poison the weights
            self.skipped_steps += 1
        self.scaler.update()
        return {k: float(v.detach()) for k, v in losses.items()}

    def _due_validation(self, last: bool) -> bool:
        s = self.settings
        if self.rank != 0:
            return False
        if last:
            return True
        if not getattr(self.task, "periodic_validation", True):
            return False
        if s.minutes and not s.val_every:  # a time budget: eight validations over the minutes
            period = 60.0 * s.minutes / 8
            return int(self.elapsed // period) > int((self.elapsed - self._last_step_time) // period)
        every = s.val_every or max(25, s.steps // 8)
        return self.step % every == 0

    def _validate(self) -> Iterator[Any]:
        import torch

        self.core.eval()
        with torch.no_grad():
            metrics = self.task.validate(self.core)
        self.core.train()
        if not metrics:
            return
        self.history.setdefault("val_step", []).append(self.step)
        self.history.setdefault("val_time", []).append(round(self.elapsed, 1))
        for key, value in metrics.items():
            self.history.setdefault(f"val/{key}", []).append(round(float(value), 6))
        self.metrics.update(metrics)
        score = metrics.get("score")
        if self.settings.keep_best and score is not None and (self.best is None or score >= self.best["score"]):
            state = {k: v.detach().to("cpu", copy=True) for k, v in self.core.state_dict().items()}
            self.best = {"score": float(score), "step": self.step, "state": state, "metrics": dict(metrics)}
        if getattr(self.task, "periodic_validation", True):  # end-only metrics travel in Finished
            yield events.Validated(self.step, {k: float(v) for k, v in metrics.items()})

    # ------------------------------------------------------------ run
    def run(self) -> Iterator[Any]:
        from napari_ssl.device import describe_device

        yield from self._setup()
        s = self.settings
        task = self.task
        samples = int(getattr(task, "samples_per_step", 0))  # one process's batch
        yield events.Started(
            total=s.steps, start_step=self.start, device=describe_device(self.device),
            n_train=int(getattr(task, "n_train", 0)), n_val=int(getattr(task, "n_val", 0)),
            n_parameters=sum(p.numel() for p in self.core.parameters() if p.requires_grad), world_size=self.world,
            plan=None if getattr(task, "plan", None) is None else task.plan.to_dict(),
            plan_text="" if getattr(task, "plan", None) is None else task.plan.describe(),
            batch_size=samples,
        )
        per_step = (samples or 1) * self.world
        self.model.train()
        rate, tick = 0.0, time.perf_counter()
        t0 = tick
        self._last_step_time = 0.0
        validated_at = -1
        for batch in task.batches(self.start):
            losses = self.train_step(self._to_device(batch))
            self.step += 1
            for key, value in losses.items():
                self.history.setdefault(key, []).append(round(value, 6))
            now = time.perf_counter()
            self._last_step_time = now - tick
            self.elapsed = now - t0
            inst = per_step / max(now - tick, 1e-9)
            rate, tick = (inst if rate == 0.0 else 0.8 * rate + 0.2 * inst), now
            parts = {k: v for k, v in losses.items() if k != "loss"}
            yield events.Progress(self.step, s.steps, losses["loss"], parts, self.lr_at(self.step - 1), rate)
            self.stopped_by_time = bool(s.minutes and self.elapsed >= 60.0 * s.minutes)
            last = self.step >= s.steps or self.stopped_by_time
            if self._due_validation(last):
                yield from self._validate()
                validated_at = self.step
                tick = time.perf_counter()  # validation time is not the step's
            if s.save_every and self.step % s.save_every == 0 and not last:
                path = self.save()
                if path is not None:
                    yield events.Saved(path, self.step)
            if last:
                break
        if validated_at != self.step and self.rank == 0:
            yield from self._validate()
        self.metrics["loss"] = float(sum(self.history["loss"][-10:]) / max(1, len(self.history["loss"][-10:])))
        if self.best is not None and self.best["score"] > self.metrics.get("score", -math.inf) + 1e-9:
            self.core.load_state_dict(self.best["state"])  # keep the best held-out weights, as nnU-Net's best
            self.metrics.update(self.best["metrics"])
        path = self.save()
        if path is not None:
            yield events.Saved(path, self.step)
        yield events.Finished(self.step, dict(self.metrics), path)

    # ------------------------------------------------------------ checkpoints
    def meta(self) -> Any:
        """The typed checkpoint (:mod:`napari_ssl.meta`) written to ``meta.json``: the task's fields and the loop's."""
        from napari_ssl.meta import build

        s = self.settings
        return build(
            self.task.kind, step=self.step, total=s.steps, history=self.history, metrics=self.metrics,
            device=str(self.device), world_size=self.world,
            training={"minutes": s.minutes, "elapsed_s": round(self.elapsed, 1), "stopped_by_time": self.stopped_by_time,
                      "skipped_steps": self.skipped_steps,
                      "precision": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "float32",
                      "schedule": s.schedule, "warmup": s.warmup, "lr": s.lr,
                      "batch_size": int(getattr(self.task, "samples_per_step", 1)),
                      "best_step": None if self.best is None else self.best["step"]},
            **self.task.meta(),
        )

    @property
    def has_model(self) -> bool:
        return self.model is not None

    def save(self) -> str | None:
        """Write the checkpoint (rank 0 only); returns its path, or None on other ranks."""
        from napari_ssl import checkpoint

        if self.rank != 0 or self.core is None:
            return None
        extra: dict[str, Any] = {"optimizer": self.optimizer.state_dict()}
        if self.scaler.is_enabled():
            extra["scaler"] = self.scaler.state_dict()
        path = checkpoint.save(self.settings.out, self.core.state_dict(), self.meta(), extra)
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


def train(task: Task, settings: LoopSettings) -> Iterator[Any]:
    """Run ``task`` under ``settings``; yields events; a cancel (generator closed) or Ctrl-C saves first."""
    yield from events.run_trainer(Trainer(task, settings))


__all__ = ["LoopSettings", "Task", "Trainer", "train"]
