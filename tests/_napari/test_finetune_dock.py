"""The Fine-tune dock as a user meets it from the Plugins menu: classes as users name them (BraTS whole tumour offered
at once, merged and renamed groups), a dock that stays on a laptop screen when a run starts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin_path import open_dock

from napari_ssl.classes import parse_classes
from napari_ssl.events import Started

pytestmark = pytest.mark.gui


def _labels(values) -> np.ndarray:
    data = np.zeros((12, 12, 12), np.uint8)
    for i, v in enumerate(values):
        data[2 + 2 * i : 4 + 2 * i, 3:9, 3:9] = v
    return data


def _texts(picker) -> list[tuple[str, bool]]:
    return [(picker.item(i).text(), picker.item(i).checkState() == Qt.CheckState.Checked)
            for i in range(picker.count())]


def test_brats_labels_offer_whole_tumour_at_once(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.add_labels(_labels([1, 2, 4]), name="seg")
    dock = open_dock(viewer, "Fine-tune")
    assert _texts(dock.form.class_list) == [
        ("whole_tumor (1+2+4)", True), ("tumor_core (1+4)", False),
        ("necrotic_core (1)", False), ("edema (2)", False), ("enhancing (4)", False),
    ]
    assert dock.form.chosen_classes() == ("whole_tumor=1+2+4",)  # Start learns one class: whole tumour
    (whole,) = parse_classes(dock.form.chosen_classes())
    assert whole.name == "whole_tumor" and whole.ids == (1, 2, 4)
    dock.form.class_list.item(0).setText("tumour (1+2+4)")  # the user renames it (double-click)
    dock.form.class_list.item(1).setCheckState(Qt.CheckState.Checked)
    assert dock.form.chosen_classes() == ("tumour=1+2+4", "tumor_core=1+4")
    viewer.add_image(np.zeros((12, 12, 12), np.float32), name="flair")  # any layer change refreshes the list
    assert dock.form.chosen_classes() == ("tumour=1+2+4", "tumor_core=1+4")  # names and ticks kept


def test_merge_ticked_labels_into_one_named_class(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    layer = viewer.add_labels(_labels([1, 5, 7]), name="organs")
    layer.features = {"index": [0, 1, 5, 7], "class": ["background", "spleen", "liver", "pancreas"]}
    viewer.layers.selection.active = layer
    viewer.add_image(np.zeros((12, 12, 12), np.float32), name="ct")  # refresh: names from the features
    dock = open_dock(viewer, "Fine-tune")
    dock.form.label_box.setCurrentText("organs")
    assert _texts(dock.form.class_list) == [("spleen (1)", True), ("liver (5)", True), ("pancreas (7)", True)]
    dock.form.class_list.item(2).setCheckState(Qt.CheckState.Unchecked)
    merged = dock.form.class_list.merge_ticked()
    assert merged is not None and merged.text() == "merged (1+5)"
    assert dock.form.chosen_classes() == ("merged=1+5",)
    merged.setText("spleen and liver (1+5)")
    assert dock.form.chosen_classes() == ("spleen_and_liver=1+5",)
    assert parse_classes(dock.form.chosen_classes())[0].ids == (1, 5)
    dock.form.class_list.item(0).setCheckState(Qt.CheckState.Unchecked)
    assert dock.form.class_list.merge_ticked() is None  # nothing ticked: nothing merged


def test_unnamed_labels_keep_the_clis_names(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.add_labels(_labels([3, 9]), name="seg")
    dock = open_dock(viewer, "Fine-tune")
    assert dock.form.chosen_classes() == ("class_3=3", "class_9=9")
    assert [c.name for c in parse_classes(dock.form.chosen_classes())] == [c.name for c in parse_classes("3,9")]


def _on_a_laptop(make_napari_viewer, qtbot):
    """The Fine-tune dock in a shown window of a laptop's width, settled: (dock, window, its width now)."""
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1366, 740)
    dock = open_dock(viewer, "Fine-tune")
    qtbot.waitExposed(window)
    qtbot.wait(50)
    return dock, window, dock.width()


def test_a_long_plan_does_not_widen_the_dock_past_the_screen(make_napari_viewer, qtbot) -> None:
    dock, window, before = _on_a_laptop(make_napari_viewer, qtbot)
    plan = "\n".join(["plan (mr, median scan 150 x 180 x 150 voxels at the plan's spacing):"]
                     + [f"  note: a long line of the plan that says a great deal about case {i} " * 2 for i in range(4)])
    dock._on_event(Started(total=100, device="cpu", n_train=3, n_val=1, plan_text=plan))
    qtbot.wait(100)
    assert dock.plan_label.isVisible()
    assert dock.width() <= before + 4, (before, dock.width())  # was ~362 -> ~750 px
    assert window.width() <= 1366


