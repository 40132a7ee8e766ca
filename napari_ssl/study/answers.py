"""What a pretraining network answers on one pretext sample: the explorer's "see what the network learned".

Given a pretraining checkpoint (:func:`load_network`) and one sample of a pretext (the pretext object and the
params it drew on a scan, as the Pretext explorer shows them), the pretext's own answer function runs the network on
exactly that corrupted sample, prepared as in training, and returns plain arrays and numbers next to the truth. Each
unit brings its own (its registry record's :class:`~napari_ssl.pretext.registry.AnswerSpec`, in its ``answer``
module: :mod:`napari_ssl.pretext.rubik.answer`, :mod:`napari_ssl.pretext.planes.answer`, and the restoration view of
context restoration and Models Genesis, :mod:`napari_ssl.pretext._restoration.answer`).

:func:`answer` and :func:`describe` find a pretext's functions in its registry record; :func:`need` and
:func:`resize` are the checks and resizing the answer functions share;
:func:`~napari_ssl.training.pretrained.load_network` loads the network. No Qt here; the explorer runs these in a
child process.
"""

from __future__ import annotations

from typing import Any

from napari_ssl.io.volume import Volume
from napari_ssl.training.pretrained import PretrainedNetwork, load_network

__all__ = [
    "PretrainedNetwork",
    "answer",
    "answer_spec",
    "describe",
    "load_network",
    "need",
    "resize",
]


def _label(name: str) -> str:
    from napari_ssl.pretext import registry

    return registry.get(name).label if name in registry.names() else name


def need(network: PretrainedNetwork, pretext: str) -> None:
    if pretext not in network.pretexts:
        label = _label(pretext)
        raise ValueError(
            f"this network was not trained on {label} (it learned {', '.join(network.pretexts)}); "
            "choose a checkpoint pretrained with it"
        )


def resize(tensor: Any, size: tuple[int, ...]) -> Any:
    """``(N, C, *spatial)`` resized to ``size`` (linear; antialiased when shrinking 2D images)."""
    import torch.nn.functional as F

    if tuple(tensor.shape[2:]) == tuple(size):
        return tensor
    mode = "trilinear" if len(size) == 3 else "bilinear"
    shrink = len(size) == 2 and any(s < t for s, t in zip(size, tensor.shape[2:], strict=True))
    return F.interpolate(tensor, size=tuple(int(s) for s in size), mode=mode, align_corners=False,
                         antialias=shrink)


def answer_spec(pretext: str) -> Any:
    """The :class:`~napari_ssl.pretext.registry.AnswerSpec` of ``pretext``; ``ValueError`` with one sentence for
    an unknown pretext or one without a network answer view."""
    from napari_ssl.pretext import registry

    spec = registry.get(pretext)
    if spec.explorer.answer is None:
        raise ValueError(f"{spec.label} has no network answer view: the explorer shows only its samples")
    return spec.explorer.answer


def answer(network: PretrainedNetwork, pretext: str, volume: Volume, task: Any, params: Any) -> dict[str, Any]:
    """The network's answer for one sample of ``pretext``: its registry record's ``compute``."""
    from napari_ssl.pretext import registry

    name = registry.get(pretext).name
    return registry.resolve(answer_spec(name).compute)(network, volume, task, params, name)  # type: ignore[no-any-return]


def describe(pretext: str, result: dict[str, Any]) -> str:
    """One sentence on an answer, for the explorer's status line (the registry record's ``describe``)."""
    from napari_ssl.pretext import registry

    return str(registry.resolve(answer_spec(pretext).describe)(result, registry.get(pretext).label))
