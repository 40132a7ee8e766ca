"""Fine-tuning: class specs, label remapping, region Dice, config checks, bad inputs, and the liver run."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from test_segment_shared import LIVER_STEPS, finetune_from_pretraining, liver_model, phantom

from napari_ssl import checkpoint, events
from napari_ssl.training.finetune import (
    FinetuneConfig,
    Validated,
    dice_per_class,
    finetune,
    parse_classes,
    read_class_names,
    region_members,
    remap_labels,
)

NAMES = {1: "spleen", 5: "liver", 2: "kidney_right"}


def test_parse_classes_ids_names_groups(tmp_path) -> None:
    assert [(c.index, c.name, c.ids) for c in parse_classes("5,1", NAMES)] == [(1, "liver", (5,)), (2, "spleen", (1,))]
    assert [(c.name, c.ids) for c in parse_classes("liver, SPLEEN", NAMES)] == [("liver", (5,)), ("spleen", (1,))]
    brats = parse_classes("whole_tumor=1+2+4,tumor_core=1+4,enhancing=4")
    assert [(c.name, c.ids) for c in brats] == [("whole_tumor", (1, 2, 4)), ("tumor_core", (1, 4)), ("enhancing", (4,))]
    assert len({c.color for c in brats}) == 3
    assert parse_classes("organs=liver+spleen", NAMES)[0].ids == (5, 1)
    assert parse_classes("7")[0].name == "class_7"
    file = tmp_path / "classes.json"
    file.write_text(json.dumps({"5": "liver", "1": "spleen"}))
    assert read_class_names(file) == {5: "liver", 1: "spleen"}
    file.write_text(json.dumps({"liver": 5}))
    assert read_class_names(file) == {5: "liver"}


@pytest.mark.parametrize(
    ("spec", "names", "match"),
    [
        ("liver", None, "give a classes file"),
        ("livr", NAMES, "did you mean liver"),
        ("", NAMES, "no classes given"),
        ("=1+2", None, "needs a name"),
        ("a=1,a=2", None, "distinct"),
        ("0", None, "background 0 is implicit"),
    ],
)
def test_parse_classes_errors(spec, names, match) -> None:
    with pytest.raises(ValueError, match=match):
        parse_classes(spec, names)


def test_classes_file_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_class_names(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_class_names(bad)


def test_nested_groups_remap_and_region_dice() -> None:
    classes = parse_classes("whole_tumor=1+2+4,tumor_core=1+4,enhancing=4")
    labels = np.array([0, 1, 2, 4, 3, 2])
    mapped = remap_labels(labels, classes)
    assert mapped.tolist() == [0, 2, 1, 3, 0, 1]  # the last listed class containing an id wins
    assert region_members(classes) == [[1, 2, 3], [2, 3], [3]]
    pred = np.array([0, 3, 1, 3, 0, 0])  # core voxel called enhancing; one oedema voxel missed
    dice = dice_per_class(pred, mapped, classes)
    assert dice["whole_tumor"] == pytest.approx(2 * 3 / (3 + 4))
    assert dice["tumor_core"] == pytest.approx(1.0)
    assert dice["enhancing"] == pytest.approx(2 * 1 / (2 + 1))
    assert dice_per_class(np.zeros(4, int), np.zeros(4, int), classes[:1]) == {"whole_tumor": 1.0}


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"labels": ()}, "one label volume per image"),
        ({"classes": ()}, "no classes"),
        ({"patch_size": 24}, "multiples of 16"),
        ({"patch_size": 16}, "one voxel at the U-Net's bottleneck"),
        ({"label_fraction": 0.0}, "label_fraction"),
        ({"backbone": "huge"}, "backbone"),
        ({"steps": 0}, "steps"),
    ],
)
def test_config_errors(changes, match) -> None:
    values = {"images": ("a.nii.gz",), "labels": ("b.nii.gz",), "classes": "1"}
    values.update(changes)
    with pytest.raises(ValueError, match=match):
        FinetuneConfig(**values)


def test_bad_inputs_are_reported_before_training(tmp_path) -> None:
    image, labels = phantom()
    empty = labels.with_array(np.zeros_like(labels.array))
    base = {"classes": "1", "out": str(tmp_path / "m"), "steps": 1, "backbone": "tiny", "device": "cpu"}
    with pytest.raises(ValueError, match=r"empty \(all 0\)"):
        next(finetune(FinetuneConfig(pairs=((image, empty),), **base)))
    with pytest.raises(ValueError, match=r"no label file holds class class_1 \(ids 1\); the labels hold ids 3"):
        next(finetune(FinetuneConfig(pairs=((image, labels.with_array(labels.array * 3)),), **base)))
    with pytest.raises(ValueError, match=r"no label file holds class class_9 \(ids 9\)"):  # one class of two absent
        next(finetune(FinetuneConfig(pairs=((image, labels),), **{**base, "classes": "1,9"})))
    flat = image.with_array(image.array[:1])
    with pytest.raises(ValueError, match="2D image"):
        next(finetune(FinetuneConfig(pairs=((flat, labels.with_array(labels.array[:1])),), **base)))
    with pytest.raises(ValueError, match="do not match image"):
        next(finetune(FinetuneConfig(pairs=((image, labels.with_array(labels.array[:-2])),), **base)))
    with pytest.raises(OSError, match="no such file"):
        next(finetune(FinetuneConfig(images=(str(tmp_path / "nope.nii.gz"),), labels=("x",), classes="1")))
    fake = checkpoint.save(tmp_path / "planes", {}, {"kind": "pretrain", "pretexts": ["planes"], "backbones": {"3d": None}})
    with pytest.raises(ValueError, match="holds no backbone"):  # a planes checkpoint with its 2D U-Net transfers
        next(finetune(FinetuneConfig(pairs=((image, labels),), pretrained=str(fake), **base)))
    assert not (tmp_path / "m").exists()


def test_cancel_saves_a_loadable_checkpoint(tmp_path) -> None:
    from napari_ssl.inference.segment import load_model

    image, labels = phantom()
    config = FinetuneConfig(pairs=((image, labels),), classes="lesion=1", out=str(tmp_path / "m"), steps=50,
                            backbone="tiny", patch_size=32, device="cpu", val_fraction=0.0)
    gen = finetune(config)
    seen = [next(gen) for _ in range(3)]
    assert isinstance(seen[0], events.Started) and isinstance(seen[2], events.Progress)
    gen.close()
    model = load_model(tmp_path / "m")
    assert model.checkpoint.step == 2 and model.checkpoint.names == {0: "background", 1: "lesion"}


def test_transfer_from_pretraining_checkpoint(tmp_path) -> None:
    """The encoder of a pretraining checkpoint is loaded; context restoration's residual decoder only on request."""
    import torch

    from napari_ssl.inference.segment import load_model

    state, model, config = finetune_from_pretraining(tmp_path, ("context",))
    info = model.checkpoint.pretrained
    assert info["parts"] == ["encoder"] and model.checkpoint.backbone.size == "tiny"
    *_, both = finetune(replace(config, out=str(tmp_path / "seg2"), transfer="encoder+decoder"))
    up = "net.upcat_2.convs.conv_0.conv.weight"
    both_info = load_model(both.path).checkpoint.pretrained
    assert both_info["parts"] == ["encoder", "decoder"] and both_info["n_tensors"] > info["n_tensors"]
    assert torch.allclose(load_model(both.path).net.state_dict()[up], state["backbone3d." + up], atol=1e-6)
    pre = checkpoint.open_checkpoint(tmp_path / "ssl")  # the plan follows the pretraining's grid and intensities
    seg = model.checkpoint
    assert seg.spacing == pre.spacing == seg.plan.spacing and seg.plan.sources["spacing"] == "checkpoint"
    assert seg.normalization == pre.normalization
    assert seg.patch_size == seg.plan.patch_size
    own = model.net.state_dict()
    key = "net.down_2.convs.conv_0.conv.weight"
    assert torch.allclose(own[key], state["backbone3d." + key], atol=1e-6)
    with pytest.raises(ValueError, match="differs from the pretrained"):
        next(finetune(FinetuneConfig(pairs=config.pairs, classes="1", pretrained=str(tmp_path / "ssl"),
                                     backbone="small", out=str(tmp_path / "x"))))


