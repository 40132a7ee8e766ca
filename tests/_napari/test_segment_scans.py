"""The Segment dock's scan pickers keep their layer through renames and removals, and never collapse onto one."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssl._napari.segment.scans import ScanPickers

pytestmark = [pytest.mark.gui]


def test_pickers_follow_renames_and_removals_without_doubling_up(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    for name in ("a", "b", "c"):
        viewer.add_image(np.zeros((4, 5, 6), np.float32), name=name)
    viewer.add_labels(np.zeros((4, 5, 6), np.uint8), name="seg")  # never offered
    pickers = ScanPickers(viewer)
    qtbot.addWidget(pickers)
    pickers.set_inputs(["flair", "t1ce"])
    assert [pickers.boxes[0].itemText(i) for i in range(pickers.boxes[0].count())] == ["a", "b", "c"]
    pickers.boxes[0].setCurrentText("a")
    pickers.boxes[1].setCurrentText("b")
    viewer.layers["b"].name = "b renamed"  # the picker keeps the layer, under its new name
    assert pickers.chosen() == ["a", "b renamed"]
    viewer.layers.remove("a")  # the first input's layer goes: it takes a layer the other picker does not hold
    assert pickers.chosen() == ["c", "b renamed"]
    viewer.layers.selection.active = viewer.layers["b renamed"]  # the first input follows the selection
    assert pickers.chosen()[0] == "b renamed"
    pickers.set_inputs(["scan"])
    assert len(pickers.boxes) == 1 and pickers.form.rowCount() == 1
