"""References for metric checks: what the same network scores before any training (no tests here).

A metric in a range it can never leave proves nothing; a trained network must beat its own untrained copy on the
same held-out samples (the chance level of that task on that data, measured rather than assumed).
"""

from __future__ import annotations

from pathlib import Path


def untrained_copy(trained: Path, out: Path, seed: int = 0) -> Path:
    """A pretraining checkpoint at ``out`` holding ``trained``'s network as it was built, before its first step
    (seeded like the engine builds it), with ``trained``'s meta (grid, normalisation, pretext options) at step 0."""
    from dataclasses import replace

    import torch

    from napari_ssl import checkpoint
    from napari_ssl.models import PretrainModel

    meta = checkpoint.open_checkpoint(trained)
    torch.manual_seed(seed)
    state = PretrainModel(meta.model_spec()).state_dict()
    return checkpoint.save(out, state, replace(meta, step=0))
