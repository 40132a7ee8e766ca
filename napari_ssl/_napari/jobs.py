"""What the docks run in their child process (Qt-free: the child imports no napari).

Every heavy step of every dock runs the same way: a :class:`~napari_ssl._napari.relay.Relay` hands a small
request to :mod:`napari_ssl.runner` (warm child, input by file) and relays the events back. Building the
engine's config happens here, in the child, because validating it (the backbone against the model registry)
imports torch and MONAI: the viewer's process never imports them and its event loop never waits for them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ANSWER",
    "CORRECT",
    "DEVICES",
    "FINETUNE",
    "PRETRAIN",
    "PROGRESS_INTERVAL",
    "SEGMENT",
    "AnswerRequest",
    "Answered",
    "ConfigRequest",
    "CorrectRequest",
    "Devices",
    "ModelLoaded",
    "SegmentRequest",
    "answer_job",
    "correct_job",
    "device_labels",
    "devices_job",
    "finetune_job",
    "pretrain_job",
    "segment_job",
]

ANSWER = "napari_ssl._napari.jobs:answer_job"
CORRECT = "napari_ssl._napari.jobs:correct_job"
DEVICES = "napari_ssl._napari.jobs:devices_job"
FINETUNE = "napari_ssl._napari.jobs:finetune_job"
PRETRAIN = "napari_ssl._napari.jobs:pretrain_job"
SEGMENT = "napari_ssl._napari.jobs:segment_job"
#: at most one progress event per this many seconds (each one repaints the dock)
PROGRESS_INTERVAL = 0.1


@dataclass(frozen=True)
class ConfigRequest:
    """The keyword arguments of a training config (``PretrainConfig`` / ``FinetuneConfig``; in-memory volumes
    travel in them), built in the child; ``out`` is what the runner names in ``Stopped``."""

    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def out(self) -> str | None:
        return self.kwargs.get("out")


def pretrain_job(request: ConfigRequest) -> Iterator[Any]:
    """``engine.pretrain(PretrainConfig(**kwargs))``; a refused config raises before any training."""
    from napari_ssl.training.pretrain import PretrainConfig, pretrain

    yield from pretrain(PretrainConfig(**dict(request.kwargs)))


def finetune_job(request: ConfigRequest) -> Iterator[Any]:
    """``finetune(FinetuneConfig(**kwargs))``; a refused config raises before any training."""
    from napari_ssl.training.finetune import FinetuneConfig, finetune

    yield from finetune(FinetuneConfig(**dict(request.kwargs)))


@dataclass(frozen=True)
class SegmentRequest:
    """One segmentation: the model, the channels' volumes, where to run, ``predict`` options, whether the user trusts
    a model that runs code on load, and the format's opening options (nnU-Net's ``folds``, ``mirroring``)."""

    model: str
    volumes: tuple[Any, ...]
    device: str = "auto"
    options: Mapping[str, Any] = field(default_factory=dict)
    threads: int = 0
    out: str | None = None
    trust: bool = False
    open_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelLoaded:
    """The model is loaded on ``device`` (``seconds`` it took)."""

    device: str
    seconds: float


def segment_job(request: SegmentRequest) -> Iterator[Any]:
    """Load the model, segment, yield :class:`ModelLoaded`, throttled ``SegmentProgress``, ``SegmentResult``."""
    from napari_ssl.inference.segmenter import SegmentProgress, open_segmenter, predict_iter

    if request.threads:
        import torch

        torch.set_num_threads(request.threads)
    t0 = time.monotonic()
    model = open_segmenter(request.model, device=request.device, trust=request.trust, **dict(request.open_options))
    yield ModelLoaded(str(model.device), time.monotonic() - t0)
    last = 0.0
    for event in predict_iter(model, list(request.volumes), **dict(request.options)):
        if isinstance(event, SegmentProgress):
            now = time.monotonic()
            if now - last < PROGRESS_INTERVAL and event.fraction < 1.0:
                continue
            last = now
        yield event


@dataclass(frozen=True)
class CorrectRequest:
    """One round of the correction loop (:mod:`napari_ssl.training.corrections`): the segmenter, the new version's
    folder ``out``, the scan's channels and the corrected masks (Volumes), the training budget, then the
    segmentation that follows (``segment``, a :class:`SegmentRequest` without model and volumes)."""

    model: str
    out: str
    volumes: tuple[Any, ...]
    masks: Any
    scan_name: str = "scan"
    masks_name: str = "masks"
    edited_voxels: int | None = None
    minutes: float | None = 2.0
    steps: int | None = None
    device: str = "auto"
    threads: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)


def correct_job(request: CorrectRequest) -> Iterator[Any]:
    """Store the correction, continue training into ``out`` (``finetune``'s events), then segment the scan with the
    new version (:func:`segment_job`'s events). A stop during training saves the version and ends here."""
    from napari_ssl.events import Finished
    from napari_ssl.training.corrections import learn_from_correction

    finished = None
    for event in learn_from_correction(
            request.model, list(request.volumes), request.masks, out=request.out, scan_name=request.scan_name,
            masks_name=request.masks_name, edited_voxels=request.edited_voxels, minutes=request.minutes,
            steps=request.steps, device=request.device, num_threads=request.threads):
        if isinstance(event, Finished):
            finished = event
        yield event
    if finished is None or not finished.path:
        return
    yield from segment_job(SegmentRequest(model=finished.path, volumes=request.volumes, device=request.device,
                                          options=request.options, threads=request.threads))


@dataclass(frozen=True)
class Devices:
    """``(label, name)`` of every device a run can use, ``auto`` first (see :func:`device_labels`)."""

    choices: tuple[tuple[str, str], ...]


def device_labels(threads: int) -> tuple[tuple[str, str], ...]:
    """``(label, name)`` of every available device, ``auto`` first with what it picks; the CPU label says how
    many threads a run uses. Imports torch: call it in the worker process, never in the viewer's."""
    from napari_ssl.device import available_devices, describe_device, resolve_device

    def label(name: str) -> str:
        device = resolve_device(name)
        if device.type == "cpu":
            return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
        return describe_device(device)

    return tuple((f"auto: {label('auto')}" if n == "auto" else label(n), n) for n in available_devices())


def devices_job(threads: int) -> Iterator[Any]:
    """The device list, found in the worker process (querying names allocates no GPU memory)."""
    yield Devices(device_labels(int(threads)))


@dataclass(frozen=True)
class AnswerRequest:
    """The explorer's question to a pretraining network (folder ``path``): its answer on the sample ``task`` makes of
    ``volume`` with ``params`` (at slider ``step`` where the pretext's answer follows the slider)."""

    path: str
    pretext: str
    volume: Any
    task: Any
    params: Any
    step: Any = None
    out: str | None = None


@dataclass(frozen=True)
class Answered:
    """The network's answer (:func:`napari_ssl.study.answers.answer`) and its sentence."""

    result: Mapping[str, Any]
    summary: str


def answer_job(request: AnswerRequest) -> Iterator[Any]:
    """Load the pretraining network and answer on one sample, in the child as every other model load (the viewer's
    process never imports torch); a network or parameters it cannot answer raise a ``ValueError`` sentence."""
    from pathlib import Path

    from napari_ssl.pretext.registry import resolve
    from napari_ssl.study.answers import answer, answer_spec, describe
    from napari_ssl.training.pretrained import load_network

    spec = answer_spec(request.pretext)
    folder = Path(request.path)
    net = load_network(folder.parent if folder.is_file() else folder, "cpu",
                       purpose="the explorer shows what a pretraining network learned")
    params = resolve(spec.at_step)(request.params, request.step) if spec.at_step is not None else request.params
    result = answer(net, request.pretext, request.volume, request.task, params)
    yield Answered(result=result, summary=describe(request.pretext, result))
