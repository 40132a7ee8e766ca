"""What the Pretrain dock shows is what the run uses: each pretext's parameters at the run's patch (the engine's
patch-scaled defaults), not the pretext class's own (Rubik gap 10, context patch 16, planes size 128 were shown while a
CPU run used 6, 8 and 48)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin_path import open_dock

from napari_ssl.device import patch_for
from napari_ssl.training.config import PretrainConfig
from napari_ssl.training.pretrain import default_pretext_options

pytestmark = pytest.mark.gui
SHOWN = {"rubik": "gap", "context": "patch_size", "planes": "size"}


def _shown(form) -> dict[str, object]:
    return {name: form.pretexts[name].params.values()[key] for name, key in SHOWN.items()}


def test_parameters_show_the_runs_defaults_at_its_patch(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((40, 40, 40), np.float32), name="scan")
    form = open_dock(viewer, "Pretrain").form
    form.device.setCurrentIndex(form.device.findData("cpu"))
    cpu = patch_for("cpu")
    assert form.run_patch() == cpu == 48
    expected = {name: default_pretext_options(name, cpu)[key] for name, key in SHOWN.items()}
    assert _shown(form) == expected == {"rubik": 6, "context": 8, "planes": 48}
    form.patch.setValue(96)  # a larger patch: the scaled defaults follow
    assert _shown(form) == {name: default_pretext_options(name, 96)[key] for name, key in SHOWN.items()}
    form.pretexts["rubik"].params["gap"].value = 7  # the user's own value stays through a change of patch
    form.patch.setValue(64)
    assert form.pretexts["rubik"].params.values()["gap"] == 7
    assert _shown(form)["context"] == default_pretext_options("context", 64)["patch_size"]
    form.set_pretexts(("rubik", "context"))
    values = form.collect()
    assert values["pretext_options"] == {"rubik": {"gap": 7}}  # the rest: the engine's own defaults at patch 64
    assert PretrainConfig(**values).patch_size == 64
