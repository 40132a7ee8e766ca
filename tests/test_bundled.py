"""The bundled demonstration model: a valid segmenter that finds the sample phantom's lesion, found by name."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssl import checkpoint
from napari_ssl.inference.bundled import (
    BUNDLED,
    DEMO_DESCRIPTION,
    PHANTOM_DEMO,
    bundled_name,
    bundled_path,
    resolve_model,
)
from napari_ssl.phantom import PHANTOM_CLASSES, make_phantom

LESION = next(k for k, v in PHANTOM_CLASSES.items() if v[0] == "lesion")


def test_bundled_checkpoint_is_a_small_valid_segmenter() -> None:
    folder = bundled_path(PHANTOM_DEMO)
    info = checkpoint.open_checkpoint(folder)  # the typed reader: refuses an incomplete or foreign meta.json
    assert info.kind == "segment" and [c.name for c in info.classes] == ["lesion"]
    assert [c.ids for c in info.classes] == [(LESION,)] and info.in_channels == 1
    assert info.description == DEMO_DESCRIPTION and info.backbone is not None and info.backbone.size == "tiny"
    assert "phantom seed 0" not in info.train_cases and info.train_cases  # the sample (seed 0) was never seen
    assert info.fingerprint and info.fingerprint["foreground"]["p99_5"] > info.fingerprint["foreground"]["p00_5"]
    # written before one version number (format 1 + meta_version 2, spacing also in the plan): still opens as is
    assert info.spacing == info.plan.spacing == (2.5, 1.5, 1.5) and info.patch_size == (32, 64, 64)
    state, loaded = checkpoint.load(folder)  # sizes and SHA-256 of the files verified
    assert state and loaded == info and set(info.files) == {"model.safetensors"}  # no optimizer state shipped
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.safetensors"]
    assert sum(p.stat().st_size for p in folder.iterdir()) < 2_000_000


def test_bundled_model_segments_the_unseen_sample_phantom() -> None:
    from napari_ssl.inference.segment import load_model, segment

    image, labels = make_phantom(seed=0)  # the sample data
    model = load_model(resolve_model(PHANTOM_DEMO), device="cpu")
    mask = segment(image, model, overlap=0.5)
    truth, found = labels.array == LESION, mask.array == 1
    dice = 2 * np.sum(truth & found) / (truth.sum() + found.sum())
    assert mask.same_geometry(image) and dice > 0.8, dice


def test_names_resolve_and_a_real_folder_wins(tmp_path, monkeypatch) -> None:
    assert set(BUNDLED) == {PHANTOM_DEMO}
    assert resolve_model(PHANTOM_DEMO) == bundled_path(PHANTOM_DEMO)
    assert bundled_name(bundled_path(PHANTOM_DEMO)) == PHANTOM_DEMO and bundled_name(tmp_path) is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / PHANTOM_DEMO).mkdir()
    assert resolve_model(PHANTOM_DEMO).resolve() == (tmp_path / PHANTOM_DEMO).resolve()  # the user's own folder
    assert resolve_model("nothing-here") == tmp_path.joinpath("nothing-here").relative_to(tmp_path)
    with pytest.raises(KeyError):
        bundled_path("nothing-here")
