"""See what the network learned: the explorer's network overlays equal the model's own output for the same seed."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from test_answers import pretrain_tiny

from napari_ssl._napari.layers import volume_to_layer_data
from napari_ssl.phantom import make_phantom
from napari_ssl.pretext._restoration.answer import answer_restoration
from napari_ssl.pretext.context.explore import context_step_params
from napari_ssl.pretext.planes.answer import answer_planes
from napari_ssl.pretext.rubik.answer import answer_rubik
from napari_ssl.study.answers import load_network

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin_path import open_dock

pytestmark = pytest.mark.gui

WAIT_MS = 60_000


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return pretrain_tiny(tmp_path_factory.mktemp("learned") / "ssl")


@pytest.fixture(scope="module")
def scan():
    image, _ = make_phantom(shape=(20, 36, 40), spacing=(2.0, 1.5, 1.5), seed=3)
    return image.with_array(image.array * 1000.0 + 50.0, name="scan")


def open_explorer(viewer, scan):
    """The Pretext explorer docked in ``viewer`` (no preview on every change), ``scan`` loaded and chosen."""
    widget = open_dock(viewer, "Pretext explorer")
    widget.auto.setChecked(False)
    data, kwargs, layer_type = volume_to_layer_data(scan, "image")
    viewer._add_layer_from_data(data, kwargs, layer_type)
    widget.set_source("scan")
    return widget


@pytest.fixture
def dock(make_napari_viewer, scan):
    return open_explorer(make_napari_viewer(), scan)


@pytest.fixture
def warnings_seen(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr("napari_ssl._napari.explorer.learned.show_warning", seen.append)
    return seen


def answered(dock, qtbot, start=None):
    """Run a preview (or ``start``) and wait for the network's answer drawn after it."""
    with qtbot.waitSignal(dock.learned.answer_ready, timeout=WAIT_MS) as blocker:
        (start or dock.preview)()
    assert type(dock.learned.worker).__name__ == "RelayWorker"  # asked in a child, as every model load of the docks
    return blocker.args[0]


