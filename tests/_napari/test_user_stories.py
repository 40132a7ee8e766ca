"""The user stories end to end, driven as a user drives them: a shown viewer at laptop size (1366 px wide), scans
opened through the reader or *File > Open Sample*, every dock opened from the Plugins menu, napari's notifications
read as the user reads them. Each story: open -> look at every pretext in 2D and 3D and back, then remove the
previews -> a short pretraining -> fine-tune from the layer pair with a merged class -> segment another scan ->
save the masks and read them back with the scan's geometry. Tiny networks and a few steps: the point is that the
path works, not what it learns (the benchmarks measure that)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin_path import open_dock

from napari_ssl import io
from napari_ssl._napari.layers import volume_to_layer_data
from napari_ssl.phantom import make_phantom

pytestmark = [pytest.mark.gui, pytest.mark.slow]

RUN_MS = 240_000  # a child process: spawn, torch and MONAI imports, a few steps (a busy 2-core CPU)
PREVIEW_MS = 60_000
SCREEN_WIDTH = 1366
PRETEXTS = ("rubik", "context", "planes", "genesis")


@pytest.fixture
def notes():
    """napari's notifications from now on, as (severity, message)."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)
    return lambda: [(str(n.severity), str(n.message)) for n in notification_manager.records[start:]]


def _errors(notes) -> list[str]:
    return [m for severity, m in notes() if severity.lower() == "error"]


def _laptop_viewer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window  # the test sizes the window as a laptop screen would
    window.resize(SCREEN_WIDTH, 740)
    qtbot.waitExposed(window)
    return viewer, window


def _look_at_every_pretext(viewer, qtbot, source) -> None:
    explorer = open_dock(viewer, "Pretext explorer")
    explorer.auto.setChecked(False)
    explorer.set_source(source.name)
    before = np.array(source.data, copy=True)
    prefix = f"{source.name} · "
    for name in PRETEXTS:
        explorer.set_pretext(name)
        with qtbot.waitSignal(explorer.preview_ready, timeout=PREVIEW_MS):
            explorer.preview()
        previews = [layer for layer in viewer.layers if layer.name.startswith(prefix)]
        assert previews, name
        for layer in previews:  # on the scan, whatever their kind (planes in 2D: a grid beside it)
            assert np.all(np.isfinite(layer.extent.world)), (name, layer.name)
        for ndisplay in (3, 2):  # 3D and back: drawn each time (the explorer once crashed here)
            viewer.dims.ndisplay = ndisplay
            qtbot.wait(20)
            assert viewer.screenshot(canvas_only=True).shape[-1] == 4
    assert explorer.remove_previews() > 0
    qtbot.wait(20)
    viewer.screenshot(canvas_only=True)  # draw once more with the previews gone
    assert not [layer.name for layer in viewer.layers if layer.name.startswith(prefix)]
    np.testing.assert_array_equal(source.data, before)  # the user's layer is only read


def _pretrain(viewer, qtbot, source, out: Path) -> str:
    dock = open_dock(viewer, "Pretrain")
    viewer.layers.selection.active = source
    viewer.layers.selection.select_only(source)
    form = dock.form
    form.set_pretexts(("rubik", "context"))
    form.backbone.setCurrentIndex(form.backbone.findData("tiny"))
    form.steps.setValue(3)
    form.batch.setValue(2)
    form.patch.setValue(32)
    form.device.setCurrentIndex(form.device.findData("cpu"))
    form.save_every.setValue(0)
    form.out.path = out
    with qtbot.waitSignal(dock.run_ended, timeout=RUN_MS) as ended:
        assert dock.start() is not None
    assert ended.args == ["finished"], dock.status.text()
    assert dock.progress.value() == dock.progress.maximum() == 3 and "ETA" not in dock.progress.text()
    assert (out / "meta.json").is_file() and dock.last_checkpoint == str(out)
    return str(out)


def _finetune(viewer, qtbot, image, labels, out: Path, pretrained: str, classes, channels: str | None = None) -> str:
    dock = open_dock(viewer, "Fine-tune")
    assert dock.form.pretrained.path == pretrained  # the Pretrain dock's checkpoint is the natural start
    dock.form.image_box.setCurrentText(image.name)
    dock.form.label_box.setCurrentText(labels.name)
    dock.form.add_pair()
    assert dock.form.pairs == [(channels or image.name, labels.name)]
    classes(dock.form.class_list)
    dock.form.steps.setValue(3)
    dock.form.patch.setValue(32)
    dock.form.device.setCurrentIndex(dock.form.device.findData("cpu"))
    dock.form.out.path = out
    relay = dock.start()
    assert relay is not None, dock.status.text()
    with qtbot.waitSignal(relay.worker.finished, timeout=RUN_MS):
        pass
    assert dock.last_path == str(out), dock.status.text()
    assert dock.status.text().startswith("finished at step 3") and dock.progress.value() == 3
    return str(out)


