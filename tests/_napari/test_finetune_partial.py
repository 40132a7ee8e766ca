"""The Fine-tune dock and partial annotations: it says which slices of the chosen pair hold labels, hints at the
option when few do, and its checkbox "only painted slices are labelled" becomes ``annotated="slices"``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin_path import open_dock

from napari_ssl.training.finetune import FinetuneConfig

pytestmark = pytest.mark.gui


def test_dock_says_which_slices_are_painted_and_maps_the_checkbox(make_napari_viewer, tmp_path) -> None:
    viewer = make_napari_viewer()
    image = np.random.default_rng(0).uniform(1, 2, (20, 12, 12)).astype(np.float32)
    image[15:] = 0  # the last 5 slices hold no body
    viewer.add_image(image, name="flair")
    labels = np.zeros((20, 12, 12), np.uint8)
    labels[::5, 3:8, 3:8] = 1  # every 5th slice painted: 4 of 20 (of 15 with body)
    layer = viewer.add_labels(labels, name="seg")
    dock = open_dock(viewer, "Fine-tune")
    dock.form.image_box.setCurrentText("flair")
    dock.form.label_box.setCurrentText("seg")
    assert not dock.form.partial.isChecked()
    note = dock.form.annotation_note.text()
    assert note.startswith("labels on 4 of 20 slices (every 5th): every unpainted slice is taught as background")
    assert "tick 'only painted slices are labelled'" in note and dock.form.partial.text() in note
    dock.form.partial.setChecked(True)
    assert dock.form.annotation_note.text() == "labels on 4 of 20 slices (every 5th): unpainted slices ignored"
    painted = labels.copy()
    painted[:12, 3:8, 3:8] = 1  # the user paints on (slice 15 was painted): the note follows
    layer.data = painted
    assert dock.form.annotation_note.text() == "labels on 13 of 20 slices: unpainted slices ignored"
    dock.form.partial.setChecked(False)
    assert dock.form.annotation_note.text() == "labels on 13 of 20 slices"  # most slices with body: no hint
    layer.data = labels
    dock.form.partial.setChecked(True)
    dock.form.add_pair()
    dock.form.pretrained.path = ""
    dock.form.out.path = str(tmp_path / "m")
    kwargs = dock.form.collect()
    assert kwargs["annotated"] == "slices"
    assert FinetuneConfig(**kwargs).annotated == "slices"
    dock.form.partial.setChecked(False)
    assert dock.form.collect()["annotated"] == "all"
