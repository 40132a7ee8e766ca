"""The correction loop's core (:mod:`napari_ssl.training.corrections`): corrected masks stored as a case beside the
model, refused in one sentence when they cannot be one, and a new version continued from the model's weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_finetune_from import _hashes
from test_segment_shared import phantom

from napari_ssl import checkpoint, io
from napari_ssl.classes import parse_classes, remap_labels
from napari_ssl.training.corrections import (
    check_correction,
    class_source_ids,
    continue_config,
    correction_cases,
    corrections_dir,
    learn_from_correction,
    next_version,
    store_correction,
)
from napari_ssl.training.finetune import FinetuneConfig, finetune

FAST = {"steps": 2, "device": "cpu", "num_threads": 1, "amp": False, "warmup": 0}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny segmenter trained 2 steps on one phantom read from files (so later rounds can replay it)."""
    root = tmp_path_factory.mktemp("corr")
    image, labels = phantom(seed=0)
    io.write(image, root / "case0.nii.gz")
    io.write(labels, root / "case0_labels.nii.gz")
    config = FinetuneConfig(images=(str(root / "case0.nii.gz"),), labels=(str(root / "case0_labels.nii.gz"),),
                            classes="lesion=1", out=str(root / "lesions"), spacing=(2.0, 2.0, 2.0), patch_size=32,
                            backbone="tiny", val_fraction=0.0, **FAST)
    *_, done = finetune(config)
    return Path(done.path)


def test_class_indices_go_back_to_source_ids_that_remap_to_them() -> None:
    classes = parse_classes("whole_tumor=1+2+4,tumor_core=1+4,enhancing=4")
    ids = class_source_ids(classes)
    assert ids == {1: 2, 2: 1, 3: 4}  # later classes win where BraTS's regions overlap
    masks = np.array([0, 1, 2, 3, 1, 0])
    lut = np.zeros(4, int)
    for index, source in ids.items():
        lut[index] = source
    assert remap_labels(lut[masks], classes).tolist() == masks.tolist()


def test_versions_and_corrections_share_the_models_line(tmp_path) -> None:
    (tmp_path / "brats-v3").mkdir()
    assert corrections_dir(tmp_path / "brats") == tmp_path.resolve() / "brats-corrections"
    assert corrections_dir(tmp_path / "brats-v2") == tmp_path.resolve() / "brats-corrections"
    assert next_version(tmp_path / "brats", 1) == tmp_path.resolve() / "brats-v2"
    assert next_version(tmp_path / "brats-v2", 2) == tmp_path.resolve() / "brats-v4"  # v3 taken


@pytest.mark.parametrize("problem", ["shape", "grid", "class", "empty", "4d", "float", "channels"])
def test_masks_that_cannot_be_a_case_are_refused_in_one_sentence_and_nothing_is_written(model, problem) -> None:
    image, labels = phantom(seed=1)
    masks = labels
    channels = [image]
    if problem == "shape":
        masks = labels.with_array(labels.array[:-2])
    elif problem == "grid":
        masks = labels.with_array(labels.array, spacing=(3.0, 1.5, 1.5))
    elif problem == "class":
        masks = labels.with_array(labels.array * 3)
    elif problem == "empty":
        masks = labels.with_array(np.zeros_like(labels.array))
    elif problem == "4d":
        masks = labels.with_array(np.stack([labels.array] * 2))
    elif problem == "float":
        masks = labels.with_array(labels.array.astype(np.float32) * 0.5)
    elif problem == "channels":
        channels = [image, image]
    with pytest.raises(ValueError) as info:
        store_correction(model, channels, masks, scan_name="phantom", masks_name="phantom masks")
    message = str(info.value)
    assert "\n" not in message and len(message) < 240, message
    assert {"shape": "shape", "grid": "grid", "class": "not a class", "empty": "empty", "4d": "3D",
            "float": "float32", "channels": "input"}[problem] in message
    assert not corrections_dir(model).exists()


