"""The explorer's "what the network learned", worker side (no Qt): the network's answer on the shown preview.

:func:`compute_answer` runs in a napari ``thread_worker``: it loads the pretraining checkpoint once (kept while
its files are unchanged) and calls :func:`napari_ssl.study.answers.answer` on exactly the sample the preview shows
(the same scan, pretext object and params; where the pretext's ``AnswerSpec.at_step`` says so, the steps shown by
the slider, e.g. context restoration's swaps).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LearnedAnswer", "checkpoint_label", "compute_answer", "network", "pretrain_meta"]

_LOCK = threading.Lock()
_NETWORKS: dict[str, tuple[tuple[int, ...], Any]] = {}


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


def _stamp(path: Path) -> tuple[int, ...]:
    from napari_ssl.checkpoint import META_FILE, MODEL_FILE

    return tuple((path / name).stat().st_mtime_ns for name in (META_FILE, MODEL_FILE) if (path / name).exists())


def network(path: str) -> Any:
    """The loaded :class:`~napari_ssl.study.answers.PretrainedNetwork` of ``path`` (reloaded when its files change)."""
    from napari_ssl.training.pretrained import load_network

    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    key = str(folder.resolve())
    with _LOCK:  # worker threads only
        stamp = _stamp(folder)
        cached = _NETWORKS.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        loaded = load_network(folder, "cpu", purpose="the explorer shows what a pretraining network learned")
        _NETWORKS.clear()  # one network at a time in memory
        _NETWORKS[key] = (stamp, loaded)
        return loaded


def compute_answer(path: str, preview: Any) -> LearnedAnswer:
    """The network of ``path`` on the sample ``preview`` shows (the worker's whole job).

    Raises
    ------
    ValueError
        Not a pretraining checkpoint, a pretext it did not learn, parameters it cannot answer (the message
        says which), or a preview of acquired views rather than of one 3D scan.
    """
    from napari_ssl.pretext.registry import resolve
    from napari_ssl.study.answers import answer, answer_spec, describe

    request = preview.request
    spec = answer_spec(request.pretext)  # ValueError: this pretext has no network answer view
    if request.volume is None or preview.world:
        raise ValueError("the network answers on planes resampled from one 3D scan; pick a scan, not 'All views'")
    net = network(path)
    params = preview.params
    if spec.at_step is not None:  # the network answers on what the step slider shows
        params = resolve(spec.at_step)(params, request.step)
    result = answer(net, request.pretext, request.volume, preview.task, params)
    return LearnedAnswer(preview=preview, path=str(path), result=result, summary=describe(request.pretext, result))
