"""Every dock refuses a layer it cannot use with a sentence naming the layer and the reason, before any process
starts, and stays usable (2D, 4D, RGB, Labels where an Image is needed, multiscale, too small)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin_path import open_dock
from test_segment_shared import random_checkpoint

pytestmark = [pytest.mark.gui]

rng = np.random.default_rng(0)
BAD = {  # name -> (layer kind, data, extra kwargs, words the sentence must hold)
    "flat": ("image", rng.random((40, 40)), {}, "2D image"),
    "movie": ("image", rng.random((3, 16, 16, 16)), {}, "4 dimensions"),
    "photo": ("image", rng.random((10, 16, 16, 3)), {"rgb": True}, "RGB"),
    "seg": ("labels", np.ones((16, 16, 16), np.uint8), {}, "Labels layer"),
    "pyramid": ("image", [rng.random((32, 32, 32)), rng.random((16, 16, 16))], {"multiscale": True}, "multiscale"),
    "sliver": ("image", rng.random((4, 16, 16)), {}, "too small"),
}


def messages():
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]


def add(viewer, name):
    kind, data, extra, _ = BAD[name]
    layer = getattr(viewer, f"add_{kind}")(data, name=name, **extra)
    viewer.layers.selection.active = layer
    return layer


@pytest.mark.parametrize("name", list(BAD))
def test_pretrain_dock_refuses(make_napari_viewer, name) -> None:

    viewer = make_napari_viewer()
    dock = open_dock(viewer, "Pretrain")
    add(viewer, name)
    assert dock.start() is None
    assert f"'{name}'" in messages()[-1] and BAD[name][3] in messages()[-1]
    assert dock.relay is None and dock.start_button.isEnabled()


@pytest.mark.parametrize("name", list(BAD))
def test_finetune_dock_refuses(make_napari_viewer, name) -> None:

    viewer = make_napari_viewer()
    viewer.add_labels(np.ones((16, 16, 16), np.uint8), name="truth")
    dock = open_dock(viewer, "Fine-tune")
    add(viewer, name)
    if name != "seg":
        dock.form.image_box.setCurrentText(name)
    dock.form.label_box.setCurrentText("truth")
    dock.form.add_pair()
    assert f"'{name}'" in messages()[-1] and BAD[name][3] in messages()[-1]
    assert not dock.form.pairs and dock.relay is None and dock.start_button.isEnabled()


@pytest.mark.parametrize("name", list(BAD))
def test_segment_dock_refuses(make_napari_viewer, tmp_path, name) -> None:

    viewer = make_napari_viewer()
    dock = open_dock(viewer, "Segment")
    add(viewer, name)
    dock.model_box.setCurrentText(str(random_checkpoint(tmp_path / "model")))
    if name != "seg":
        dock.channel_boxes[0].setCurrentText(name)
    assert dock.run() is None
    assert f"'{name}'" in messages()[-1] and BAD[name][3] in messages()[-1]
    assert dock.relay is None and dock.run_button.isEnabled()


def test_missing_folders_are_reported_at_once(make_napari_viewer, tmp_path) -> None:

    viewer = make_napari_viewer()
    viewer.add_image(rng.random((16, 16, 16)), name="scan")
    viewer.add_labels(np.ones((16, 16, 16), np.uint8), name="truth")
    dock = open_dock(viewer, "Fine-tune")
    dock.form.image_box.setCurrentText("scan")
    dock.form.label_box.setCurrentText("truth")
    dock.form.add_pair()
    dock.form.pretrained.path = tmp_path / "nowhere"
    assert dock.start() is None and "nowhere does not exist" in messages()[-1]
    pretrain = open_dock(viewer, "Pretrain")
    viewer.layers.selection.active = viewer.layers["scan"]
    pretrain.form.resume.path = tmp_path / "gone"
    assert pretrain.start() is None and "gone is not a checkpoint folder" in messages()[-1]


def test_finetune_dock_offers_a_renamed_layer_under_its_new_name(make_napari_viewer) -> None:

    viewer = make_napari_viewer()
    viewer.add_image(rng.random((16, 16, 16)).astype(np.float32), name="scan")
    viewer.add_labels(np.ones((16, 16, 16), np.uint8), name="truth")
    dock = open_dock(viewer, "Fine-tune")
    viewer.layers["scan"].name = "flair"
    viewer.layers["truth"].name = "seg"
    assert dock.form.image_box.currentText() == "flair" and dock.form.label_box.currentText() == "seg"
    dock.form.add_pair()  # was a KeyError on the old name
    assert dock.form.pairs == [("flair", "seg")]
    viewer.layers["flair"].name = "flair 1mm"  # a pair follows its layers' renames
    assert dock.form.pairs == [("flair 1mm", "seg")] and dock.form.pair_list.item(0).text() == "flair 1mm  +  seg"
    assert len(dock.form.collect()["pairs"]) == 1  # Start would use it
    viewer.layers.remove("seg")  # a removed layer takes its pair with it (the dock keeps no removed layer alive)
    assert dock.form.pairs == [] and dock.form.pair_list.count() == 0 and "went with its layer" in messages()[-1]


def test_finetune_pairs_survive_the_plugin_proxy(make_napari_viewer) -> None:
    """From the Plugins menu every layer access returns a new proxy: an added pair used to be "gone" at Start,
    and opening any further layer emptied the pair list."""
    viewer = make_napari_viewer()
    viewer.add_image(rng.random((16, 16, 16)).astype(np.float32), name="flair")
    viewer.add_labels(np.ones((16, 16, 16), np.uint8), name="seg")
    dock = open_dock(viewer, "Fine-tune")
    dock.form.image_box.setCurrentText("flair")
    dock.form.label_box.setCurrentText("seg")
    dock.form.add_pair()
    assert dock.form.pairs == [("flair", "seg")]
    viewer.add_image(rng.random((16, 16, 16)).astype(np.float32), name="t1")  # opening another file
    assert dock.form.pairs == [("flair", "seg")]
    collected = dock.form.collect()  # was "layer 'flair' is gone; remove its pair"
    assert len(collected["pairs"]) == 1
    image, labels = collected["pairs"][0]
    assert image.name == "flair" and labels.name == "seg"
    viewer.layers.remove("seg")
    assert dock.form.pairs == []


def test_segment_pickers_keep_their_layers_through_the_proxy(make_napari_viewer, tmp_path) -> None:
    viewer = make_napari_viewer()
    viewer.add_image(rng.random((16, 16, 16)).astype(np.float32), name="a")
    viewer.add_image(rng.random((16, 16, 16)).astype(np.float32), name="b")
    dock = open_dock(viewer, "Segment")
    pickers = dock.scans
    pickers.set_inputs(["t1", "flair"])
    assert sorted(pickers.chosen()) == ["a", "b"]  # two inputs never collapse onto one layer
    pickers.boxes[0].setCurrentText("b")
    pickers.boxes[1].setCurrentText("a")
    viewer.add_labels(np.zeros((16, 16, 16), np.uint8), name="other")  # any change of the layer list
    assert pickers.chosen() == ["b", "a"]  # each picker kept its layer (was reset: `is` fails on proxies)
    viewer.layers["b"].name = "b renamed"
    assert pickers.chosen() == ["b renamed", "a"]


def test_a_model_s_inputs_take_scans_named_by_another_convention() -> None:
    """A BraTS 2018 model (flair, t1, t1ce, t2) given BraTS 2023 scans (t2f, t1n, t1c, t2w) fills every picker with
    the right modality; same names still win over synonyms."""
    from napari_ssl._napari.segment.scans import match_inputs
    from napari_ssl.training.cases import same_modality

    assert same_modality("flair") == ("flair", "t2f") and same_modality("T2F") == ("t2f", "flair")
    assert same_modality("t1") == ("t1", "t1n", "t1w") and same_modality("pet") == ("pet",)
    inputs = ["flair", "t1", "t1ce", "t2"]
    brats23 = [f"BraTS-GLI-00001-000-{m}" for m in ("t1c", "t1n", "t2f", "t2w")]
    assert match_inputs(inputs, [None] * 4, brats23) == [brats23[2], brats23[1], brats23[0], brats23[3]]
    assert match_inputs(inputs, [None] * 4, ["t2w", "t2", "t1", "flair", "t1ce"]) == ["flair", "t1", "t1ce", "t2"]
    assert match_inputs(["t2"], [None], ["case_t2f"]) == [None]  # FLAIR is not T2