def test_a_correction_is_stored_beside_the_model_with_provenance(model) -> None:
    image, labels = phantom(seed=2)
    corrected = labels.with_array(labels.array.astype(np.int32))
    check_correction(corrected, [image], checkpoint.open_checkpoint(model).classes)
    case = store_correction(model, [image], corrected, scan_name="phantom 2", edited_voxels=17)
    try:
        assert case.folder.parent == corrections_dir(model) and case.folder.name == "001-phantom_2"
        assert [p.name for p in case.images] == ["image.nii.gz"]
        stored = io.read(case.images[0])
        assert np.array_equal(stored.array, image.array) and stored.same_geometry(image, atol=1e-4)
        assert np.array_equal(io.read(case.labels).array, labels.array)  # index 1 is source id 1 (lesion=1)
        prov = json.loads((case.folder / "case.json").read_text())
        weights = checkpoint.open_checkpoint(model).files["model.safetensors"]["sha256"]
        assert prov["model_sha256"] == weights and prov["model_version"] == 1 and prov["edited_voxels"] == 17
        assert prov["class_voxels"] == {"lesion": int(labels.array.sum())}
        assert [c.folder for c in correction_cases(model)] == [case.folder]
        kwargs = continue_config(model, model.parent / "lesions-v2")
        assert len(kwargs["images"]) == 2 and kwargs["val_fraction"] == 0.0  # its own file + the correction
        assert kwargs["case_weights"] == (1.0, 1.0)  # one own case, one correction: half the patches each
        assert kwargs["from_model"] == str(model) and kwargs["minutes"] == 2.0
    finally:
        import shutil

        shutil.rmtree(corrections_dir(model))


def test_two_rounds_make_two_versions_and_leave_each_previous_one_untouched(model) -> None:
    before = _hashes(model)
    image, labels = phantom(seed=3)
    events = list(learn_from_correction(model, [image], labels, scan_name="phantom", minutes=None, **FAST))
    v2 = Path(events[-1].path)
    assert v2 == model.parent / "lesions-v2"
    new = checkpoint.open_checkpoint(v2)
    assert new.model_version == 2 and new.continued_from["path"] == str(model)
    assert new.plan.spacing == (2.0, 2.0, 2.0) and new.patch_size == (32, 32, 32) and new.names[1] == "lesion"
    assert len(new.config["images"]) == 2 and new.step == 2
    assert _hashes(model) == before

    before2 = _hashes(v2)
    image, labels = phantom(seed=4)
    *_, done = learn_from_correction(v2, [image], labels, scan_name="phantom", minutes=None, **FAST)
    v3 = checkpoint.open_checkpoint(done.path)
    assert Path(done.path).name == "lesions-v3" and v3.model_version == 3
    assert len(v3.config["images"]) == 3  # the first file and both corrections, each once
    assert [c.folder.name for c in correction_cases(done.path)] == ["001-phantom", "002-phantom"]
    assert _hashes(v2) == before2 and _hashes(model) == before


def test_the_bundled_model_and_a_read_only_folder_are_refused_in_one_sentence(tmp_path, monkeypatch) -> None:
    import os
    import shutil

    import napari_ssl.training.corrections as corrections
    from napari_ssl.inference.bundled import PHANTOM_DEMO, bundled_path

    image, labels = phantom(seed=1)
    with pytest.raises(ValueError, match="bundled model"):
        store_correction(bundled_path(PHANTOM_DEMO), [image], labels)
    assert not corrections_dir(bundled_path(PHANTOM_DEMO)).exists()
    shared = tmp_path / "shared"
    shutil.copytree(bundled_path(PHANTOM_DEMO), shared / "demo")
    # a folder this user cannot write (as root every folder is writable: the check is asked, not the file system)
    monkeypatch.setattr(corrections.os, "access", lambda path, mode: Path(path) != shared.resolve())
    with pytest.raises(ValueError, match="cannot write beside the model"):
        store_correction(shared / "demo", [image], labels)
    assert not corrections_dir(shared / "demo").exists() and os.listdir(shared) == ["demo"]


def test_case_weights_draw_the_corrections_as_often_as_the_models_own_cases() -> None:
    from napari_ssl.training.augment import Case, PatchSampler

    cases = []
    for i in range(5):
        labels = np.zeros((20, 20, 20), np.uint8)
        labels[5:15, 5:15, 5:15] = 1
        cases.append(Case(f"c{i}", np.full((1, 20, 20, 20), float(i), np.float32), labels, [0.0],
                          weight=4.0 if i == 4 else 1.0))  # four own cases, one correction weighted 4
    sampler = PatchSampler(cases, (16, 16, 16), 1, augment=False, seed=0)
    drawn = [sampler.batch(step, 4)["image"][:, 0, 8, 8, 8] for step in range(100)]
    share = float(np.mean(np.concatenate(drawn) == 4.0))
    assert 0.4 < share < 0.6, share  # half the patches (uniform: a fifth)
    with pytest.raises(ValueError, match="case_weights"):
        FinetuneConfig(images=("a", "b"), labels=("a", "b"), classes="1", case_weights=(1.0,))
