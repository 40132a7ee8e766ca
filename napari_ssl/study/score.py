"""What a pretraining checkpoint learned, on scans it never saw: each pretext's metric on held-out samples.

:func:`score` draws ``samples`` pretext samples from the given scans (on the checkpoint's grid, normalisation and
pretext options; a random stream of its own) and averages the model's metrics: ``rubik/perm_top1`` and
``rubik/rot_acc`` (Rubik's cube), ``context/psnr_gain`` (dB over the corrupted input), ``planes/angle_error_deg``
and ``planes/position_mae`` (imaging planes), ``genesis/psnr_gain`` (Models Genesis), and the other metrics each
registered pretext reports (:mod:`napari_ssl.pretext.registry`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from napari_ssl.metrics import mean_metrics  # re-exported: score's own measure


def score(model: str | os.PathLike[str], data: Sequence[Any], *, samples: int = 32, batch_size: int = 4,
          seed: int = 0, device: str = "auto") -> dict[str, float]:
    """Mean pretext metrics of pretraining checkpoint ``model`` on ``data`` (paths, Volumes or arrays).

    Raises
    ------
    ValueError
        A checkpoint that is not a pretraining one, no 3D scan in ``data``, ``samples`` < 1.
    """
    from napari_ssl.pretext.planes.native import check_3d
    from napari_ssl.training.data import PretextDataset, SampleSpec, load_volumes, read_sources
    from napari_ssl.training.pretrain import make_pretext
    from napari_ssl.training.pretrained import load_network

    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    network = load_network(model, device, purpose="score measures what pretraining learned")
    info, net, dev = network.info, network.net, network.device
    sources = read_sources(list(data))
    if info.native_views:  # planes trained on native 2D views: score the views never trained on
        from napari_ssl.pretext.planes.native import native_score

        return native_score(net, info.native_views, sources, info.normalization, samples=samples,
                            batch_size=batch_size, seed=seed, device=dev)
    check_3d(info.pretexts, sources, data)  # Rubik / context on 2D views only: one clear line
    volumes = load_volumes(sources, spacing=info.spacing, normalization=info.normalization)
    pretexts = {name: make_pretext(name, info.pretext_options.get(name, {})) for name in info.pretexts}
    spec = SampleSpec(patch=tuple(info.patch_size), pretexts=pretexts,  # type: ignore[arg-type]
                      foreground=bool((info.config or {}).get("foreground", False)))
    dataset = PretextDataset(volumes, spec, seed + 2_000_003, samples, windowed=False)  # a score draws from every scan
    return mean_metrics(net, dataset, samples=samples, batch_size=batch_size, device=dev)


__all__ = ["mean_metrics", "score"]
