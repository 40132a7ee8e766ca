"""A short fine-tune with the default plan on one shared BraTS case finds the tumour on a case it never saw.

Whole tumour from FLAIR, one labelled case, every setting from the plan except a short budget (60 steps instead of
the plan's 1000); then one-click segmentation (the CLI's code path) of an unseen case, compared with what trivial
masks score on that same case: all foreground, all background and a random mask with the true tumour fraction.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssl import events, io


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = pred.sum() + truth.sum()
    return float(2 * np.logical_and(pred, truth).sum() / total) if total else 1.0


@pytest.mark.slow
def test_default_recipe_beats_trivial_masks_on_an_unseen_case(shared_data, tmp_path) -> None:
    from napari_ssl.inference.segment import load_model, segment
    from napari_ssl.training.finetune import FinetuneConfig, finetune

    cases = sorted(p for p in (shared_data / "brats").iterdir() if p.is_dir())
    train, test = cases[0], cases[-1]
    config = FinetuneConfig(images=(str(train / "flair.nii.gz"),), labels=(str(train / "seg.nii.gz"),),
                            classes="whole_tumor=1+2+4", out=str(tmp_path / "model"), steps=60, val_fraction=0.0)
    seen = list(finetune(config))
    started = seen[0]
    assert isinstance(started, events.Started) and started.plan["normalization"]["mode"] == "zscore_nonzero"
    assert started.plan["patch_size"] == [64, 64, 64] and "spacing" in started.plan_text
    losses = [e.loss for e in seen if isinstance(e, events.Progress)]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])

    scan = io.read(test / "flair.nii.gz")
    truth = np.isin(io.read(test / "seg.nii.gz").array, (1, 2, 4))
    mask = segment(scan, load_model(tmp_path / "model")).array > 0
    dice = _dice(mask, truth)
    rng = np.random.default_rng(0)
    trivial = {
        "all foreground": _dice(np.ones_like(truth), truth),
        "all background": _dice(np.zeros_like(truth), truth),
        "random": _dice(rng.random(truth.shape) < truth.mean(), truth),
    }
    print(f"unseen-case whole-tumour Dice {dice:.3f}; trivial masks {trivial}")
    assert dice > max(trivial.values()) + 0.15, (dice, trivial)
    assert mask.mean() < 0.2  # a tumour, not the background
