"""A multi-channel segmenter end to end: two modalities per case from files (``--images t1,flair``), fine-tuned, then
segmenting a case it never saw with both channels; its inputs are named by modality and a wrong channel count is a
sentence."""

from __future__ import annotations

import numpy as np
import pytest
from test_segment_shared import phantom

from napari_ssl import io
from napari_ssl.inference.segment import load_model, segment
from napari_ssl.training.finetune import FinetuneConfig, finetune


def _case(folder, seed: int) -> tuple[str, str]:
    """A case as two modality files and its labels: t1 shows the lesion bright, flair dark (each alone suffices)."""
    image, labels = phantom(seed=seed)
    t1 = image.with_array(image.array.astype(np.float32))
    flair = image.with_array((200.0 - image.array).astype(np.float32))
    case = folder / f"case{seed}"
    case.mkdir()
    io.write(t1, case / "t1.nii.gz")
    io.write(flair, case / "flair.nii.gz")
    io.write(labels, case / "seg.nii.gz")
    return f"{case / 't1.nii.gz'},{case / 'flair.nii.gz'}", str(case / "seg.nii.gz")


@pytest.mark.slow
def test_two_modalities_train_and_segment_an_unseen_case(tmp_path) -> None:
    cases = [_case(tmp_path, seed) for seed in (0, 1, 2)]
    config = FinetuneConfig(images=tuple(c[0] for c in cases[:2]), labels=tuple(c[1] for c in cases[:2]),
                            classes="lesion=1", out=str(tmp_path / "model"), steps=80, backbone="tiny",
                            patch_size=32, device="cpu", val_fraction=0.0)
    events = list(finetune(config))
    assert type(events[-1]).__name__ == "Finished"
    model = load_model(tmp_path / "model")
    assert model.checkpoint.channels == ("t1", "flair")  # named by modality, never after a case
    unseen = [io.read(p) for p in cases[2][0].split(",")]
    truth = io.read(cases[2][1]).array > 0
    masks = segment(unseen, model, device="cpu")
    assert masks.same_geometry(unseen[0]) and masks.array.shape == truth.shape
    found = masks.array == 1
    dice = 2 * (found & truth).sum() / (found.sum() + truth.sum())
    trivial = 2 * truth.sum() / (truth.size + truth.sum())  # all foreground
    assert dice > max(0.5, trivial + 0.2), (dice, trivial)
    with pytest.raises(ValueError, match="t1, flair"):  # one channel for a two-channel model: a sentence
        segment(unseen[:1], model, device="cpu")
