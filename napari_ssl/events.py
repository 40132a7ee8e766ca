"""Events yielded by the training generators (``engine.pretrain``, ``finetune.finetune``).

Small frozen dataclasses of plain Python values (numbers, strings, dicts of floats), so they pickle
cheaply across the child-process runner (:mod:`napari_ssl.runner`) and print well in a log.
A training generator yields, in order::

    (Preparing ...) -> Started -> Progress ... (Saved ...) ... -> Saved -> Finished

``Preparing`` reports the prepared dataset's build (:mod:`napari_ssl.training.prepared`) before the first step.

``Stopped`` is added by the runner when a run was asked to stop (its checkpoint was saved by the
generator's ``finally`` block). An exception in the child reaches the parent as
:class:`napari_ssl.runner.RunnerError`, not as an event.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Started:
    """A run has been set up: the data are read, the model is built.

    Parameters
    ----------
    total : int
        Step the run ends at (the budget; a resumed run starts above 0).
    start_step : int
        First step of this run (0, or the checkpoint's step when resuming).
    device : str
        Device name, e.g. ``"cpu"`` or ``"cuda:0 (NVIDIA H100)"``.
    n_train, n_val : int
        Number of training and held-out scans.
    n_parameters : int
        Trainable parameters of the model.
    world_size : int
        Processes of a distributed (``torchrun``) run; 1 otherwise.
    plan, plan_text : optional
        The run's plan from the data (:class:`napari_ssl.plan.Plan` as a dict, and as lines to print).
    batch_size : int
        Samples per step of one process, as resolved (an automatic batch included); 0 when unknown.
    """

    total: int
    start_step: int = 0
    device: str = "cpu"
    n_train: int = 0
    n_val: int = 0
    n_parameters: int = 0
    world_size: int = 1
    plan: dict[str, Any] | None = None
    plan_text: str = ""
    batch_size: int = 0


@dataclass(frozen=True)
class Progress:
    """One optimisation step finished.

    ``loss`` is the weighted total; ``losses`` the unweighted loss of each pretext (and of each part of
    a pretext, e.g. ``"rubik/perm"``); ``samples_per_s`` counts samples of all processes.
    """

    step: int
    total: int
    loss: float
    losses: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    samples_per_s: float = 0.0

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 1.0


@dataclass(frozen=True)
class Validated:
    """Held-out metrics at ``step`` (fine-tuning: ``dice/<class>``, ``dice/mean`` and ``score``)."""

    step: int
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def dice(self) -> dict[str, float]:
        """Held-out Dice per class, by class name."""
        return {k[5:]: v for k, v in self.metrics.items() if k.startswith("dice/") and k != "dice/mean"}

    @property
    def mean(self) -> float:
        dice = self.dice
        return float(sum(dice.values()) / len(dice)) if dice else 0.0


@dataclass(frozen=True)
class Saved:
    """A checkpoint folder was written (atomically) at ``step``."""

    path: str
    step: int


@dataclass(frozen=True)
class Finished:
    """The run reached its budget; ``metrics`` are computed on the held-out split."""

    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    path: str | None = None


@dataclass(frozen=True)
class Preparing:
    """The prepared dataset is being built: ``done`` of ``total`` scans (``built`` now, the rest reused or
    skipped), ``eta_s`` seconds left; the last one (``final``) carries the build's ``summary`` (outdated entries
    removed and the space freed, the skipped files)."""

    done: int
    total: int
    built: int = 0
    skipped: int = 0
    eta_s: float = 0.0
    folder: str = ""
    summary: str = ""
    final: bool = False


@dataclass(frozen=True)
class Stopped:
    """The run was asked to stop (cancel); the generator saved its checkpoint before ending."""

    path: str | None = None


Event = Preparing | Started | Progress | Validated | Saved | Finished | Stopped

__all__ = ["Event", "Finished", "Preparing", "Progress", "Saved", "Started", "Stopped", "Validated"]


def describe(event: Any) -> str:
    """A one-line human description of an event (for logs and the CLI)."""
    if isinstance(event, Progress):
        parts = " ".join(f"{k}={v:.4g}" for k, v in event.losses.items())
        return (
            f"step {event.step}/{event.total} loss {event.loss:.4g} ({parts}) lr {event.lr:.3g} "
            f"{event.samples_per_s:.1f} samples/s"
        )
    if isinstance(event, Validated):
        return f"step {event.step}: held-out " + ", ".join(f"{k} {v:.3f}" for k, v in event.metrics.items())
    if isinstance(event, Saved):
        return f"saved step {event.step} to {event.path}"
    if isinstance(event, Finished):
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in event.metrics.items())
        return f"finished at step {event.step}: {metrics}"
    if isinstance(event, Started):
        return (
            f"training on {event.device}: {event.n_train} scans ({event.n_val} held out), "
            f"{event.n_parameters} parameters, steps {event.start_step}..{event.total}"
        )
    if isinstance(event, Stopped):
        return f"stopped; checkpoint in {event.path}"
    if isinstance(event, Preparing):
        eta = f", about {event.eta_s:.0f} s left" if event.done < event.total and event.eta_s > 0 else ""
        return (f"preparing scans in {event.folder}: {event.done}/{event.total} ({event.built} built, "
                f"{event.skipped} skipped){eta}")
    return repr(event)


def run_trainer(trainer: Any) -> Iterator[Any]:
    """Drive a trainer's ``run()`` generator; a cancel (the generator closed) or Ctrl-C saves first.

    Shared by ``engine.pretrain`` and ``finetune.finetune``. ``trainer`` provides ``run()``, ``save()``,
    ``close()``, ``step``, ``saved_step`` and ``has_model`` (False until the network is built, so a cancel
    during start-up saves nothing).
    """
    try:
        yield from trainer.run()
    except (GeneratorExit, KeyboardInterrupt):
        if trainer.has_model and trainer.saved_step != trainer.step:
            trainer.save()
        raise
    finally:
        trainer.close()