def _segment(viewer, qtbot, scan, model: str, tmp_path: Path, volume, classes: list[str]):
    dock = open_dock(viewer, "Segment")
    assert dock.model_box.currentText() == model  # the fine-tuned model, published by the Fine-tune dock
    viewer.layers.selection.active = scan  # the picker follows the scan the user is looking at
    assert dock.channel_boxes[0].currentText() == scan.name
    worker = dock.run()
    assert worker is not None, dock.status.text()
    with qtbot.waitSignal(worker.finished, timeout=RUN_MS):
        pass
    if dock.staged.pending:
        with qtbot.waitSignal(dock.staged.done, timeout=10_000):
            pass
    masks = viewer.layers[f"{scan.name} masks"]
    assert type(masks).__name__ == "Labels" and masks.visible
    assert list(masks.features["class"]) == ["background", *classes]
    assert masks.data.shape == scan.data.shape
    np.testing.assert_allclose(masks.affine.affine_matrix, scan.affine.affine_matrix)
    np.testing.assert_allclose(masks.scale, scan.scale)
    np.testing.assert_allclose(masks.translate, scan.translate)
    viewer.layers.selection.active = masks
    saved = dock.save_masks(tmp_path / "masks.nii.gz")
    back = io.read(saved)
    assert back.same_geometry(volume) and np.array_equal(back.array, np.asarray(masks.data))
    return masks


def _tick_only(picker, wanted: dict[str, tuple[int, ...]]) -> None:
    for i in range(picker.count()):
        item = picker.item(i)
        keep = picker.ids(item) in wanted.values()
        item.setCheckState(Qt.CheckState.Checked if keep else Qt.CheckState.Unchecked)


def test_story_sample_phantom(make_napari_viewer, qtbot, tmp_path, notes) -> None:
    """A fresh clone, no data of one's own: *File > Open Sample*, then every step on the phantom."""
    viewer, window = _laptop_viewer(make_napari_viewer, qtbot)
    image, labels = viewer.open_sample("napari-ssl", "phantom")
    assert image.name == "Head phantom" or image.name  # the sample's own names
    _look_at_every_pretext(viewer, qtbot, image)
    pretrained = _pretrain(viewer, qtbot, image, tmp_path / "pretrained")

    def classes(picker) -> None:  # the lesion, and CSF + ventricles merged into one named class
        _tick_only(picker, {"csf": (3,), "ventricles": (6,)})
        merged = picker.merge_ticked()
        assert merged is not None and picker.ids(merged) == (3, 6)
        merged.setText("fluid (3+6)")
        for i in range(picker.count()):
            if picker.ids(picker.item(i)) == (7,):
                picker.item(i).setCheckState(Qt.CheckState.Checked)
        assert tuple(picker.chosen()) == ("fluid=3+6", "lesion=7")

    model = _finetune(viewer, qtbot, image, labels, tmp_path / "segmenter", pretrained, classes)
    other, _ = make_phantom(seed=3)  # a scan the model never saw
    data, kwargs, _ = volume_to_layer_data(other, "image", name="another head")
    scan = viewer.add_image(data, **kwargs)
    _segment(viewer, qtbot, scan, model, tmp_path, other, ["fluid", "lesion"])
    assert window.width() <= SCREEN_WIDTH
    assert not _errors(notes), _errors(notes)


def test_story_brats_case(make_napari_viewer, qtbot, tmp_path, notes, shared_data) -> None:
    """A BraTS case folder through the reader; whole tumour is offered at once; Add pair takes the case's four
    modalities; another case, opened as a folder, is segmented with its four."""
    viewer, window = _laptop_viewer(make_napari_viewer, qtbot)
    layers = viewer.open(shared_data / "brats" / "Brats18_2013_11_1", plugin="napari-ssl")
    names = {layer.name for layer in layers}
    assert {"flair", "t1", "t1ce", "t2", "seg"} <= names, names
    flair, seg = viewer.layers["flair"], viewer.layers["seg"]
    assert type(seg).__name__ == "Labels"
    _look_at_every_pretext(viewer, qtbot, flair)
    pretrained = _pretrain(viewer, qtbot, flair, tmp_path / "pretrained")

    def classes(picker) -> None:  # the defaults: whole tumour, ticked, nothing else
        assert picker.chosen() == ("whole_tumor=1+2+4",)

    model = _finetune(viewer, qtbot, flair, seg, tmp_path / "segmenter", pretrained, classes,
                      channels="flair+t1+t1ce+t2")
    from napari_ssl._napari.segment.info import read_model_info

    # the inputs are named by modality, not by the case
    assert read_model_info(model).channels == ("flair", "t1", "t1ce", "t2")
    viewer.layers.clear()  # the user closes the first case and opens another
    other = shared_data / "brats" / "Brats18_2013_23_1"
    viewer.open(other, plugin="napari-ssl")
    scan = viewer.layers["flair"]
    _segment(viewer, qtbot, scan, model, tmp_path, io.read(other / "flair.nii.gz"), ["whole_tumor"])
    assert window.width() <= SCREEN_WIDTH
    assert not _errors(notes), _errors(notes)
