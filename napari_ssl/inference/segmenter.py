"""One segmenter contract, whatever trained the model: napari-ssl checkpoints, nnU-Net v2 result folders, MONAI
bundles and TorchScript files.

- :func:`describe_segmenter` reads what a model needs and gives (:class:`SegmenterInfo`: input channels with their
  names and modalities, classes with names and colours, the grid it works on, whether opening it runs code from the
  folder) from its small text files only: no torch, no weights read, no pickle opened, nothing executed. The Segment
  dock calls it on the GUI thread; a folder of none of the formats is one sentence naming what was looked for.
- :func:`open_segmenter` loads the model (torch) and returns a :class:`Segmenter`, whose
  :meth:`~Segmenter.predict` takes one volume per input channel and returns the label volume on the first one's grid
  (shape, spacing, origin, direction), with progress and cancel. Formats whose loading executes code from the folder
  (nnU-Net's pickled checkpoints, a MONAI bundle's config expressions) open only with ``trust=True``, else
  :class:`TrustRequired` says why.

The Segment dock, ``napari-ssl segment`` and ``evaluate`` use only this module. Each format is one module of
:mod:`napari_ssl.inference.formats` declaring ``FORMAT`` (a :class:`Format`); they are tried in :data:`FORMATS` order.
No Qt, no napari; torch only inside :func:`open_segmenter`.
"""

from __future__ import annotations

import importlib
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_ssl.io.volume import Volume

__all__ = [
    "FORMATS",
    "Format",
    "InputChannel",
    "OutputClass",
    "SegmentProgress",
    "SegmentResult",
    "Segmenter",
    "SegmenterError",
    "SegmenterInfo",
    "TrustRequired",
    "describe_segmenter",
    "find_format",
    "open_segmenter",
    "predict_iter",
    "split_channels",
]

#: the format modules, tried in this order (``napari_ssl.inference.formats.<name>``, each with ``FORMAT``)
FORMATS = ("native", "nnunet", "bundle", "torchscript")


class SegmenterError(ValueError):
    """A model folder or file that cannot be used, in one sentence."""


class TrustRequired(SegmenterError):
    """Opening this model runs code stored with it; the sentence says what and why (``reason``)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class InputChannel:
    """One input of a model: its ``name`` (``flair``, ``CT``, ``image``) and modality (``CT``, ``MR``) when known."""

    name: str
    modality: str | None = None


@dataclass(frozen=True)
class OutputClass:
    """One class of a model's masks: its label value, name and ``#rrggbb`` colour (``None``: the dock picks one)."""

    index: int
    name: str
    colour: str | None = None


@dataclass(frozen=True)
class SegmenterInfo:
    """What a segmenter needs and gives, read without loading it.

    Parameters
    ----------
    path : str
        The model folder or file.
    format : str
        ``"napari-ssl"``, ``"nnunet"``, ``"monai-bundle"`` or ``"torchscript"``.
    title : str
        A short name for lists (the folder's name, a bundle's ``name``).
    channels : tuple of InputChannel
        The inputs, in the order :meth:`Segmenter.predict` takes them.
    classes : tuple of OutputClass
        The label values it writes (background 0 not listed).
    spacing : tuple of float, optional
        Voxel size (mm, z y x) the model resamples to; ``None``: it runs on the scan's own grid or says nothing.
    orientation : str, optional
        The orientation the model reorients to (``"LPS"``); ``None``: the file's own axis order (nnU-Net, bundles
        without an orientation transform).
    needs_trust : bool
        Opening it executes code stored with it (pickles, config expressions).
    trust_reason : str
        Why, in one sentence (shown beside the trust check box / the ``--trust`` flag).
    description : str
        Free words (a bundle's description, a demo model's warning).
    details : tuple of (str, str)
        Format-specific lines for the dock: ``("folds", "0, 1, 2")``, ``("held-out Dice", "0.81")``.
    trained_on : object, optional
        A :class:`~napari_ssl.inference.scan_check.TrainedOn` fingerprint of the training data, when recorded.
    dice : mapping of str to float
        Held-out Dice per class name (and ``mean``) where the model records it (napari-ssl's validation, nnU-Net's
        fold summaries); empty when not measured.
    """

    path: str
    format: str
    title: str
    channels: tuple[InputChannel, ...]
    classes: tuple[OutputClass, ...]
    spacing: tuple[float, float, float] | None = None
    orientation: str | None = None
    needs_trust: bool = False
    trust_reason: str = ""
    description: str = ""
    details: tuple[tuple[str, str], ...] = ()
    trained_on: Any = None
    dice: Mapping[str, float] = field(default_factory=dict)

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)

    @property
    def names(self) -> dict[int, str]:
        """``{label value: class name}``, background (0) included."""
        return {0: "background", **{c.index: c.name for c in self.classes}}

    @property
    def colors(self) -> dict[int, str]:
        """``{label value: colour}`` of every class: its own, else the next palette colour no other class uses."""
        from napari_ssl.classes import PALETTE

        used = {c.colour.lower() for c in self.classes if c.colour}
        free = iter([p for p in PALETTE if p.lower() not in used] or list(PALETTE))
        out = {}
        for c in self.classes:
            out[c.index] = c.colour or next(free, PALETTE[c.index % len(PALETTE)])
        return out

    def fingerprint(self) -> Any:
        """What a scan is compared with before segmenting (:mod:`napari_ssl.inference.scan_check`): the recorded
        fingerprint, else the channel count, the modality the channels name and the model's spacing."""
        from napari_ssl.inference.scan_check import TrainedOn

        if self.trained_on is not None:
            return self.trained_on
        modalities = {c.modality for c in self.channels if c.modality in ("CT", "MR")}
        return TrainedOn(n_channels=len(self.channels), channels=self.channel_names,
                         modality=modalities.pop() if len(modalities) == 1 else None, spacing=self.spacing)


