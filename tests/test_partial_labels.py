"""Partial annotations: unpainted slices (``annotated="slices"``) and an explicit ignore label are skipped by the
loss (zero gradient), carried through resampling and augmentation, left out of the held-out Dice, never predicted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from napari_ssl import events
from napari_ssl.classes import IGNORE, describe_slices, painted_slices, parse_classes, remap_labels
from napari_ssl.io.volume import Volume
from napari_ssl.preprocess import Normalization
from napari_ssl.training.augment import Case, PatchSampler
from napari_ssl.training.cases import prepare_case
from napari_ssl.training.finetune import FinetuneConfig, dice_ce_loss, finetune, held_out_dice


def test_loss_gradient_is_zero_on_unpainted_slices() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (8, 6, 6))
    painted = np.zeros(8, bool)
    painted[::3] = True  # slices 0, 3, 6 painted
    target = np.where(painted[:, None, None], labels, IGNORE)
    logits = torch.tensor(rng.normal(size=(1, 3, 8, 6, 6)), dtype=torch.float32, requires_grad=True)
    loss = dice_ce_loss(logits, torch.from_numpy(target)[None, None])
    loss.backward()
    grad = logits.grad.abs().sum(dim=(0, 1, 3, 4)).numpy()
    assert np.all(grad[~painted] == 0.0)
    assert np.all(grad[painted] > 0)
    # nothing ignored: MONAI's Dice + CE, as fine-tuning used before
    full = torch.from_numpy(labels)[None, None]
    expected = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)(logits.detach(), full)
    assert torch.allclose(dice_ce_loss(logits.detach(), full), expected, atol=1e-6)
    # a patch wholly unlabelled teaches nothing (no NaN)
    none = dice_ce_loss(logits.detach(), torch.full((1, 1, 8, 6, 6), IGNORE))
    assert torch.isfinite(none) and float(none) == pytest.approx(0.0, abs=1e-6)


def test_painted_slices_and_ignore_label_reach_the_case() -> None:
    src = np.zeros((20, 12, 12), np.int16)
    src[::5, 4:8, 4:8] = 2  # every 5th slice painted
    src[1, :2, :2] = 9  # an explicit "unlabelled" value paints nothing
    assert describe_slices(painted_slices(src, (9,))) == "4 of 20 slices (every 5th)"
    classes = parse_classes("2")
    mapped = remap_labels(src, classes, (9,))
    assert mapped[1, 0, 0] == IGNORE and mapped[0, 5, 5] == 1
    image = Volume(np.random.default_rng(1).normal(size=src.shape).astype(np.float32), spacing=(1.0, 1.0, 1.0))
    norm = Normalization(mode="zscore")
    # resampled to another spacing: the ignore value travels through nearest-neighbour resampling, never a class
    case = prepare_case([image], image.with_array(src), classes, (2.0, 1.0, 1.0), norm, annotated="slices",
                        ignore_label=9)
    assert set(np.unique(case.labels).tolist()) == {0, 1, IGNORE}
    assert case.labels.shape[0] == 10
    labelled = case.labels != IGNORE
    assert 0 < labelled.mean() < 0.5  # only the painted slices are labelled
    rows = labelled.reshape(10, -1).all(1)  # slices wholly labelled (painted ones), the others wholly ignored
    assert rows.sum() >= 2 and np.all(labelled[~rows] == 0)
    assert all((case.labels[z] == 1).any() for z in np.flatnonzero(rows))
    full = prepare_case([image], image.with_array(src), classes, (2.0, 1.0, 1.0), norm)
    assert IGNORE not in full.labels  # "all": every 0 is background
    # augmented patches keep IGNORE as IGNORE, and non-forced patches centre on annotated voxels
    sampler = PatchSampler([Case("c", case.image, case.labels)], (8, 8, 8), 1, fg_ratio=0.0, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(6):
        _, label, _ = sampler.sample(rng)
        assert set(np.unique(label).tolist()) <= {0, 1, IGNORE}
        assert np.any(label != IGNORE)  # never a patch that is wholly unlabelled


def _brats_every_fifth(shared_data):
    from napari_ssl import io

    folder = shared_data / "brats" / "Brats18_2013_11_1"
    if not folder.is_dir():
        pytest.skip("BraTS case not found")
    flair, seg = io.read(folder / "flair.nii.gz"), io.read(folder / "seg.nii.gz")
    whole = (seg.array > 0).astype(np.uint8)
    keep = np.zeros(whole.shape[0], bool)
    keep[::5] = True
    partial = np.where(keep[:, None, None], whole, 0)
    # the slices holding the tumour are painted; other kept slices would look unpainted (all 0): a stroke of
    # background is what a user paints there, here the label value 2 (a class not trained)
    partial[keep & ~partial.reshape(len(keep), -1).any(1), 0, 0] = 2
    return flair, seg.with_array(partial), keep


def test_two_step_finetune_on_every_fifth_brats_slice(shared_data, tmp_path) -> None:
    from napari_ssl.inference.segment import load_model, segment

    flair, labels, keep = _brats_every_fifth(shared_data)
    assert describe_slices(painted_slices(labels.array)) == f"{keep.sum()} of {len(keep)} slices (every 5th)"
    config = FinetuneConfig(pairs=((flair, labels),), classes="whole_tumor=1", out=str(tmp_path / "m"), steps=2,
                            backbone="tiny", patch_size=32, spacing=(4.0, 4.0, 4.0), device="cpu", val_fraction=0.2,
                            annotated="slices", val_every=2, num_threads=1)
    evs = list(finetune(config))
    assert isinstance(evs[-1], events.Finished)
    losses = [e.loss for e in evs if isinstance(e, events.Progress)]
    assert len(losses) == 2 and all(np.isfinite(losses))
    validated = [e for e in evs if isinstance(e, events.Validated)]
    assert validated and all(0.0 <= v <= 1.0 for v in validated[-1].dice.values())
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert 0 < meta["labelled_fraction"] < 0.3  # every 5th slice: about a fifth of the voxels are labelled
    assert meta["config"]["annotated"] == "slices"
    model = load_model(tmp_path / "m")
    assert model.checkpoint.names == {0: "background", 1: "whole_tumor"}  # the ignore value is no class
    small = flair.with_array(flair.array[60:92, 80:144, 80:144])
    out = segment(small, model, device="cpu")
    assert set(np.unique(out.array).tolist()) <= {0, 1}


def test_out_of_range_label_still_one_sentence(tmp_path) -> None:
    rng = np.random.default_rng(0)
    image = Volume(rng.normal(size=(16, 16, 16)).astype(np.float32))
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[::4, 4:10, 4:10] = 3
    base = {"out": str(tmp_path / "m"), "steps": 1, "backbone": "tiny", "device": "cpu", "annotated": "slices"}
    with pytest.raises(ValueError, match=r"^no label file holds class class_7 \(ids 7\); the labels hold ids 3$"):
        next(finetune(FinetuneConfig(pairs=((image, image.with_array(labels)),), classes="7", **base)))
    with pytest.raises(ValueError, match="annotated must be 'all' or 'slices'"):
        FinetuneConfig(pairs=((image, image.with_array(labels)),), classes="3", annotated="some")
    with pytest.raises(ValueError, match="ignore_label must be a positive label value"):
        FinetuneConfig(pairs=((image, image.with_array(labels)),), classes="3", ignore_label=70000)
    with pytest.raises(ValueError, match="is the ignore label"):
        next(finetune(FinetuneConfig(pairs=((image, image.with_array(labels)),), classes="3", ignore_label=3,
                                     **{**base, "annotated": "all"})))
    assert not (tmp_path / "m").exists()


def test_cli_partial_flag() -> None:
    import argparse

    from napari_ssl.commands.finetune import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    common = ["--pretrained", "none", "--images", "a", "--labels", "b", "--classes", "1", "--out", "o"]
    assert parser.parse_args(common).annotated == "all"
    assert parser.parse_args([*common, "--partial"]).annotated == "slices"
    args = parser.parse_args([*common, "--annotated", "slices", "--ignore-label", "9"])
    assert (args.annotated, args.ignore_label) == ("slices", 9)


def test_held_out_dice_skips_unlabelled_voxels() -> None:
    classes = parse_classes("1")
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[0, 2:6, 2:6] = 1
    labels[2:] = IGNORE  # half the held-out case unlabelled
    pred = (labels == 1).astype(np.uint8)
    pred[2:] = 1  # whatever is predicted there does not count
    assert held_out_dice(pred, labels, classes) == {"class_1": pytest.approx(1.0)}
    pred[1, 0, 0] = 1  # a false positive on a labelled slice does
    assert held_out_dice(pred, labels, classes)["class_1"] < 1.0


def test_a_label_named_ignore_in_the_classes_file_is_unlabelled(tmp_path) -> None:
    rng = np.random.default_rng(0)
    image = Volume(rng.normal(size=(16, 16, 16)).astype(np.float32))
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[4:12, 4:12, 4:12] = 1
    labels[:, :, :3] = 9
    names = tmp_path / "classes.json"
    names.write_text(json.dumps({"1": "lesion", "9": "ignore"}))
    config = FinetuneConfig(pairs=((image, image.with_array(labels)),), classes="lesion", classes_file=str(names),
                            out=str(tmp_path / "m"), steps=1, backbone="tiny", patch_size=(16, 16, 32), device="cpu",
                            val_fraction=0.0, num_threads=1)
    assert isinstance(list(finetune(config))[-1], events.Finished)
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["ignore_label"] == 9 and meta["labelled_fraction"] == pytest.approx(13 / 16)
