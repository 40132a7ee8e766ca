"""Held-out measures of a network over a dataset: :func:`mean_metrics`, shared by :mod:`napari_ssl.study.score` and the
native-views scoring of :mod:`napari_ssl.pretext.planes.native` (its own module so neither imports the other's
caller: no import circle through the pretraining task)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["mean_metrics"]


def mean_metrics(net: Any, dataset: Any, *, samples: int, batch_size: int, device: Any,
                 measure: Callable[[Any, Mapping[str, Any]], Mapping[str, Any]] | None = None) -> dict[str, float]:
    """Mean of ``measure(output, batch)`` (default ``net.metrics``) over the first ``samples`` samples of
    ``dataset``, each batch weighted by its size; no gradients."""
    import torch

    measure = measure or net.metrics
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(samples)), batch_size=batch_size)
    with torch.no_grad():
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            n = len(next(iter(batch.values())))
            for key, value in measure(net(batch), batch).items():
                totals[key] = totals.get(key, 0.0) + float(value) * n
                counts[key] = counts.get(key, 0) + n
    return {k: totals[k] / counts[k] for k in sorted(totals)}
