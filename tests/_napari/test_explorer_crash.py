"""Issue 21: sessions that crashed napari, each in its own process (a segfault would kill pytest itself).

Removing the previews after 2D -> 3D -> 2D segfaulted the next-but-one paint in ``glDrawArrays`` (napari deleted the
layers' GL objects in Qt's compositing context; see ``napari_ssl/_napari/gl_context.py``), and a script that ended
with the viewer open segfaulted at exit in the learned panel's ``destroyed`` callback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]

SCENARIO = Path(__file__).with_name("explorer_scenario.py")


def run_scenario(scan: Path, pretext: str, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCENARIO), str(scan), pretext, mode],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.fixture(scope="module")
def flair(shared_data) -> Path:
    return shared_data / "brats" / "Brats18_2013_11_1" / "flair.nii.gz"


@pytest.mark.parametrize(("pretext", "mode"), [("rubik", "button"), ("genesis", "by_hand")])
def test_removing_previews_after_3d_does_not_crash(flair, pretext, mode):
    out = run_scenario(flair, pretext, mode)
    assert out.returncode == 0, f"exit status {out.returncode}\n{out.stderr[-3000:]}"
    done = [line for line in out.stdout.splitlines() if line.startswith("done")]
    assert done == ["done ['flair']"], out.stdout  # every step ran; only the scan is left


def test_script_ending_with_the_viewer_open_exits_cleanly(flair):
    """The exit crash came 5 times in 6: two runs in a row must both exit with status 0."""
    for _ in range(2):
        out = run_scenario(flair, "rubik", "exit")
        assert "previewed" in out.stdout, out.stderr[-3000:]
        assert out.returncode == 0, f"exit status {out.returncode}\n{out.stderr[-3000:]}"


def test_layers_are_removed_with_the_canvas_context_current(make_napari_viewer, qtbot):
    """The cause of the first crash, in process: napari deletes a removed layer's GL objects in the current
    context; with the dock open that is the canvas's, whoever removes the layer."""
    import numpy as np
    from qtpy.QtGui import QOpenGLContext
    from qtpy.QtWidgets import QOpenGLWidget

    viewer = make_napari_viewer(show=True)
    _, dock = viewer.window.add_plugin_dock_widget("napari-ssl", "Pretext explorer")
    viewer.add_image(np.zeros((4, 16, 16), np.float32), name="scan")
    labels = viewer.add_points([[2, 4, 4]], features={"label": ["1"]}, text="{label}", name="labels")
    (canvas,) = dock.window().findChildren(QOpenGLWidget)
    qtbot.waitUntil(canvas.isValid, timeout=5000)  # painted once: its context exists
    seen = []
    viewer.layers.events.removed.connect(lambda event: seen.append(QOpenGLContext.currentContext()))
    canvas.doneCurrent()  # between paints, another context (Qt's compositor) is current
    viewer.layers.remove(labels)
    assert seen == [canvas.context()]
