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

from napari_ssl._napari.segment.info import ModelInfo, model_root
from napari_ssl.inference.segmenter import InputChannel, OutputClass, SegmenterInfo

pytestmark = [pytest.mark.gui]

BRATS = ("flair", "t1", "t1ce", "t2")


def four_channel_info(path: str, needs_trust: bool = False) -> ModelInfo:
    """How describe_segmenter describes a 4-modality brain-tumour model (an nnU-Net folder's dataset.json says
    this); the dock reads nothing else of it before Segment."""
    return ModelInfo(SegmenterInfo(
        path=path, format="nnunet", title="Dataset001_BraTS", channels=tuple(InputChannel(n, "MR") for n in BRATS),
        classes=(OutputClass(1, "edema", "#3cb44b"), OutputClass(2, "non-enhancing"), OutputClass(3, "enhancing")),
        spacing=(1.0, 1.0, 1.0), needs_trust=needs_trust,
        trust_reason="its checkpoint_final.pth files are Python pickles, which can run any code when opened." if
        needs_trust else "",
        details=(("folds", "0, 1"),),
    ))


def test_a_four_channel_model_gets_one_picker_per_input_filled_by_name(make_napari_viewer, tmp_path) -> None:
    viewer = make_napari_viewer()
    for name in ("case7_T2", "case7_flair", "case7_t1ce", "notes", "case7_t1"):  # opened in no particular order
        viewer.add_image(np.zeros((8, 8, 8), np.float32), name=name)
    dock = open_dock(viewer, "Segment")
    dock._use_model(four_channel_info(str(tmp_path)), quiet=True)
    assert [dock.scans.form.labelForField(b).text() for b in dock.channel_boxes] == list(BRATS)
    assert dock.scans.chosen() == ["case7_flair", "case7_t1", "case7_t1ce", "case7_T2"]
    text = dock.info_label.text()
    assert "nnU-Net v2 results folder" in text and "#3cb44b" in text and "folds" in text
    assert not dock.trust.isVisible() and dock.trust.isHidden()


def test_layers_opened_after_the_model_are_matched_too(make_napari_viewer, tmp_path) -> None:
    viewer = make_napari_viewer()
    dock = open_dock(viewer, "Segment")
    dock._use_model(four_channel_info(str(tmp_path)), quiet=True)
    for name in ("b_t1ce", "b_t2", "b_t1", "b_flair"):
        viewer.add_image(np.zeros((8, 8, 8), np.float32), name=name)
    assert dock.scans.chosen() == ["b_flair", "b_t1", "b_t1ce", "b_t2"]


def test_a_model_that_runs_code_on_load_waits_for_trust(make_napari_viewer, tmp_path, monkeypatch) -> None:
    import napari_ssl._napari.segment.dock as seg

    errors: list[str] = []
    monkeypatch.setattr(seg, "show_error", errors.append)
    viewer = make_napari_viewer()
    for name in BRATS:
        viewer.add_image(np.zeros((16, 16, 16), np.float32), name=name)
    dock = open_dock(viewer, "Segment")
    layers_before = [(layer.name, layer.data.copy()) for layer in viewer.layers]
    monkeypatch.setattr(dock, "load_model", lambda *a, **k: True)
    dock._use_model(four_channel_info(str(tmp_path / "a"), needs_trust=True), quiet=True)
    assert not dock.trust.isHidden() and not dock.trust.isChecked() and "pickles" in dock.trust.text()
    assert dock.run() is None and dock.relay is None  # refused before any process starts
    assert errors and "pickles" in errors[-1] and "I trust this model" in errors[-1] and "\n" not in errors[-1]
    dock.trust.setChecked(True)
    dock._use_model(four_channel_info(str(tmp_path / "b"), needs_trust=True), quiet=True)  # another model
    assert not dock.trust.isChecked()  # trust is given to one model, never carried to the next
    assert [layer.name for layer in viewer.layers] == [name for name, _ in layers_before]  # the user's layers
    assert all(np.array_equal(data, layer.data) for (_, data), layer in zip(layers_before, viewer.layers, strict=True))


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
    assert "nnU-Net v2 results folder" in dock.info_label.text() and not dock.trust.isHidden()
    assert not dock.folds.isHidden() and "0" in dock.folds.placeholderText()
    assert dock.run() is None and errors and "pickle" in errors[-1]  # nothing starts untrusted
    dock.trust.setChecked(True)
    dock.folds.setText("0")
    worker = dock.run()
    assert worker is not None, dock.status.text()
    with qtbot.waitSignal(worker.finished, timeout=300_000):
        pass
    if dock.staged.pending:
        with qtbot.waitSignal(dock.staged.done, timeout=10_000):
            pass
    assert not errors[1:], errors
    masks = dock.last_masks
    assert masks is not None and masks.metadata["napari_ssl"]["model"] == str(nnunet_model)
    expected = open_segmenter(nnunet_model, device="cpu", trust=True, folds="0").predict([io.read(scan)])
    assert masks.data.shape == expected.array.shape and np.array_equal(np.asarray(masks.data), expected.array)
