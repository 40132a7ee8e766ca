"""Stand-in training generators for the relay tests, run in the spawned child.

Kept apart from ``test_relay.py`` so the child imports neither Qt nor napari (fast start). No tests here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_ssl.events import Finished, Progress, Started


@dataclass(frozen=True)
class Job:
    steps: int = 3
    out: str = ""
    delay: float = 0.0
    fail_at: int = -1


def counting(job: Job):
    """Progress per step; closing early (stop) writes ``out`` in ``finally`` like the engine's save."""
    yield Started(total=job.steps, device=str(os.getpid()))
    step = 0
    try:
        for step in range(1, job.steps + 1):
            if step == job.fail_at:
                raise FileNotFoundError(f"/no/such/folder: no such file or directory (step {step})")
            time.sleep(job.delay)
            yield Progress(step=step, total=job.steps, loss=1.0 / step, losses={"rubik": 1.0 / step})
        yield Finished(step=step, metrics={"acc": 1.0}, path=job.out or None)
    finally:
        if job.out and step < job.steps:
            Path(job.out).write_text(f"saved at {step}")


@dataclass(frozen=True)
class BigJob:
    """A job carrying a large in-memory array (like a selected CT layer)."""

    array: Any = None
    steps: int = 3


def big(job: BigJob):
    yield Started(total=job.steps, device=str(os.getpid()))
    for step in range(1, job.steps + 1):
        yield Progress(step=step, total=job.steps, loss=float(job.array.ravel()[0]))
    yield Finished(step=job.steps)
