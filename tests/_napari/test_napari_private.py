"""The napari internals napari_ssl._napari.napari_private relies on: a napari release that changes one fails here,
by name, instead of a dock quietly losing a feature."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssl._napari.napari_private import layer_overlays
from napari_ssl._napari.segment.masks import EDIT_OVERLAYS

pytestmark = pytest.mark.gui


def test_labels_editing_overlays_are_where_the_segment_dock_stages_them(qapp) -> None:
    from napari.layers import Labels

    layer = Labels(np.zeros((4, 8, 8), np.uint8))
    overlays = layer_overlays(layer)
    missing = [key for key in EDIT_OVERLAYS if key not in overlays]
    assert not missing, f"napari's Labels no longer has the overlays {missing} in Layer._overlays"
    for key in EDIT_OVERLAYS:
        overlays[key].visible = False  # the Segment dock hides them, then shows them one per turn
        assert overlays[key].visible is False
    assert layer_overlays(object()) == {}  # a napari without the dict: nothing staged, nothing broken
