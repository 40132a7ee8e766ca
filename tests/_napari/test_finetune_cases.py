"""Several modalities by default in the Fine-tune dock: a BraTS case folder opened through the reader, *Add pair* on
its flair takes the case's four modalities as one pair's channels (in the order of ``find_cases``), and a folder of
case folders trains on its cases with every modality, the dock saying what it found."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from brats_cases import CASES, MODALITIES, crop_case
from plugin_path import open_dock

from napari_ssl import io

pytestmark = pytest.mark.gui


def messages() -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]


@pytest.fixture(scope="module")
def brats(shared_data, tmp_path_factory) -> Path:
    """Two BraTS cases cropped to 32^3 (four modalities and seg) and one without t2."""
    root = tmp_path_factory.mktemp("dock_cases") / "brats"
    for case in CASES[:2]:
        crop_case(shared_data / "brats" / case, root / case)
    crop_case(shared_data / "brats" / CASES[2], root / "no_t2", files=("flair", "t1", "t1ce", "seg"))
    return root


def test_add_pair_on_a_case_folder_takes_its_four_modalities(make_napari_viewer, brats) -> None:
    viewer = make_napari_viewer()
    viewer.open(brats / CASES[0], plugin="napari-ssl")
    assert {layer.name for layer in viewer.layers} == {*MODALITIES, "seg"}
    dock = open_dock(viewer, "Fine-tune")
    dock.form.image_box.setCurrentText("t1ce")  # any modality of the case: the channels come in one order
    dock.form.label_box.setCurrentText("seg")
    dock.form.add_pair()
    assert dock.form.pairs == [("flair+t1+t1ce+t2", "seg")]
    assert dock.form.pair_list.item(0).text() == "flair+t1+t1ce+t2  +  seg"

    viewer.open(brats / CASES[1], plugin="napari-ssl")  # a second case: its own layers, never the first case's
    second = [layer.name for layer in viewer.layers][-5:]
    flair2 = next(n for n in second if n.startswith("flair"))
    seg2 = next(n for n in second if n.startswith("seg"))
    dock.form.image_box.setCurrentText(flair2)
    dock.form.label_box.setCurrentText(seg2)
    dock.form.add_pair()
    assert len(dock.form.pairs) == 2 and dock.form.pairs[1] == (f"{flair2}+t1+t1ce+t2", seg2)

    pairs = dock.form.collect()["pairs"]
    for (channels, labels), case in zip(pairs, CASES[:2], strict=True):
        assert isinstance(channels, tuple) and len(channels) == 4
        for volume, modality in zip(channels, MODALITIES, strict=True):
            assert volume.path == str(brats / case / f"{modality}.nii.gz")
            np.testing.assert_array_equal(volume.array, io.read(volume.path).array)
        assert labels.path == str(brats / case / "seg.nii.gz")

    viewer.add_image(np.zeros((32, 32, 32), np.float32), name="scan")  # no modality in its name: one channel
    viewer.add_labels(np.ones((32, 32, 32), np.uint8), name="truth")
    dock.form.image_box.setCurrentText("scan")
    dock.form.label_box.setCurrentText("truth")
    dock.form.add_pair()
    assert len(dock.form.pairs) == 2
    assert messages()[-1] == ("Fine-tune: scan is 1 channel(s) and the pairs added are 4 (flair+t1+t1ce+t2); "
                              "every pair needs the same channels")
    viewer.layers.remove("t2")  # a channel leaving the viewer takes its pair
    assert [p[1] for p in dock.form.pairs] == [seg2]


def test_add_pair_can_take_the_picked_modality_alone(make_napari_viewer, brats) -> None:
    """With the case's other modalities open, a FLAIR-only pair is one untick away."""
    viewer = make_napari_viewer()
    viewer.open(brats / CASES[0], plugin="napari-ssl")
    dock = open_dock(viewer, "Fine-tune")
    assert dock.form.modalities.isChecked()  # the default: every modality of the case
    dock.form.modalities.setChecked(False)
    dock.form.image_box.setCurrentText("flair")
    dock.form.label_box.setCurrentText("seg")
    dock.form.add_pair()
    assert dock.form.pairs == [("flair", "seg")]
    (image, _), = dock.form.collect()["pairs"]  # one channel: a Volume, as a single-modality pair always was
    assert image.path == str(brats / CASES[0] / "flair.nii.gz")


def test_a_folder_of_case_folders_trains_every_modality(make_napari_viewer, qtbot, brats) -> None:
    viewer = make_napari_viewer()
    dock = open_dock(viewer, "Fine-tune")
    dock.form.image_dir.path = brats  # no label folder: the folder's cases
    qtbot.waitUntil(lambda: dock.form.folder_note.text() != "", timeout=5000)
    assert dock.form.folder_note.text() == ("2 cases, 4 channels: flair, t1, t1ce, t2; 1 skipped "
                                       "(no_t2: no t2 (the other cases have flair, t1, t1ce, t2))")
    kwargs = dock.form.collect()
    assert kwargs["images"] == tuple(",".join(str(brats / c / f"{m}.nii.gz") for m in MODALITIES) for c in CASES[:2])
    assert kwargs["labels"] == tuple(str(brats / c / "seg.nii.gz") for c in CASES[:2])
    assert kwargs["classes"] == ("whole_tumor=1+2+4",)  # the presets of the first case's labels
    dock.form.image_dir.path = brats / CASES[0] / "flair.nii.gz"
    qtbot.waitUntil(lambda: "is a file" in dock.form.folder_note.text(), timeout=5000)


@pytest.mark.slow
def test_a_four_channel_pair_trains_in_the_child(make_napari_viewer, qtbot, brats, tmp_path) -> None:
    from napari_ssl.checkpoint import open_checkpoint

    viewer = make_napari_viewer()
    viewer.open(brats / CASES[0], plugin="napari-ssl")
    dock = open_dock(viewer, "Fine-tune")
    dock.form.add_pair()  # the reader's first Image layer and its seg: nothing else to choose
    assert dock.form.pairs == [("flair+t1+t1ce+t2", "seg")]
    dock.form.backbone.setCurrentIndex(dock.form.backbone.findData("tiny"))
    dock.form.steps.setValue(2)
    dock.form.patch.setValue(32)
    dock.form.device.setCurrentIndex(dock.form.device.findData("cpu"))
    dock.form.out.path = tmp_path / "model"
    relay = dock.start()
    assert relay is not None, messages()[-1:]
    with qtbot.waitSignal(relay.worker.finished, timeout=240_000):
        pass
    model = open_checkpoint(tmp_path / "model")
    assert dock.last_path == str(tmp_path / "model"), dock.status.text()
    assert model.channels == MODALITIES and model.in_channels == 4 and model.step == 2
