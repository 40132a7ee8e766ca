"""The Segment dock (one click -> Labels layer with geometry, class names, colours; save; cancel; bad inputs)
and the Fine-tune dock (a tiny run in a child process)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin_path import open_dock
from test_segment_shared import phantom, random_checkpoint

from napari_ssl import checkpoint, io
from napari_ssl._napari.layers import volume_to_layer_data

pytestmark = [pytest.mark.gui]


@pytest.fixture
def errors(monkeypatch):
    """Messages the docks send to napari's error notifications."""
    seen: list[str] = []
    import napari_ssl._napari.finetune.dock as ft
    import napari_ssl._napari.finetune.form as ft_form
    import napari_ssl._napari.segment.dock as seg

    for module in (seg, ft, ft_form):
        monkeypatch.setattr(module, "show_error", seen.append)
    return seen


@pytest.fixture
def viewer_dock(make_napari_viewer, tmp_path, monkeypatch):


    viewer = make_napari_viewer()
    image, _ = phantom(shape=(40, 40, 36))
    data, kwargs, kind = volume_to_layer_data(image, "image", name="scan")
    kwargs["metadata"]["napari_ssl"]["path"] = str(tmp_path / "scan.nii.gz")
    layer = viewer._add_layer_from_data(data, kwargs, kind)[0]
    dock = open_dock(viewer, "Segment")
    return viewer, dock, layer, image


def test_one_click_masks_with_geometry_names_and_save(viewer_dock, tmp_path, qtbot, errors) -> None:
    viewer, dock, layer, image = viewer_dock
    before = np.array(layer.data, copy=True)
    model = random_checkpoint(tmp_path / "model", spacing=(2.0, 1.5, 1.5))
    dock.model_box.setCurrentText(str(model))
    worker = dock.run()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert not errors
    masks = viewer.layers["scan masks"]
    assert masks.__class__.__name__ == "Labels"
    if dock.staged.pending:  # shown in the turns after the add
        with qtbot.waitSignal(dock.staged.done, timeout=10_000):
            pass
    assert masks.visible and masks._overlays["brush_stroke"].visible
    np.testing.assert_allclose(masks.scale, layer.scale)
    np.testing.assert_allclose(masks.translate, layer.translate)
    np.testing.assert_allclose(masks.affine.affine_matrix, layer.affine.affine_matrix)
    assert masks.data.shape == layer.data.shape and masks.data.max() >= 1
    assert list(masks.features["class"]) == ["background", "lesion"]
    np.testing.assert_allclose(masks.colormap.map(1)[:3], [0xE6 / 255, 0x19 / 255, 0x4B / 255], atol=0.01)
    np.testing.assert_array_equal(layer.data, before)  # the user's layer is only read
    assert dock.progress.value() == 100 and "lesion" in dock.status.text()
    viewer.layers.selection.active = masks
    out = dock.save_masks(tmp_path / "masks.nrrd")
    back = io.read(out)
    assert back.same_geometry(image) and np.array_equal(back.array, masks.data)
    assert back.array.dtype == np.uint8  # ids written narrow, as the Labels writer does
    assert str(model) in dock.model_box.itemText(0)
    from napari_ssl._napari.segment.info import recent_models

    assert recent_models()[0] == str(model)


def test_rerun_moves_data_into_our_layer_and_keeps_a_users(viewer_dock, tmp_path, qtbot, errors) -> None:
    viewer, dock, layer, _ = viewer_dock

    def run(model: Path) -> None:
        dock.model_box.setCurrentText(str(model))
        worker = dock.run()
        with qtbot.waitSignal(worker.finished, timeout=120_000):
            pass

    run(random_checkpoint(tmp_path / "m0", spacing=(2.0, 1.5, 1.5), seed=0))
    ours = viewer.layers["scan masks"]
    first = np.array(ours.data, copy=True)
    names = [lay.name for lay in viewer.layers]
    run(random_checkpoint(tmp_path / "m1", spacing=(2.0, 1.5, 1.5), seed=3))
    assert [lay.name for lay in viewer.layers] == names and viewer.layers["scan masks"] is ours  # same layer
    assert ours.metadata["napari_ssl"]["model"] == str(tmp_path / "m1") and ours.data.shape == first.shape
    assert not np.array_equal(ours.data, first)  # the new model's masks, not the old ones
    assert dock.last_masks is ours and not errors

    viewer.layers.remove(ours)
    user = viewer.add_labels(np.full(layer.data.shape, 7, np.uint8), name="scan masks")  # the user's own layer
    run(random_checkpoint(tmp_path / "m2", spacing=(2.0, 1.5, 1.5)))
    assert viewer.layers["scan masks"] is user and np.all(user.data == 7)  # only read
    assert dock.last_masks is not user and dock.last_masks in viewer.layers


def test_cancel_adds_nothing(viewer_dock, tmp_path, qtbot, errors) -> None:
    viewer, dock, _, _ = viewer_dock
    dock.options.overlap.setValue(0.875)  # many windows: time to cancel
    dock.model_box.setCurrentText(str(random_checkpoint(tmp_path / "model", spacing=(1.0, 1.0, 1.0))))
    worker = dock.run()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        dock.cancel()
    assert "scan masks" not in viewer.layers and dock.status.text() == "cancelled"
    assert dock.run_button.isEnabled() and not errors


