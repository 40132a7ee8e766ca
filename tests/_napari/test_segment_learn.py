"""*Learn from my corrections* in the Segment dock, opened as the Plugins menu opens it: segment, correct the masks
with the brush (here: their data), learn; a new version segments the scan again, the corrected layer and the model
are left as they were; masks that cannot be a case of the model are one sentence and nothing is written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_finetune_from import _hashes
from test_segment_demo import run_and_wait
from test_segment_dock import errors, viewer_dock  # noqa: F401 - the fixtures
from test_segment_shared import phantom, random_checkpoint

from napari_ssl.training.corrections import corrections_dir

pytestmark = [pytest.mark.gui]


@pytest.fixture
def segmented(viewer_dock, tmp_path, qtbot, errors):  # noqa: F811 - the imported fixtures
    """A scan layer, the Segment dock with a tiny model, and the masks it made."""
    viewer, dock, scan, _ = viewer_dock
    _, labels = phantom(shape=(40, 40, 36))
    model = random_checkpoint(tmp_path / "lesions", spacing=(2.0, 1.5, 1.5))
    dock.model_box.setCurrentText(str(model))
    run_and_wait(dock, qtbot)
    assert not errors
    return viewer, dock, scan, labels, model, errors


def test_learn_from_corrections_saves_a_new_version_that_segments_again(segmented, qtbot) -> None:
    viewer, dock, scan, truth, model, errs = segmented
    before = _hashes(model)
    masks = viewer.layers["scan masks"]
    before_learn = np.array(masks.data, copy=True)
    masks.data[...] = truth.array  # the user's brush and eraser: the reference lesion
    masks.refresh()
    corrected = np.array(masks.data, copy=True)
    scan_before = np.array(scan.data, copy=True)
    dock.learn_steps = 2  # a test budget: two steps (the dock's minutes still apply)
    run_and_wait(dock, qtbot, 180_000, start=dock.learn)
    assert not errs, errs
    new = viewer.layers["scan masks v2"]
    assert new.data.shape == scan.data.shape and new.metadata["napari_ssl"]["model"] == str(model.parent / "lesions-v2")
    assert new.metadata["napari_ssl"]["scans"] == ["scan"]
    np.testing.assert_array_equal(masks.data, corrected)  # the corrected layer stays as the user left it
    np.testing.assert_array_equal(scan.data, scan_before)
    assert dock.info is not None and dock.info.path == str(model.parent / "lesions-v2")  # the new version is chosen
    assert dock.learn_row.button.isEnabled() and dock.run_button.isEnabled()
    case = corrections_dir(model) / "001-scan"
    prov = json.loads((case / "case.json").read_text())
    assert prov["edited_voxels"] == int(np.count_nonzero(corrected != before_learn)) > 0
    assert prov["model"] == str(model.resolve()) and prov["class_voxels"]["lesion"] == int(truth.array.sum())
    assert _hashes(model) == before  # the model itself is only read


@pytest.mark.parametrize("problem", ["unedited", "shape", "grid"])
def test_masks_that_cannot_teach_are_one_sentence_and_nothing_is_written(segmented, problem) -> None:
    viewer, dock, scan, truth, model, errs = segmented
    masks = viewer.layers["scan masks"]
    if problem == "shape":
        masks.data = np.asarray(masks.data)[:-4].copy()
    elif problem == "grid":
        masks.data[...] = truth.array
        scan.scale = tuple(s * 1.5 for s in scan.scale)
    names = [layer.name for layer in viewer.layers]
    assert dock.learn() is None
    assert len(errs) == 1 and "\n" not in errs[0], errs
    assert {"unedited": "as the model made it", "shape": "shape", "grid": "grid"}[problem] in errs[0]
    assert not corrections_dir(model).exists() and not (model.parent / "lesions-v2").exists()
    assert [layer.name for layer in viewer.layers] == names and dock.relay is None
