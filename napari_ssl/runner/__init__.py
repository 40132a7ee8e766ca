"""Child processes for every heavy job (pretraining, fine-tuning, segmentation, any model load): :class:`Runner`
starts ``"module:function"(config)`` in a child from a clean entry point (:mod:`.server`, run as ``python -m
napari_ssl.runner``; never ``multiprocessing``'s spawn, so a user's script without a main guard is not re-run), forked
where it can be from a warm server that has already imported torch and MONAI (:mod:`.pool`), and relays its events
back (:mod:`.process`).

Owns processes and their plumbing; imports only :mod:`napari_ssl.events` at the top (a job's module is imported by
name, in the child), never Qt or napari: the docks' thread workers (:mod:`napari_ssl._napari.relay`) and the CLI use it.
"""

from napari_ssl.runner.process import (
    ChildCrashed,
    Runner,
    RunnerError,
    prewarm,
    resolve_target,
    shutdown_server,
)

__all__ = ["ChildCrashed", "Runner", "RunnerError", "prewarm", "resolve_target", "shutdown_server"]
