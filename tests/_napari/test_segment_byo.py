"""The Segment dock with models of other formats: one picker per input filled by matching layer names, the trust
question for formats that run code on load (refused until ticked, the tick never carried to another model), the
Choose dialog's file mapped to its model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin_path import open_dock
from test_segment_demo import run_and_wait

from napari_ssl._napari.segment.info import model_root
from napari_ssl.inference.segmenter import InputChannel, OutputClass

pytestmark = [pytest.mark.gui]

BRATS = ("flair", "t1", "t1ce", "t2")


def four_channel_torchscript(folder: Path) -> Path:
    """A real 4-modality brain-tumour segmenter file: a MONAI BasicUNet (4 inputs, background + 3 classes) scripted
    with torch.jit, and the sidecar this tool defines beside it."""
    import torch
    from monai.networks.nets import BasicUNet

    from napari_ssl.inference.formats.torchscript import Sidecar, write_sidecar
    from napari_ssl.preprocess import Normalization

    net = BasicUNet(spatial_dims=3, in_channels=4, out_channels=4, features=(4, 4, 8, 8, 16, 4)).eval()
    path = folder / "brats4.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    write_sidecar(path, Sidecar(tuple(InputChannel(n, "MR") for n in BRATS),
                                (OutputClass(1, "edema", "#3cb44b"), OutputClass(2, "non-enhancing"),
                                 OutputClass(3, "enhancing")),
                                (1.0, 1.0, 1.0), "LPS", Normalization("zscore_nonzero"), (16, 16, 16)))
    return path


def test_a_four_channel_model_gets_one_picker_per_input_filled_by_name(make_napari_viewer, tmp_path) -> None:
    viewer = make_napari_viewer()
    for name in ("case7_T2", "case7_flair", "case7_t1ce", "notes", "case7_t1"):  # opened in no particular order
        viewer.add_image(np.zeros((8, 8, 8), np.float32), name=name)
    dock = open_dock(viewer, "Segment")
    assert dock.load_model(str(four_channel_torchscript(tmp_path)))
    assert dock.info.format == "torchscript" and dock.info.channels == BRATS
    assert [dock.scans.form.labelForField(b).text() for b in dock.channel_boxes] == list(BRATS)
    assert dock.scans.chosen() == ["case7_flair", "case7_t1", "case7_t1ce", "case7_T2"]
    text = dock.picker.info_label.text()
    assert "TorchScript module" in text and "#3cb44b" in text and "edema" in text and "flair (MR)" in text
    assert dock.picker.trust.isHidden() and dock.options.folds.isHidden()  # a scripted module runs no Python: no trust asked


def test_a_four_channel_model_given_one_layer_is_one_sentence(make_napari_viewer, tmp_path, monkeypatch) -> None:
    import napari_ssl._napari.segment.dock as seg

    errors: list[str] = []
    monkeypatch.setattr(seg, "show_error", errors.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16, 16), np.float32), name="flair")
    dock = open_dock(viewer, "Segment")
    assert dock.load_model(str(four_channel_torchscript(tmp_path)))
    assert dock.run() is None and dock.relay is None  # refused before any process starts
    assert errors and "takes 4 input(s) (flair, t1, t1ce, t2)" in errors[-1] and "\n" not in errors[-1]


def test_layers_opened_after_the_model_are_matched_too(make_napari_viewer, tmp_path) -> None:
    viewer = make_napari_viewer()
    dock = open_dock(viewer, "Segment")
    assert dock.load_model(str(four_channel_torchscript(tmp_path)))
    for name in ("b_t1ce", "b_t2", "b_t1", "b_flair"):
        viewer.add_image(np.zeros((8, 8, 8), np.float32), name=name)
    assert dock.scans.chosen() == ["b_flair", "b_t1", "b_t1ce", "b_t2"]


def test_a_model_that_runs_code_on_load_waits_for_trust(make_napari_viewer, tmp_path, monkeypatch) -> None:
    """A MONAI bundle (its config runs expressions): the trust question with the reason; Segment refuses until it is
    ticked; the tick stays with that model only; the user's layers are untouched."""
    from monai_bundles import write_zoo_bundle

    import napari_ssl._napari.segment.dock as seg

    errors: list[str] = []
    monkeypatch.setattr(seg, "show_error", errors.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((16, 16, 16), np.float32), name="head")
    dock = open_dock(viewer, "Segment")
    before = [(layer.name, layer.data.copy()) for layer in viewer.layers]
    first, second = write_zoo_bundle(tmp_path / "a"), write_zoo_bundle(tmp_path / "b", seed=1)
    assert dock.load_model(str(first)) and dock.info.format == "monai-bundle"
    assert not dock.picker.trust.isHidden() and not dock.picker.trust.isChecked() and "expression" in dock.picker.trust_reason.text()
    assert dock.run() is None and dock.relay is None  # refused before any process starts
    assert errors and "I trust this model" in errors[-1] and "\n" not in errors[-1]
    dock.picker.trust.setChecked(True)
    assert dock.load_model(str(second))  # another model
    assert not dock.picker.trust.isChecked()  # trust is given to one model, never carried to the next
    assert [layer.name for layer in viewer.layers] == [name for name, _ in before]  # the user's layers
    assert all(np.array_equal(data, layer.data) for (_, data), layer in zip(before, viewer.layers, strict=True))