@pytest.mark.slow
def test_liver_dice_on_held_out_slices(shared_data, tmp_path_factory) -> None:
    """Liver from scratch on ct_organs: tiny U-Net, 30 steps of 2 x 32^3 patches at 3 x 6 x 6 mm, lr 1e-2.

    The last quarter of the slices (8 of 30, the cranial end) is held out. There the liver fills ~16% of
    the voxels: calling everything liver scores Dice ~0.28, random guessing ~0.16. We assert Dice >= 0.45
    on slices the network never saw (measured: 0.55 at this budget; a 30-step CPU budget is what the
    test suite can afford on 2 cores, so the margin to chance, not to a good model, is what is checked).
    """
    path, evs = liver_model(shared_data, tmp_path_factory.mktemp("liver"))
    final = next(e for e in evs if isinstance(e, events.Finished))
    vals = [e for e in evs if isinstance(e, Validated)]
    assert [v.step for v in vals] == [LIVER_STEPS // 2, LIVER_STEPS]
    print(f"liver held-out Dice by step: {[(v.step, round(v.dice['liver'], 3)) for v in vals]}")
    assert final.metrics["dice/liver"] >= 0.45
    meta = checkpoint.open_checkpoint(path)
    assert [(c.index, c.name, c.ids) for c in meta.classes] == [(1, "liver", (5,))]
    assert meta.normalization.mode == "ct" and meta.spacing == (3.0, 6.0, 6.0)
    assert meta.patch_size == (32, 32, 32) and meta.validation.startswith("slices")
    losses = meta.history["loss"]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_cli_bad_budget_and_grid_give_one_line_and_write_nothing(tmp_path, capsys) -> None:
    from napari_ssl import io
    from napari_ssl.cli import main

    image, labels = phantom()
    img = io.write(image, tmp_path / "img.nii.gz")
    lab = io.write(labels, tmp_path / "lab.nii.gz")
    off = io.write(labels.with_array(labels.array[:, :-3]), tmp_path / "off.nii.gz")  # not the image's grid
    base = ["finetune", "--pretrained", "none", "--images", str(img), "--classes", "1", "--out", str(tmp_path / "m")]
    for extra, message in (
        (["--labels", str(lab), "--minutes", "0"], "minutes must be a positive number"),
        (["--labels", str(off), "--steps", "1"], "do not match image"),
        (["--labels", str(lab), "--classes", "1,7", "--steps", "1"], r"no label file holds class class_7 \(ids 7\)"),
    ):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("napari-ssl finetune: error: "), err
        import re

        assert re.search(message, err[0]), err
    assert not (tmp_path / "m").exists()


def test_few_cases_all_train_twenty_hold_out_a_fifth(tmp_path) -> None:
    """The automatic hold-out (``val_fraction=None``): below 20 labelled cases every case trains (the plan says so);
    from 20 on, a fifth is held out; a given fraction always wins."""
    from napari_ssl.training.config import HOLD_OUT_MIN_CASES, held_out_fraction

    assert [held_out_fraction(None, n) for n in (1, 10, HOLD_OUT_MIN_CASES - 1, HOLD_OUT_MIN_CASES)] == [0, 0, 0, 0.2]
    assert held_out_fraction(0.3, 3) == 0.3 and held_out_fraction(0.0, 50) == 0.0

    def started(n_cases: int, **kw) -> events.Started:
        pairs = tuple(phantom(shape=(16, 20, 18), seed=k) for k in range(n_cases))
        config = FinetuneConfig(pairs=pairs, classes="lesion=1", out=str(tmp_path / f"m{n_cases}"), steps=5,
                                backbone="tiny", patch_size=32, device="cpu", **kw)
        gen = finetune(config)
        event = next(gen)
        gen.close()
        assert isinstance(event, events.Started)
        return event

    few = started(3)
    assert (few.n_train, few.n_val) == (3, 0)
    assert "held out: none; all 3 case(s) train and the last weights are kept" in few.plan_text
    many = started(HOLD_OUT_MIN_CASES)
    assert (many.n_train, many.n_val) == (16, 4)
    assert "held out: 20% of the cases" in many.plan_text
    given = started(3, val_fraction=0.2)
    assert (given.n_train, given.n_val) == (2, 1) and "held out:" not in given.plan_text