def test_a_run_the_minutes_ended_shows_finished_at_full_bar(make_napari_viewer) -> None:
    from napari_ssl.events import Finished, Progress

    viewer = make_napari_viewer()
    dock = open_dock(viewer, "Fine-tune")
    dock.form.minutes.setValue(15.0)
    dock._on_event(Started(total=2000, device="cpu", n_train=3, n_val=1))
    for step in (1, 130, 260):
        dock._on_event(Progress(step=step, total=2000, loss=1.0 / step))
    dock._on_event(Finished(step=260, path="/tmp/model"))
    # was: the bar at 13%, the curves scaled to 2,000 steps, and no word of the end in the dock
    assert dock.progress.value() == dock.progress.maximum() == 260
    assert dock.loss_plot.xrange == (0.0, 260.0) and dock.dice_plot.xrange == (0.0, 260.0)
    assert dock.status.text().startswith("finished at step 260 (the 15-minute budget ended it before step 2000)")
    assert "finished" in dock.progress.text()


def test_a_cancelled_run_shows_no_eta(make_napari_viewer) -> None:
    from napari_ssl.events import Progress, Stopped

    viewer = make_napari_viewer()
    dock = open_dock(viewer, "Pretrain")
    dock.outcome = "running"
    dock._on_event(Started(total=500, device="cpu", n_train=1, n_val=1, batch_size=2))
    dock._on_event(Progress(step=40, total=500, loss=0.5, samples_per_s=4.0))
    dock._show_progress()
    assert "ETA" in dock.progress.text()
    dock._on_event(Stopped(path="/tmp/ck"))
    dock._on_finished()
    assert "ETA" not in dock.progress.text() and dock.progress.text() == "cancelled at step 40 · 4.0 samples/s"


def test_a_pretrained_checkpoint_does_not_widen_the_dock(make_napari_viewer, qtbot, tmp_path) -> None:
    """The Pretrain dock's checkpoint arrives in the Fine-tune dock with a note of the backbone it fixes: the note
    widened the dock column (362 -> 409 px), taking the width from the canvas."""
    from test_segment_shared import random_checkpoint

    dock, _, before = _on_a_laptop(make_napari_viewer, qtbot)
    dock.form.pretrained.path = str(random_checkpoint(tmp_path / "pretrained"))
    qtbot.wait(100)
    assert dock.form.backbone_note.isVisible() and "tiny" in dock.form.backbone_note.text()
    assert dock.width() <= before + 4, (before, dock.width())


def _tiny(dock, out, steps: int) -> None:
    dock.form.backbone.setCurrentIndex(dock.form.backbone.findData("tiny"))
    dock.form.steps.setValue(steps)
    dock.form.patch.setValue(32)
    dock.form.device.setCurrentIndex(dock.form.device.findData("cpu"))
    dock.form.out.path = out


@pytest.mark.slow
def test_cancel_a_real_run_saves_where_it_stopped(make_napari_viewer, qtbot, tmp_path) -> None:
    from test_segment_shared import phantom

    from napari_ssl.checkpoint import open_checkpoint
    from napari_ssl.events import Progress

    viewer = make_napari_viewer()
    image, labels = phantom(shape=(34, 36, 36))
    viewer.add_image(image.array, name="scan", scale=image.spacing)
    viewer.add_labels(labels.array, name="truth", scale=image.spacing)
    dock = open_dock(viewer, "Fine-tune")
    dock.form.add_pair()
    _tiny(dock, tmp_path / "cancelled", 100_000)
    relay = dock.start()
    assert relay is not None
    with qtbot.waitSignal(relay.worker.yielded, timeout=240_000, check_params_cb=lambda e: isinstance(e, Progress)):
        pass
    with qtbot.waitSignal(relay.worker.finished, timeout=120_000):
        dock.cancel()
    assert dock.relay is None and dock.start_button.isEnabled() and not dock.cancel_button.isEnabled()
    assert dock.status.text().startswith("cancelled; checkpoint in") and "ETA" not in dock.progress.text()
    saved = open_checkpoint(tmp_path / "cancelled")
    assert saved.step >= 1 and dock.progress.text().startswith(f"cancelled at step {dock.progress.value()}")
    assert saved.step == dock.progress.value()  # the checkpoint is where the bar stopped


