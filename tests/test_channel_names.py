"""A model's inputs are named by modality or channel, never after the first case."""

from __future__ import annotations

import numpy as np

from napari_ssl.io.volume import Volume
from napari_ssl.training.cases import channel_names, modality_of


def vol(path: str | None = None, name: str | None = None) -> Volume:
    return Volume(np.zeros((4, 4, 4), np.float32), path=path, name=name)


def test_a_flat_folder_of_case_files_names_no_case() -> None:
    cases = [[vol(f"/data/images/Brats18_2013_{i}_1.nii.gz")] for i in range(3)]
    assert channel_names(cases) == ["image"]  # was "Brats18_2013_0_1"


def test_modality_words_name_the_channels() -> None:
    cases = [[vol(f"/brats/{c}/{m}.nii.gz") for m in ("t1", "t1ce", "t2", "flair")] for c in ("A", "B")]
    assert channel_names(cases) == ["t1", "t1ce", "t2", "flair"]
    layers = [[vol(name="Brats18_2013_11_1_flair"), vol(name="Brats18_2013_11_1_t1ce")]]
    assert channel_names(layers) == ["flair", "t1ce"]
    assert modality_of("ct_thorax_abdomen") == "ct" and modality_of("t1ce") == "t1ce" and modality_of("scan") is None


def test_a_name_every_case_shares_is_kept_and_unknown_channels_are_numbered() -> None:
    shared = [[vol(f"/x/{c}/bold_mean.nii.gz")] for c in ("a", "b")]
    assert channel_names(shared) == ["bold_mean"]
    mixed = [[vol(name="scan"), vol(name="other")]]
    assert channel_names(mixed) == ["channel 1", "channel 2"]
