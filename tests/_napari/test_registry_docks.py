"""The docks list what the registry holds: a toy pretext registered in a test module appears in the Pretrain dock
(check box, parameters, curve colour, config) and in the Pretext explorer (generic preview); Models Genesis
previews its corruption with its painting boxes outlined."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import toy_pretext
from plugin_path import open_dock

from napari_ssl._napari.layers import volume_to_layer_data
from napari_ssl.io.volume import Volume

pytestmark = pytest.mark.gui

WAIT_MS = 30_000


def _add(viewer, array: np.ndarray, name: str):
    data, kwargs, layer_type = volume_to_layer_data(Volume(array, spacing=(2.0, 1.0, 1.0), name=name), "image")
    return viewer._add_layer_from_data(data, kwargs, layer_type)[0]


def _phantom() -> np.ndarray:
    z, y, x = np.mgrid[:24, :40, :40]
    body = ((y - 20) ** 2 + (x - 20) ** 2 < 15**2).astype(np.float32)
    return body * (1 + 0.2 * np.sin(x / 3.0)) + 0.01 * z


def test_toy_pretext_appears_in_the_pretrain_dock(make_napari_viewer, tmp_path) -> None:
    from napari_ssl._napari.widgets import pretext_colors

    with toy_pretext.registered():
        viewer = make_napari_viewer()
        layer = _add(viewer, _phantom(), "scan")
        viewer.layers.selection.active = layer
        dock = open_dock(viewer, "Pretrain")
        form = dock.form
        assert list(form.pretexts)[:4] == ["rubik", "context", "planes", "genesis"]
        assert "flip" in form.pretexts
        row = form.pretexts["flip"]
        assert row.check.text() == "Flip (toy)" and list(row.params.values()) == ["p_flip"]
        assert dock.plot.color("flip") == pretext_colors()["flip"] == "#123456"
        form.set_pretexts(["flip", "genesis"])
        row.params["p_flip"].value = 0.25
        form.out.setText(str(tmp_path / "ck"))
        values = form.collect()
        assert tuple(values["pretexts"]) == ("genesis", "flip")  # in the dock's order
        assert values["pretext_options"]["flip"] == {"p_flip": 0.25}
        from napari_ssl.training.config import PretrainConfig

        config = PretrainConfig(**values)  # the core accepts what the dock built
        assert config.pretexts == ("genesis", "flip")
        # the batch is "auto" by default: the engine takes the pretexts' own (2 in 3D; more for imaging planes)
        assert form.batch.text() == "auto" and values["batch_size"] is None and config.batch_size is None
        form.batch.setValue(3)
        assert form.collect()["batch_size"] == 3
        dock.close()
    viewer2 = make_napari_viewer()
    assert "flip" not in open_dock(viewer2, "Pretrain").form.pretexts  # unregistered: gone from a new dock


def test_toy_pretext_previews_in_the_explorer(make_napari_viewer, qtbot) -> None:
    with toy_pretext.registered():
        viewer = make_napari_viewer()
        _add(viewer, _phantom(), "scan")
        dock = open_dock(viewer, "Pretext explorer")
        dock.auto.setChecked(False)
        assert dock.pretext.findData("flip") >= 0 and dock.pretext.itemText(dock.pretext.findData("flip")) == "Flip (toy)"
        dock.set_source("scan")
        dock.set_pretext("flip")
        assert not dock.step_box.isVisibleTo(dock) and not dock.restore.isVisibleTo(dock)
        dock.params["flip"].set_values({"p_flip": 1.0})
        worker = dock.preview()
        assert worker is not None, dock.status.text()
        with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
            pass
        preview = dock.last_preview
        assert preview is not None and preview.request.pretext == "flip"
        np.testing.assert_array_equal(preview.image, viewer.layers["scan"].data[::-1, ::-1, ::-1])
        assert dock.status.text().startswith("mirrored along z, y, x")
        assert "scan · flip" in viewer.layers
        dock.close()


def test_genesis_preview_shows_the_corruption_and_its_boxes(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    src = _add(viewer, _phantom(), "scan")
    before = np.array(src.data, copy=True)
    dock = open_dock(viewer, "Pretext explorer")
    dock.auto.setChecked(False)
    dock.set_source("scan")
    dock.set_pretext("genesis")
    dock.params["genesis"].set_values({"p_paint": 1.0, "p_inpaint": 1.0, "p_shuffle": 0.0, "p_intensity": 0.0})
    dock.seed.setValue(3)
    worker = dock.preview()
    assert worker is not None, dock.status.text()
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        pass
    preview = dock.last_preview
    assert preview.request.pretext == "genesis" and preview.params.paint == "in"
    np.testing.assert_array_equal(src.data, before)  # the source is never modified
    expected = preview.task.apply(before, preview.task.sample(before.shape, 3, foreground=None))
    assert preview.image.shape == before.shape
    n = len(preview.params.boxes)
    assert preview.boxes.shape == (n, 2, 3) and "in-painting" in dock.status.text()
    for suffix in ("", " boxes", " cells", " text"):
        assert f"scan · genesis{suffix}" in viewer.layers
    # noise only in the outlined boxes
    inside = preview.labels > 0
    changed = ~np.isclose(preview.image, before)
    assert changed[inside].mean() > 0.9 and not changed[~inside].any()
    dock.foreground.setChecked(False)  # anywhere: the same draw as the task's own for this seed
    worker = dock.preview()
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        pass
    np.testing.assert_array_equal(dock.last_preview.image, expected)
    dock.close()
