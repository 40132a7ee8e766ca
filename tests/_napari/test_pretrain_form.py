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


def test_folder_shows_how_many_scans_and_their_size(make_napari_viewer, qtbot, tmp_path: Path) -> None:
    """A folder of 2 scans and a text file: the dock says "2 scans" and their size on disk (listed in a thread,
    not the text file), before Start; an empty folder says it holds no scans."""
    from napari_ssl import io
    from napari_ssl._napari.pretrain.form import FOLDER
    from napari_ssl.io.volume import Volume

    data = tmp_path / "scans"
    (data / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    io.write(Volume(rng.random((20, 30, 30)).astype(np.float32)), data / "a.nii.gz")
    io.write(Volume(rng.random((24, 24, 24)).astype(np.float32)), data / "sub" / "b.nii.gz")
    (data / "notes.txt").write_text("x" * 50_000)  # not a scan: neither counted nor sized
    size = sum(p.stat().st_size for p in data.rglob("*.nii.gz"))
    assert size > 1000
    form = open_dock(make_napari_viewer(), "Pretrain").form
    form.source.setCurrentText(FOLDER)
    form.folder.path = data
    qtbot.waitUntil(lambda: "scans," in form.folder_label.text(), timeout=10_000)
    assert form.folder_label.text() == f"2 scans, {size / 1e3:.1f} kB"
    assert form.count_worker is not None  # listed by a thread worker, not on the GUI thread
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here")
    form.folder.path = empty
    qtbot.waitUntil(lambda: form.folder_label.text().startswith("no scans"), timeout=10_000)