def digest(array) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_context_restored_layer_is_the_networks_output(dock, qtbot, ckpt, scan) -> None:
    viewer = dock.viewer
    before = digest(viewer.layers["scan"].data)
    dock.set_pretext("context")
    dock.params["context"].set_values({"n_swaps": 6, "patch_size": 4.0})
    assert dock.learned.add_checkpoint(str(ckpt))
    result = answered(dock, qtbot)
    preview = dock.last_preview
    assert result.preview is preview
    expected = answer_restoration(load_network(ckpt), preview.request.volume, preview.task,
                              context_step_params(preview.params, preview.request.step))
    restored = viewer.layers["scan · network restored"]
    np.testing.assert_allclose(restored.data, expected["restored"], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(viewer.layers["scan · network original"].data, scan.array)
    # side by side, left to right: corrupted (over the scan), restored, original
    xs = [viewer.layers[n].extent.world[0][-1] for n in ("scan · context", "scan · network restored",
                                                         "scan · network original")]
    assert xs[0] < xs[1] < xs[2]
    assert f"{expected['psnr']:.1f} dB" in viewer.text_overlay.text and viewer.text_overlay.visible
    assert f"{expected['psnr_input']:.1f} dB" in viewer.text_overlay.text
    assert digest(viewer.layers["scan"].data) == before
    # the swap slider shows fewer swaps: the network answers on what is shown
    dock.step.setValue(2)
    seen = []  # the previous answer is hidden while the network answers the new sample
    dock.preview_ready.connect(lambda _: seen.append(viewer.layers["scan · network restored"].visible))
    result = answered(dock, qtbot)
    assert seen == [False] and viewer.layers["scan · network restored"].visible
    assert len(context_step_params(result.preview.params, result.preview.request.step).pairs) == 2
    dock.remove_button.click()
    assert not [layer for layer in viewer.layers if "network" in layer.name]
    assert not viewer.text_overlay.visible


def _forced_rubik(src, out, perm_class: int, flags: np.ndarray):
    """A copy of checkpoint ``src`` whose Rubik head always answers ``perm_class`` and ``flags``."""
    import torch

    from napari_ssl import checkpoint

    state, meta = checkpoint.load(src)
    for key in ("rubik_head.cells.2.weight", "rubik_head.cells.2.bias"):  # the shared cube classifier undecided
        state[key] = torch.zeros_like(state[key])
    for prefix, bias in (("rubik_head.perm.2", np.eye(10)[perm_class]),
                         ("rubik_head.rot.2", np.asarray(flags, float).reshape(-1))):
        state[f"{prefix}.weight"] = torch.zeros_like(state[f"{prefix}.weight"])
        state[f"{prefix}.bias"] = torch.as_tensor((bias - 0.5) * 20, dtype=torch.float32)
    return checkpoint.save(out, state, meta)


def test_rubik_cube_colours_follow_the_networks_answer(dock, qtbot, ckpt, tmp_path) -> None:
    from napari_ssl.pretext.rubik.explore import CUBE_COLOURS

    viewer = dock.viewer
    dock.set_pretext("rubik")
    dock.params["rubik"].set_values({"n_permutations": 10, "gap": 2})
    with qtbot.waitSignal(dock.preview_ready, timeout=WAIT_MS):
        dock.preview()
    params = dock.last_preview.params
    flags = np.asarray(params.rotations, bool).copy()
    flags[5, 1] = ~flags[5, 1]  # the right permutation, one wrong turn: cube 5 orange, the others green
    forced = _forced_rubik(ckpt, tmp_path / "forced", params.permutation_index, flags)
    result = answered(dock, qtbot, lambda: dock.learned.add_checkpoint(str(forced)))
    preview = dock.last_preview
    expected = answer_rubik(load_network(forced), preview.request.volume, preview.task, preview.params)
    np.testing.assert_array_equal(result.result["right"], expected["right"])
    np.testing.assert_array_equal(expected["right"], np.arange(8) != 5)
    # value / colour of each cube: 3 - (place right) - (turn right): 1 green, 2 orange, 3 red
    values = 3 - expected["position_right"].astype(int) - expected["rotation_right"].astype(int)
    np.testing.assert_array_equal(values, np.where(np.arange(8) == 5, 2, 1))
    cells = viewer.layers["scan · network cells"].data
    for i, (lo, hi) in enumerate(np.asarray(preview.boxes)):
        assert (cells[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == values[i]).all(), i
    edges = viewer.layers["scan · network cubes"].edge_color
    np.testing.assert_allclose(edges, np.array([CUBE_COLOURS[v] for v in values]), atol=1e-6)
    assert f"predicted {expected['perm_pred']}" in viewer.text_overlay.text
    # the plain checkpoint answers the same preview: its colours are its own correctness
    result = answered(dock, qtbot, lambda: dock.learned.add_checkpoint(str(ckpt)))
    plain = answer_rubik(load_network(ckpt), preview.request.volume, preview.task, preview.params)
    np.testing.assert_array_equal(result.result["right"], plain["right"])
    plain_values = 3 - plain["position_right"].astype(int) - plain["rotation_right"].astype(int)
    corners = [tuple(lo) for lo, _ in np.asarray(preview.boxes)]
    assert [viewer.layers["scan · network cells"].data[c] for c in corners] == plain_values.tolist()


def test_planes_heatmaps_grid_under_the_targets(dock, qtbot, ckpt) -> None:
    viewer = dock.viewer
    viewer.dims.ndisplay = 2
    dock.set_pretext("planes")
    assert dock.learned.add_checkpoint(str(ckpt))
    dock.learned.use_network_parameters()  # 4 stack slices + 2 oblique views of 32 px, as trained
    assert dock.params["planes"].values()["size"] == 32
    result = answered(dock, qtbot)
    preview = dock.last_preview
    expected = answer_planes(load_network(ckpt), preview.request.volume, preview.task, preview.params)
    np.testing.assert_allclose(result.result["heatmaps"], expected["heatmaps"], atol=1e-6)
    grid, mine = viewer.layers["scan · planes grid"], viewer.layers["scan · network grid"]
    grid_top = float(grid.translate[0])
    assert mine.data.shape == grid.data.shape
    assert mine.translate[0] > grid_top + 0.9 * grid.data.shape[0] * grid.scale[0]  # under the targets' grid
    assert grid.translate[0] == grid_top  # the explorer's layer is left where it was
    assert not np.array_equal(mine.data, grid.data)  # predicted heatmaps, not the targets
    assert "line angle error" in viewer.text_overlay.text
    viewer.dims.ndisplay = 3  # the grid is a 2D view
    assert "scan · network grid" not in viewer.layers


def test_bad_checkpoints_and_parameters_notify(dock, qtbot, ckpt, tmp_path, warnings_seen) -> None:
    from test_segment_shared import random_checkpoint

    seg = random_checkpoint(tmp_path / "seg")
    assert not dock.learned.add_checkpoint(str(seg))
    assert "segment checkpoint" in warnings_seen[-1] and dock.learned.path == ""
    (tmp_path / "junk").mkdir()
    assert not dock.learned.add_checkpoint(str(tmp_path / "junk"))
    assert "not a napari-ssl checkpoint" in warnings_seen[-1]
    dock.set_pretext("planes")
    dock.params["planes"].set_values({"n_stack": 2, "n_oblique": 1, "size": 32})
    assert dock.learned.add_checkpoint(str(ckpt))
    with qtbot.waitSignal(dock.preview_ready, timeout=WAIT_MS):
        dock.preview()
    with qtbot.waitSignal(dock.learned.worker.finished, timeout=WAIT_MS):
        pass
    assert "predicts lines for 6 planes" in warnings_seen[-1]
    assert not [layer for layer in dock.viewer.layers if "network" in layer.name]
    count = len(warnings_seen)
    with qtbot.waitSignal(dock.preview_ready, timeout=WAIT_MS):
        dock.preview()
    with qtbot.waitSignal(dock.learned.worker.finished, timeout=WAIT_MS):
        pass
    assert len(warnings_seen) == count and "predicts lines" in dock.learned.status.text()  # no second popup
    # a network that did not learn this pretext: a line in the panel, no worker, no popup
    only = tmp_path / "only_context"
    shutil.copytree(ckpt, only)
    meta = json.loads((only / "meta.json").read_text())
    (only / "meta.json").write_text(json.dumps({**meta, "pretexts": ["context"]}))
    dock.learned.worker = None
    assert dock.learned.add_checkpoint(str(only))
    assert dock.learned.worker is None and "learned context, not this pretext" in dock.learned.status.text()
    assert len(warnings_seen) == count


def test_genesis_and_a_pretext_without_an_answer_view(make_napari_viewer, qtbot, scan, tmp_path,
                                                      warnings_seen) -> None:
    """Models Genesis shows the restoration answer of its own head; a registered pretext without an answer view
    gets a status line, no worker, no popup and no layers."""
    import toy_pretext

    ck = pretrain_tiny(tmp_path / "genesis", pretexts=("genesis", "context"), steps=2)
    with toy_pretext.registered():  # the dock is built while the toy pretext is registered
        viewer = make_napari_viewer()
        dock = open_explorer(viewer, scan)
        dock.set_pretext("genesis")
        assert dock.learned.add_checkpoint(str(ck))
        result = answered(dock, qtbot)
        preview = dock.last_preview
        expected = answer_restoration(load_network(ck), preview.request.volume, preview.task, preview.params, "genesis")
        np.testing.assert_allclose(viewer.layers["scan · network restored"].data, expected["restored"], atol=1e-4)
        assert result.pretext == "genesis" and "Models Genesis" in viewer.text_overlay.text
        assert f"{expected['psnr']:.1f} dB" in viewer.text_overlay.text
        dock.set_pretext("flip")
        dock.learned.worker = None
        with qtbot.waitSignal(dock.preview_ready, timeout=WAIT_MS):
            dock.preview()
        assert dock.learned.worker is None
        assert "Flip (toy) has no network answer view" in dock.learned.status.text()
        assert not [layer for layer in viewer.layers if "network" in layer.name]
        assert not warnings_seen


def test_use_its_parameters_turns_voxel_lengths_into_mm(dock, ckpt) -> None:
    """Context restoration's registry record lists patch_size as a length: trained in voxels of the checkpoint's
    2 mm grid, it is set in mm on the user's scan."""
    from napari_ssl import checkpoint

    meta = checkpoint.open_checkpoint(ckpt)
    trained = meta.pretext_options["context"]
    dock.set_pretext("context")
    dock.params["context"].set_values({"unit": "voxel", "patch_size": 1.0})
    assert dock.learned.add_checkpoint(str(ckpt))
    dock.learned.use_network_parameters()
    values = dock.params["context"].values()
    assert values["unit"] == "mm"
    voxels = float(np.ravel(trained["patch_size"])[0])
    assert values["patch_size"] == pytest.approx(voxels * float(np.mean(meta.spacing)))
    assert values["patch_size"] != pytest.approx(voxels)  # a 2 mm grid: not the voxel count
