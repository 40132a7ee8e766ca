"""A user's napari script without ``if __name__ == "__main__"`` (the usual way to script napari) starts and
finishes a Pretrain run: the training child must not re-run the script (it would open a second viewer and hang)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from pathlib import Path

import napari
from qtpy.QtCore import QTimer

from napari_ssl import io
from napari_ssl._napari.layers import volume_to_layer_data

with open(sys.argv[2], "a") as f:  # every run of this top level leaves a line
    f.write("ran\\n")
viewer = napari.Viewer(show=True)
data, kwargs, kind = volume_to_layer_data(io.read(sys.argv[1]), "image", name="ct")
viewer.layers.selection.active = viewer._add_layer_from_data(data, kwargs, kind)[0]
_, dock = viewer.window.add_plugin_dock_widget("napari-ssl", "Pretrain")  # as the Plugins menu does
form = dock.form
form.set_pretexts(("rubik",))
form.backbone.setCurrentIndex(form.backbone.findData("tiny"))
form.steps.setValue(3)
form.patch.setValue(32)
form.device.setCurrentIndex(form.device.findData("cpu"))
form.save_every.setValue(0)
form.out.path = sys.argv[3]


def ended(outcome):
    print("OUTCOME", outcome, dock.last_checkpoint, flush=True)
    viewer.close()


dock.run_ended.connect(ended)
QTimer.singleShot(100, dock.start)
napari.run()
"""


def test_script_without_main_guard_runs_pretraining(tmp_path: Path, shared_data: Path) -> None:
    script = tmp_path / "my_napari_script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    marker, out = tmp_path / "top_level_runs.txt", tmp_path / "ckpt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(script), str(shared_data / "ct_unlabeled" / "ct_thorax_abdomen.nii.gz"),
         str(marker), str(out)],
        cwd=tmp_path, env=env, capture_output=True, timeout=300, encoding="utf-8", errors="replace",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"OUTCOME finished {out}" in done.stdout, (done.stdout, done.stderr[-3000:])
    assert marker.read_text() == "ran\n"  # the script's top level ran once: in the user's process only
    assert (out / "meta.json").is_file()


def test_opening_the_docks_imports_no_torch_in_the_viewer(tmp_path: Path) -> None:
    """The device list comes from the worker process: opening a dock never freezes the viewer on torch."""
    code = textwrap.dedent(
        """
        import sys
        import napari

        viewer = napari.Viewer(show=False)
        docks = [viewer.window.add_plugin_dock_widget("napari-ssl", name)[1]
                 for name in ("Pretrain", "Fine-tune", "Segment")]
        boxes = [docks[0].form.device, docks[1].form.device, docks[2].options.device]
        print("TORCH", "torch" in sys.modules, [b.currentData() for b in boxes])
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          timeout=300, encoding="utf-8", errors="replace")
    assert "TORCH False ['auto', 'auto', 'auto']" in done.stdout, (done.stdout, done.stderr[-2000:])
