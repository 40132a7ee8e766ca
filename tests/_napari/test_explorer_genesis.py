"""Pretext explorer, Models Genesis in 3D (issue 21): the maximum projection of the corrupted volume was a white
square that hid the brain (out-painting fills everything outside the kept boxes with noise)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssl.io.foreground import foreground_mask

pytestmark = pytest.mark.gui

WAIT_MS = 60_000


def saturated(volume: np.ndarray, limits) -> float:
    """Fraction of the pixels of a maximum projection along z at or above the upper contrast limit (white)."""
    return float((np.asarray(volume).max(axis=0) >= limits[1]).mean())


def test_genesis_3d_shows_the_brain(make_napari_viewer, qtbot, shared_data):
    viewer = make_napari_viewer()
    viewer.open(shared_data / "brats" / "Brats18_TCIA02_370_1" / "flair.nii.gz", plugin="napari-ssl")
    _, dock = viewer.window.add_plugin_dock_widget("napari-ssl", "Pretext explorer")
    dock.auto.setChecked(False)
    # the default parameters: this seed out-paints, noise everywhere outside the kept boxes
    dock.set_pretext("genesis")
    with qtbot.waitSignal(dock.preview_ready, timeout=WAIT_MS):
        dock.preview()
    preview = dock.last_preview
    assert preview.params.paint == "out"
    src = viewer.layers["flair"]
    layer = viewer.layers["flair · genesis"]
    # 2D: the corrupted volume itself, in the scan's contrast
    assert layer.data is preview.image
    np.testing.assert_allclose(layer.contrast_limits, src.contrast_limits)
    assert saturated(preview.image, src.contrast_limits) > 0.9  # what 3D showed before: a white square

    viewer.dims.ndisplay = 3
    source = np.asarray(src.data)
    body = foreground_mask(source)
    shown = np.asarray(layer.data)
    assert layer.rendering == "attenuated_mip"
    np.testing.assert_allclose(layer.contrast_limits, np.percentile(source[body], (1, 99.5)))
    np.testing.assert_array_equal(shown[body], preview.image[body])  # the corruption on the body, untouched
    assert (shown[~body] == source.min()).all()  # outside the body: black
    footprint = body.any(axis=0)  # the head seen along z: the rest of the view must be black
    assert footprint.mean() < 0.6 and (shown.max(axis=0)[~footprint] <= layer.contrast_limits[0]).all()
    assert viewer.layers["flair · genesis boxes"].blending == "translucent_no_depth"  # boxes inside it show

    viewer.dims.ndisplay = 2  # back: the corrupted volume as it is
    assert layer.data is preview.image and layer.rendering == "mip"
    np.testing.assert_allclose(layer.contrast_limits, src.contrast_limits)
