"""A pretraining checkpoint loaded for inference (``napari-ssl score`` and the explorer's network answers).

:func:`load_network` checks that the folder is a pretraining checkpoint, builds the network its ``meta.json``
describes, loads and verifies the weights; :class:`PretrainedNetwork` runs one pretext's head alone and
normalises a scan as in training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_ssl.io.volume import Volume

__all__ = ["PretrainedNetwork", "load_network"]


@dataclass(eq=False)
class PretrainedNetwork:
    """A pretraining checkpoint loaded for inference: ``net`` (a ``PretrainModel`` in eval mode) and its meta."""

    net: Any
    info: Any  # napari_ssl.meta.PretrainCheckpoint
    path: str
    device: Any

    @property
    def pretexts(self) -> tuple[str, ...]:
        return tuple(self.info.pretexts)

    def options(self, pretext: str) -> dict[str, Any]:
        """The pretext options the network was trained with (``{}`` for a pretext it was not trained on)."""
        return dict(self.info.pretext_options.get(pretext, {}))

    def forward(self, pretext: str, batch: dict[str, Any]) -> dict[str, Any]:
        """The network's outputs for ``pretext`` alone (``batch`` holds only that pretext's inputs): that
        pretext's network hooks run on the shared model (its other heads are not run)."""
        hooks = getattr(self.net, "_hooks", None)
        if hooks is None or pretext not in hooks:  # a model without per-pretext hooks runs whole
            return self.net(batch)  # type: ignore[no-any-return]
        return hooks[pretext].forward(self.net, batch)  # type: ignore[no-any-return]

    def normalise(self, volume: Volume) -> tuple[np.ndarray, tuple[float, float]]:
        """The scan normalised as in training (float32) and ``(a, b)`` with ``scan ~ a * normalised + b``."""
        array = np.asarray(volume.array)
        normed = self.info.normalization(array)
        return normed, _affine_back(array, normed)


def load_network(path: str | os.PathLike[str], device: str = "cpu",
                 purpose: str = "the network's answer needs a pretraining checkpoint") -> PretrainedNetwork:
    """Load a pretraining checkpoint folder (``meta.json`` + weights) for inference on ``device``.

    Raises
    ------
    ValueError
        A segmentation (or unknown) checkpoint, or weights that do not fit the network ``meta.json`` describes
        (:class:`~napari_ssl.checkpoint.CheckpointError`, a ``ValueError``, for a corrupt or foreign folder).
    FileNotFoundError
        No such folder.
    """
    from napari_ssl import checkpoint
    from napari_ssl.device import resolve_device
    from napari_ssl.models import PretrainModel

    try:
        info = checkpoint.open_checkpoint(path, kinds=("pretrain",))
    except checkpoint.CheckpointKindError as exc:
        raise ValueError(
            f"{path} is a {exc.kind or 'unknown'} checkpoint; {purpose}: give a checkpoint written by napari-ssl pretrain"
        ) from None
    assert isinstance(info, checkpoint.PretrainCheckpoint)
    try:
        net = PretrainModel(info.model_spec())
    except (KeyError, TypeError, ValueError) as exc:
        raise checkpoint.CheckpointError(f"{path}: meta.json does not describe a pretraining network ({exc})") from exc
    state, _ = checkpoint.load(path, device="cpu")  # sizes and checksums verified
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise checkpoint.CheckpointError(f"{path}: the weights do not fit the network in meta.json ({first})") from exc
    dev = resolve_device(device)
    net.to(dev).eval()
    return PretrainedNetwork(net=net, info=info, path=str(path), device=dev)


def _affine_back(original: np.ndarray, normed: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` with ``original ~ a * normed + b``, fitted where the normalisation did not clip (every
    normalisation here is affine between its clip limits), so a network output maps back to scan units."""
    x = np.asarray(normed, dtype=np.float64).reshape(-1)
    y = np.asarray(original, dtype=np.float64).reshape(-1)
    step = max(1, x.size // 200_000)
    x, y = x[::step], y[::step]
    inside = (x > x.min(initial=0.0)) & (x < x.max(initial=0.0)) & (y != 0)  # not clipped, not background
    if np.count_nonzero(inside) >= 2 and np.ptp(x[inside]) > 0:
        x, y = x[inside], y[inside]
    if x.size < 2 or np.ptp(x) == 0:
        return 1.0, 0.0
    a, b = np.polyfit(x, y, 1)
    return float(a), float(b)