def test_the_trust_question_does_not_widen_the_dock(make_napari_viewer, qtbot, tmp_path) -> None:
    """On a laptop-width window the reason wraps under the check box: as the check box's own text it widened the
    dock from ~330 to ~720 px, taking the canvas."""
    from monai_bundles import write_zoo_bundle

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1366, 740)
    dock = open_dock(viewer, "Segment")
    qtbot.waitExposed(window)
    qtbot.waitUntil(lambda: "looking" not in dock.options.device.currentText(), timeout=60_000)  # the device list is in
    qtbot.waitUntil(lambda: dock.width() >= dock.minimumSizeHint().width())  # laid out
    before = dock.width()
    assert dock.load_model(str(write_zoo_bundle(tmp_path / "bundle")))
    qtbot.wait(100)
    assert dock.picker.trust.isVisible() and dock.picker.trust_reason.isVisible()
    assert dock.width() <= before + 4, (before, dock.width())


def test_the_choose_dialog_file_stands_for_its_model(tmp_path) -> None:
    assert model_root(tmp_path / "run" / "meta.json") == str(tmp_path / "run")
    assert model_root(tmp_path / "Dataset1" / "dataset.json") == str(tmp_path / "Dataset1")
    assert model_root(tmp_path / "spleen" / "configs" / "metadata.json") == str(tmp_path / "spleen")
    assert model_root(tmp_path / "net.ts") == str(tmp_path / "net.ts")
    assert model_root(tmp_path / "other" / "metadata.json") == str(tmp_path / "other" / "metadata.json")


@pytest.mark.slow
def test_segment_dock_runs_an_nnunet_folder_once_trusted(make_napari_viewer, qtbot, nnunet_model, shared_data,
                                                         monkeypatch) -> None:
    """A user's nnU-Net results folder in the dock: described (CT input, organ classes, folds), refused until
    trusted, then segmented in the child into the same masks as the contract gives in this process."""
    import napari_ssl._napari.segment.dock as seg
    from napari_ssl import io
    from napari_ssl.inference.segmenter import open_segmenter

    errors: list[str] = []
    monkeypatch.setattr(seg, "show_error", errors.append)
    scan = shared_data / "ct_organs" / "ct.nii.gz"
    viewer = make_napari_viewer()
    viewer.open(str(scan), plugin="napari-ssl")
    dock = open_dock(viewer, "Segment")
    assert dock.load_model(str(nnunet_model))
    assert dock.info.format == "nnunet" and dock.info.channels == ("CT",) and len(dock.info.classes) == 3
    assert "nnU-Net v2 results folder" in dock.picker.info_label.text() and not dock.picker.trust.isHidden()
    assert not dock.options.folds.isHidden() and "0" in dock.options.folds.placeholderText()
    assert dock.run() is None and errors and "pickle" in errors[-1]  # nothing starts untrusted
    dock.picker.trust.setChecked(True)
    dock.options.folds.setText("0")
    run_and_wait(dock, qtbot, timeout_ms=300_000)
    assert not errors[1:], errors
    masks = dock.last_masks
    assert masks is not None and masks.metadata["napari_ssl"]["model"] == str(nnunet_model)
    expected = open_segmenter(nnunet_model, device="cpu", trust=True, folds="0").predict([io.read(scan)])
    # the child runs with the dock's thread count: a model trained for two iterations has near-ties that another
    # thread count's float sums can flip, so the bar is the (>= 99.9 % of voxels), not bit equality
    assert masks.data.shape == expected.array.shape
    assert (np.asarray(masks.data) == expected.array).mean() >= 0.999
    # a mask with more than one value (two empty masks would agree trivially); nnU-Net's two unseeded training
    # iterations may leave it mostly foreground (99.4 % seen), so no bound on its size
    assert len(np.unique(expected.array)) >= 2 and set(np.unique(expected.array)) - {0}