class Segmenter:
    """A loaded model. Subclasses set :attr:`info` and :attr:`device` and implement :meth:`predict`."""

    info: SegmenterInfo
    device: str = "cpu"

    def predict(
        self,
        channels: Sequence[Volume],
        *,
        progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        **options: Any,
    ) -> Volume:
        """The label volume (integer values of :attr:`info`'s classes) on ``channels[0]``'s grid.

        ``channels`` holds one volume per input of :attr:`info`, on one grid; ``progress(fraction)`` is called as the
        work goes; ``should_stop()`` is polled and :class:`~napari_ssl.inference.sliding.SegmentationCancelled`
        raised when it is true. ``options`` are the format's own (``overlap``, ``largest_component``, ...);
        unknown ones are ignored by formats that have no such setting.
        """
        raise NotImplementedError

    def check_inputs(self, channels: Sequence[Volume]) -> list[Volume]:
        """``channels`` as a list of 3D volumes (a 4D (c, z, y, x) volume split), refused in one sentence when their
        count differs from the model's inputs or their grids differ."""
        chans = split_channels(channels)
        names = self.info.channel_names
        if len(chans) != len(names):
            raise SegmenterError(
                f"{self.info.title} takes {len(names)} input channel(s) ({', '.join(names)}), got {len(chans)}")
        first = chans[0]
        for other in chans[1:]:
            if other.array.shape != first.array.shape:
                raise SegmenterError(
                    f"the input channels must share one grid: {first.array.shape} and {other.array.shape}")
        return chans


def split_channels(image: Volume | Sequence[Volume]) -> list[Volume]:
    """One 3D volume per channel: a 4D (c, z, y, x) volume split, a list taken as given."""
    if isinstance(image, Volume):
        if image.array.ndim == 4:
            return [image.with_array(frame) for frame in image.array]
        return [image]
    chans = list(image)
    if not chans:
        raise SegmenterError("no image given")
    if len(chans) == 1 and chans[0].array.ndim == 4:
        return [chans[0].with_array(frame) for frame in chans[0].array]
    return chans


@dataclass(frozen=True)
class Format:
    """One model format: how to recognise it, describe it without loading it, and open it.

    Parameters
    ----------
    name : str
        The format's name in :attr:`SegmenterInfo.format`.
    looks_for : str
        What :meth:`detect` looks for, in words (a folder of no format lists every format's).
    detect : callable
        ``detect(path) -> bool``: a cheap look at file names only.
    describe : str or callable
        ``describe(path) -> SegmenterInfo`` (text files only; ``"module:attr"`` resolved on use).
    open : str or callable
        ``open(info, device, **options) -> Segmenter`` (imports torch; called only when trusted if needed).
    """

    name: str
    looks_for: str
    detect: Callable[[Path], bool]
    describe: Any
    open: Any