@pytest.mark.slow
def test_folder_pairs_and_a_minutes_budget(make_napari_viewer, qtbot, tmp_path) -> None:
    """Folders of scans and label files of the same names, no Labels layer open: the classes come from the label
    files; a 0.1-minute budget ends a 100,000-step run, and the dock says so."""
    from test_segment_shared import phantom

    from napari_ssl import io
    from napari_ssl.checkpoint import open_checkpoint

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for seed in (0, 1):
        image, labels = phantom(shape=(34, 36, 36), seed=seed)
        io.write(image, tmp_path / "images" / f"case{seed}.nii.gz")
        io.write(labels, tmp_path / "labels" / f"case{seed}.nii.gz")
    viewer = make_napari_viewer()
    dock = open_dock(viewer, "Fine-tune")
    dock.form.image_dir.path = tmp_path / "images"
    dock.form.label_dir.path = tmp_path / "labels"
    _tiny(dock, tmp_path / "folders", 100_000)
    dock.form.minutes.setValue(0.1)
    relay = dock.start()
    assert relay is not None, dock.status.text()
    with qtbot.waitSignal(relay.worker.finished, timeout=300_000):
        pass
    saved = open_checkpoint(tmp_path / "folders")
    assert 1 <= saved.step < 100_000 and [c.name for c in saved.classes] == ["class_1"]
    assert dock.status.text().startswith(
        f"finished at step {saved.step} (the 0.1-minute budget ended it before step 100000)")
    assert dock.progress.value() == dock.progress.maximum() == saved.step


def test_another_labels_layer_starts_from_its_own_presets(make_napari_viewer) -> None:
    """Switching from BraTS labels (single labels offered unticked) to organ labels of the same values ticks the
    organs: a layer's ticks never carry over to another layer; they do survive a refresh of the same one."""
    viewer = make_napari_viewer()
    viewer.add_labels(_labels([1, 2, 4]), name="seg")
    organs = viewer.add_labels(_labels([1, 6]), name="organs")
    organs.features = {"index": [0, 1, 6], "class": ["background", "liver", "spleen"]}
    dock = open_dock(viewer, "Fine-tune")
    dock.form.label_box.setCurrentText("seg")
    assert dock.form.chosen_classes() == ("whole_tumor=1+2+4",)
    dock.form.label_box.setCurrentText("organs")
    assert _texts(dock.form.class_list) == [("liver (1)", True), ("spleen (6)", True)]
    dock.form.class_list.item(1).setCheckState(Qt.CheckState.Unchecked)
    viewer.add_image(np.zeros((12, 12, 12), np.float32), name="ct")  # a refresh of the same layer keeps the tick
    assert dock.form.chosen_classes() == ("liver=1",)
    dock.form.label_box.setCurrentText("seg")
    assert dock.form.chosen_classes() == ("whole_tumor=1+2+4",)


@pytest.mark.slow
def test_held_out_none_trains_every_pair_and_keeps_the_last_weights(make_napari_viewer, qtbot, tmp_path) -> None:
    """The dock's *held out* (the CLI's ``--val-fraction``): automatic by default; "none" trains on every pair in the
    child, measures no held-out Dice, keeps the last weights and says so."""
    from napari_ssl.checkpoint import open_checkpoint

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    for k in range(2):
        truth = np.zeros((24, 24, 24), np.uint8)
        truth[6:16, 7:17, 5 + k : 15 + k] = 1
        viewer.add_image((rng.normal(0, 0.2, truth.shape) + truth).astype(np.float32), name=f"scan{k}")
        viewer.add_labels(truth, name=f"truth{k}")
    dock = open_dock(viewer, "Fine-tune")
    for k in range(2):
        dock.form.image_box.setCurrentText(f"scan{k}")
        dock.form.label_box.setCurrentText(f"truth{k}")
        dock.form.add_pair()
    assert len(dock.form.pairs) == 2
    assert dock.form.collect()["val_fraction"] is None  # the default: automatic (none below 20 cases)
    dock.form.held_out.setCurrentIndex(dock.form.held_out.findData(0.2))
    assert dock.form.collect()["val_fraction"] == pytest.approx(0.2)
    dock.form.held_out.setCurrentIndex(dock.form.held_out.findData(0.0))
    assert dock.form.held_out.currentText() == "none: every case trains"
    _tiny(dock, tmp_path / "model", 3)
    started: list[tuple[Started, str]] = []  # each Started with the status line the dock showed for it
    shown = dock._on_event

    def on_event(event) -> None:  # the dock's handler first, then what it showed
        shown(event)
        if isinstance(event, Started):
            started.append((event, dock.status.text()))

    dock._on_event = on_event  # start() connects the worker to it
    relay = dock.start()
    assert relay is not None
    with qtbot.waitSignal(relay.worker.finished, timeout=240_000):
        pass
    assert dock.last_path == str(tmp_path / "model"), dock.status.text()
    assert [(e.n_train, e.n_val) for e, _ in started] == [(2, 0)]
    model = open_checkpoint(tmp_path / "model")
    assert model.step == 3 and model.config["val_fraction"] == 0.0
    assert not model.history.get("val/score")  # nothing held out: no held-out Dice measured
    assert len(dock.dice_plot) == 0
    assert "none held out: the last weights are kept" in started[0][1]
    segment_dock = open_dock(viewer, "Segment")
    assert segment_dock.load_model(str(tmp_path / "model"))
    assert "held-out Dice</b>: not measured (no case was held out" in segment_dock.picker.info_label.text()
