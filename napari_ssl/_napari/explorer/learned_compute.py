"""The explorer's "what the network learned", GUI-thread side (no torch here): the question put to the network and
the answer it gives back.

:func:`answer_request` turns the shown preview into a :class:`~napari_ssl._napari.jobs.AnswerRequest` (the same scan,
pretext object and params; where the pretext's ``AnswerSpec.at_step`` says so, the step the slider shows); the
network is loaded and asked in a child process (:func:`~napari_ssl._napari.jobs.answer_job`), as every other model
load of the docks, and its :class:`~napari_ssl._napari.jobs.Answered` becomes a :class:`LearnedAnswer` of that
preview.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LearnedAnswer", "answer_request", "checkpoint_label", "pretrain_meta"]


@dataclass(eq=False)
class LearnedAnswer:
    """The network's answer on one preview: ``result`` from :func:`napari_ssl.study.answers.answer` and a sentence."""

    preview: Any
    path: str
    result: dict[str, Any]
    summary: str

    @property
    def pretext(self) -> str:
        return str(self.preview.request.pretext)


def pretrain_meta(path: str) -> Any:
    """The typed :class:`~napari_ssl.meta.PretrainCheckpoint` at ``path`` (a small JSON read, no torch);
    ``ValueError`` / ``OSError`` with one sentence for anything else (a segmenter, a file that is not a checkpoint,
    a missing folder)."""
    from napari_ssl import checkpoint

    try:
        return checkpoint.open_checkpoint(path, kinds=("pretrain",))
    except checkpoint.CheckpointKindError as exc:
        raise ValueError(
            f"{Path(path).name} is a {exc.kind or 'unknown'} checkpoint; the explorer shows what a "
            "pretraining network learned: choose a folder written by napari-ssl pretrain"
        ) from None


def checkpoint_label(path: str, meta: Any) -> str:
    """``name (pretexts, step N)`` for the checkpoint list (``meta``: a typed PretrainCheckpoint)."""
    return f"{Path(path).name} ({', '.join(meta.pretexts)}, step {meta.step})"


def answer_request(path: str, preview: Any) -> Any:
    """What to ask the network of ``path`` about the sample ``preview`` shows.

    Raises
    ------
    ValueError
        A pretext without a network answer view, or a preview of acquired views rather than of one 3D scan.
    """
    from napari_ssl._napari.jobs import AnswerRequest
    from napari_ssl.study.answers import answer_spec

    request = preview.request
    answer_spec(request.pretext)  # ValueError: this pretext has no network answer view
    if request.volume is None or preview.world:
        raise ValueError("the network answers on planes resampled from one 3D scan; pick a scan, not 'All views'")
    return AnswerRequest(path=str(path), pretext=request.pretext, volume=request.volume, task=preview.task,
                         params=preview.params, step=request.step)