def test_bad_inputs_notify_and_keep_layers(viewer_dock, tmp_path, qtbot, errors) -> None:
    viewer, dock, _, image = viewer_dock
    names = [lay.name for lay in viewer.layers]
    pre = checkpoint.save(tmp_path / "pre", {}, {"kind": "pretrain", "pretexts": ["rubik"]})
    dock.model_box.setCurrentText(str(pre))
    assert dock.run() is None and "no segmentation head" in errors[-1]
    bad = random_checkpoint(tmp_path / "bad")
    (bad / "model.safetensors").write_bytes(b"\0" * 64)
    dock.model_box.setCurrentText(str(bad))
    assert dock.run() is None and "truncated or altered" in errors[-1]
    dock.model_box.setCurrentText(str(random_checkpoint(tmp_path / "two", in_channels=2)))
    assert dock.run() is None and "for every input" in errors[-1]
    assert len(dock.channel_boxes) == 2
    dock.model_box.setCurrentText(str(random_checkpoint(tmp_path / "one")))
    viewer.add_image(image.array[:1], name="flat")
    dock.load_model(dock.model_box.currentText())
    dock.channel_boxes[0].setCurrentText("flat")
    assert dock.run() is None and "2D image" in errors[-1]
    assert dock.save_masks(tmp_path / "x.nii.gz") is None  # nothing to save yet
    assert [lay.name for lay in viewer.layers] == [*names, "flat"]
    dock.channel_boxes[0].setCurrentText("scan")
    worker = dock.run()  # still usable
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert "scan masks" in viewer.layers


def test_a_model_of_several_channels_offers_the_modality_ensemble_as_trained(viewer_dock, tmp_path, qtbot,
                                                                               monkeypatch) -> None:
    """The ensemble's box shows only for a napari-ssl model of several channels, partly ticked (as the model was
    trained, which the summary says); ticking or clearing it is what the dock sends the child segmenting."""
    from qtpy.QtCore import Qt

    import napari_ssl._napari.segment.dock as seg

    viewer, dock, _, image = viewer_dock
    box = dock.options.ensemble
    assert dock.load_model(str(random_checkpoint(tmp_path / "one")))
    assert box.isHidden() and "modality_ensemble" not in dock.options.segment_options()
    assert dock.load_model(str(random_checkpoint(tmp_path / "two", in_channels=2, channel_dropout=0.3)))
    assert not box.isHidden() and box.checkState() == Qt.CheckState.PartiallyChecked
    assert "modality_ensemble" not in dock.options.segment_options()  # as trained: the model's default
    assert "modality ensemble" in dock.picker.info_label.text()  # the summary says how it segments
    box.setCheckState(Qt.CheckState.Checked)
    assert dock.options.segment_options()["modality_ensemble"] is True
    box.setCheckState(Qt.CheckState.Unchecked)
    assert dock.options.segment_options()["modality_ensemble"] is False

    sent = []  # what the dock hands the child: the user's choice among the options
    real = seg.SegmentRequest
    monkeypatch.setattr(seg, "SegmentRequest", lambda **kw: sent.append(kw["options"]) or real(**kw))
    data, kwargs, kind = volume_to_layer_data(image.with_array(image.array // 2), "image", name="scan 2")
    viewer._add_layer_from_data(data, kwargs, kind)  # a second modality on the scan's grid
    dock.channel_boxes[0].setCurrentText("scan")
    dock.channel_boxes[1].setCurrentText("scan 2")
    worker = dock.run()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    assert "scan masks" in viewer.layers and sent[-1]["modality_ensemble"] is False


@pytest.mark.slow
def test_finetune_dock_trains_in_a_child(make_napari_viewer, tmp_path, qtbot, errors) -> None:
    from napari_ssl.inference.segment import load_model

    viewer = make_napari_viewer()
    image, labels = phantom(shape=(34, 36, 36))
    for vol, kind, name in ((image, "image", "scan"), (labels, "labels", "truth")):
        data, kwargs, kind = volume_to_layer_data(vol, kind, name=name)
        if kind == "labels":  # a labels layer that knows its class names (e.g. from a Segment run)
            kwargs["features"] = {"index": [0, 1], "class": ["background", "lesion"]}
        viewer._add_layer_from_data(data, kwargs, kind)
    dock = open_dock(viewer, "Fine-tune")
    dock.form.pretrained.setText("")
    assert dock.start() is None and "no training data" in errors[-1]
    errors.clear()
    dock.form.image_box.setCurrentText("scan")
    dock.form.label_box.setCurrentText("truth")
    dock.form.add_pair()
    assert [dock.form.class_list.item(i).text() for i in range(dock.form.class_list.count())] == ["lesion (1)"]
    dock.form.backbone.setCurrentIndex(dock.form.backbone.findData("tiny"))
    dock.form.steps.setValue(3)
    dock.form.patch.setValue(32)
    dock.form.held_out.setCurrentIndex(dock.form.held_out.findData(0.2))  # one case: its last slices measure the Dice
    dock.form.device.setCurrentIndex(dock.form.device.findData("cpu"))
    dock.form.out.path = tmp_path / "seg"
    segment_dock = open_dock(viewer, "Segment")  # open before the run: it must list the new model at once
    relay = dock.start()
    assert relay is not None
    with qtbot.waitSignal(relay.worker.finished, timeout=180_000):
        pass
    assert not errors, errors
    assert dock.last_path == str(tmp_path / "seg") and dock.progress.value() == 3
    assert len(dock.loss_plot) == 3 and dock.dice_plot.names == ["lesion"]
    assert load_model(tmp_path / "seg").checkpoint.names[1] == "lesion"
    assert segment_dock.model_box.currentText() == str(tmp_path / "seg")
    assert segment_dock.info is not None and ("trained", "3 of 3 steps on 1 case(s)") in segment_dock.info.segmenter.details
    assert "held-out Dice" in segment_dock.picker.info_label.text()


def test_docks_open_from_the_manifest(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    for name, cls in (("Segment", "SegmentDock"), ("Fine-tune", "FinetuneDock")):
        _, widget = viewer.window.add_plugin_dock_widget("napari-ssl", name)
        assert type(widget).__name__ == cls