def _resolve(ref: Any) -> Any:
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def formats() -> list[Format]:
    """The known formats, in the order they are tried."""
    return [importlib.import_module(f"napari_ssl.inference.formats.{name}").FORMAT for name in FORMATS]


def find_format(path: str | os.PathLike[str]) -> tuple[Format, Path]:
    """The format of the model at ``path`` (a bundled model's short name resolved), and the resolved path.

    Raises
    ------
    SegmenterError
        No such path, or none of the formats: the sentence names what was looked for.
    """
    from napari_ssl.inference.bundled import resolve_model

    resolved = resolve_model(path)
    if not resolved.exists():
        raise SegmenterError(f"{resolved}: no such model folder or file")
    known = formats()
    for fmt in known:
        if fmt.detect(resolved):
            return fmt, resolved
    looked = "; ".join(f"{f.name}: {f.looks_for}" for f in known)
    raise SegmenterError(f"{resolved} is not a model this tool can run (looked for {looked})")


def describe_segmenter(path: str | os.PathLike[str]) -> SegmenterInfo:
    """What the model at ``path`` needs and gives, from its text files (no torch, nothing executed).

    Raises
    ------
    SegmenterError
        Not a model of a known format, or one whose files are incomplete (each a sentence naming the file).
    """
    fmt, resolved = find_format(path)
    try:
        return _resolve(fmt.describe)(resolved)  # type: ignore[no-any-return]
    except SegmenterError:
        raise
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise SegmenterError(f"{resolved}: cannot read this {fmt.name} model ({exc})") from exc


def open_segmenter(
    path: str | os.PathLike[str] | SegmenterInfo,
    *,
    device: str = "auto",
    trust: bool = False,
    **options: Any,
) -> Segmenter:
    """Load the model at ``path`` (or the one ``info`` describes) on ``device`` for :meth:`Segmenter.predict`.

    ``trust`` must be true for a format that runs code stored with the model (:attr:`SegmenterInfo.needs_trust`);
    ``options`` are the format's (nnU-Net's ``folds``, ``mirroring``, ``threads``).

    Raises
    ------
    TrustRequired
        The model executes code on load and ``trust`` is false.
    SegmenterError
        An unreadable model (its files, a corrupt weights file, weights that do not fit its description).
    """
    info = path if isinstance(path, SegmenterInfo) else describe_segmenter(path)
    if info.needs_trust and not trust:
        raise TrustRequired(
            f"{info.path}: {info.trust_reason or 'opening this model runs code stored with it'}; open it only if "
            "you trust where it comes from (tick 'I trust this model' / pass --trust)", info.trust_reason)
    fmt = next(f for f in formats() if f.name == info.format)
    return _resolve(fmt.open)(info, device=device, **options)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- running it off the caller's thread
@dataclass(frozen=True)
class SegmentProgress:
    """Fraction of the work done."""

    fraction: float


@dataclass(frozen=True)
class SegmentResult:
    """The finished label volume with the class names and colours of the model."""

    labels: Volume
    names: Mapping[int, str] = field(default_factory=dict)
    colors: Mapping[int, str] = field(default_factory=dict)


def predict_iter(
    segmenter: Segmenter, channels: Sequence[Volume], *, cancel: threading.Event | None = None, **options: Any
) -> Iterator[SegmentProgress | SegmentResult]:
    """:meth:`Segmenter.predict` in a helper thread: yields :class:`SegmentProgress`, then one
    :class:`SegmentResult`. Closing the generator, or setting ``cancel``, stops the run at its next check (the
    latter raises :class:`~napari_ssl.inference.sliding.SegmentationCancelled` from the generator); errors of
    ``predict`` are raised from the generator."""
    messages: queue.Queue[tuple[str, Any]] = queue.Queue()
    stop = cancel if cancel is not None else threading.Event()

    def work() -> None:
        try:
            labels = segmenter.predict(list(channels), progress=lambda f: messages.put(("progress", f)),
                                       should_stop=stop.is_set, **options)
            messages.put(("result", labels))
        except BaseException as exc:  # relayed to the generator's caller
            messages.put(("error", exc))

    thread = threading.Thread(target=work, name="napari-ssl-segment", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = messages.get()
            if kind == "progress":
                yield SegmentProgress(float(value))
            elif kind == "result":
                yield SegmentResult(value, segmenter.info.names, segmenter.info.colors)
                return
            else:
                raise value
    finally:
        stop.set()
        thread.join()
