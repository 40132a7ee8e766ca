"""The Segment dock on a first launch: the bundled demonstration model is chosen, the sample phantom's lesion found;
a scan unlike the model's training data is warned about; errors and the plan line read well."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_segment_shared import random_checkpoint

from napari_ssl.inference.bundled import DEMO_DESCRIPTION, PHANTOM_DEMO, bundled_path
from napari_ssl.phantom import make_phantom

pytestmark = [pytest.mark.gui]


@pytest.fixture
def first_launch(monkeypatch, tmp_path):
    """What a user's first launch sees: empty settings (no recent models), nothing published by other docks."""
    from qtpy.QtCore import QSettings

    import napari_ssl._napari.hub as hub
    import napari_ssl._napari.segment.info as segment_info

    path = str(tmp_path / "settings.ini")
    monkeypatch.setattr(segment_info, "_settings", lambda: QSettings(path, QSettings.Format.IniFormat))
    monkeypatch.setattr(hub, "_HUB", None)


@pytest.fixture
def notes(monkeypatch):
    """The Segment dock's error and warning notifications."""
    import napari_ssl._napari.segment.dock as seg

    seen: dict[str, list[str]] = {"error": [], "warning": []}
    monkeypatch.setattr(seg, "show_error", seen["error"].append)
    monkeypatch.setattr(seg, "show_warning", seen["warning"].append)
    return seen


def sample_and_dock(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-ssl", "phantom")  # File > Open Sample > napari SSL > Head phantom
    _, dock = viewer.window.add_plugin_dock_widget("napari-ssl", "Segment")
    return viewer, dock


def run_and_wait(dock, qtbot, timeout_ms: int = 120_000, start=None):
    """Start a run (``dock.run``, or ``start``, e.g. ``dock.learn``) and wait until its masks are shown."""
    worker = (start or dock.run)()
    assert worker is not None, dock.status.text()
    with qtbot.waitSignal(worker.finished, timeout=timeout_ms):
        pass
    if dock.staged.pending:
        with qtbot.waitSignal(dock.staged.done, timeout=10_000):
            pass


def test_first_launch_segments_the_sample_lesion_with_the_demo_model(make_napari_viewer, first_launch, notes,
                                                                      qtbot) -> None:
    viewer, dock = sample_and_dock(make_napari_viewer)
    assert dock.info is not None and dock.info.path == str(bundled_path(PHANTOM_DEMO))  # chosen, nothing trained
    assert "demonstration model" in dock.model_box.currentText()
    assert DEMO_DESCRIPTION in dock.picker.info_label.text()
    assert dock.channel_boxes[0].currentText() == "phantom"
    run_and_wait(dock, qtbot)
    assert notes == {"error": [], "warning": []}  # the sample is what the model was trained on: no warning
    masks = viewer.layers["phantom masks"]
    assert masks in viewer.layers and masks.data.shape == viewer.layers["phantom"].data.shape
    truth = make_phantom(seed=0)[1].array == 7
    found = np.asarray(masks.data) == 1
    dice = 2 * np.sum(truth & found) / (truth.sum() + found.sum())
    assert dice > 0.8, dice
    assert dock.status.text().startswith("found lesion")
    from napari_ssl._napari.segment.info import recent_models

    assert recent_models() == []  # the bundled model is always listed: never remembered as a recent one


def test_known_models_come_first_and_the_demo_stays_listed(make_napari_viewer, first_launch, tmp_path) -> None:
    from napari_ssl._napari.segment.info import recent_models, remember_model

    mine = random_checkpoint(tmp_path / "mine")
    remember_model(str(mine))
    _, dock = sample_and_dock(make_napari_viewer)
    box = dock.model_box
    assert dock.info.path == str(mine) and box.currentIndex() == 0  # the last one used, ready to click
    assert box.itemText(0) == str(mine) and "demonstration model" in box.itemText(box.count() - 1)
    assert dock.load_model(PHANTOM_DEMO)  # typed by its short name
    assert dock.info.path == str(bundled_path(PHANTOM_DEMO)) and "demonstration model" in box.currentText()
    assert box.count() == 2 and recent_models() == [str(mine)]


def test_a_scan_unlike_the_training_data_warns_and_still_runs(make_napari_viewer, first_launch, notes, tmp_path,
                                                                qtbot) -> None:
    viewer, dock = sample_and_dock(make_napari_viewer)
    ct_model = random_checkpoint(tmp_path / "ct", spacing=(2.5, 1.5, 1.5), fingerprint={
        "modality": "CT", "n_channels": 1, "median_spacing": [2.5, 1.5, 1.5],
        "foreground": {"p00_5": -120.0, "p99_5": 1400.0, "p50": 40.0}})
    assert dock.load_model(str(ct_model))
    run_and_wait(dock, qtbot)
    assert len(notes["warning"]) == 1 and not notes["error"]
    sentence = notes["warning"][0].removeprefix("Segment: ")
    assert "trained on CT scans (intensities -120..1400 HU)" in sentence and "looks like an MR scan" in sentence
    assert dock.status.text().startswith(f"warning: {sentence}")
    assert "phantom masks" in viewer.layers and "found lesion" in dock.status.text()  # a warning: it ran


def test_an_error_replaces_the_previous_result_on_the_status_line(make_napari_viewer, first_launch, notes,
                                                                   qtbot) -> None:
    viewer, dock = sample_and_dock(make_napari_viewer)
    run_and_wait(dock, qtbot)
    assert dock.status.text().startswith("found lesion")
    viewer.add_image(np.zeros((1, 64, 64), np.float32), name="flat")
    dock.channel_boxes[0].setCurrentText("flat")
    assert dock.run() is None and "2D image" in notes["error"][-1]
    assert "found" not in dock.status.text() and dock.status.text().startswith("failed: ")
    assert "2D image" in dock.status.text()
    assert not dock.load_model("/nonexistent/model") and "no such model folder" in dock.status.text()


def test_plan_line_reads_in_words(make_napari_viewer, first_launch, tmp_path) -> None:
    from napari_ssl.preprocess import Normalization

    _, dock = sample_and_dock(make_napari_viewer)
    model = random_checkpoint(tmp_path / "m", spacing=(2.5, 1.48595, 1.48595),
                              normalization=Normalization(mode="zscore_nonzero"))
    assert dock.load_model(str(model))
    text = dock.picker.info_label.text()
    assert "voxels 2.5 x 1.49 x 1.49 mm" in text and "z-score over the body (non-zero voxels)" in text
    assert "1.48595" not in text and "zscore_nonzero" not in text
    ct = random_checkpoint(tmp_path / "ct", normalization=Normalization(mode="ct_zscore", clip=(-160.2, 240.7),
                                                                        mean=50.0, std=60.0))
    assert dock.load_model(str(ct)) and "CT clipped to -160..241 HU, then z-score" in dock.picker.info_label.text()
