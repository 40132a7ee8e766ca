"""The demo viewer and the sample data contribution, rendered under Xvfb."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_sample_data_opens_phantom(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-ssl", "phantom")
    assert [layer._type_string for layer in layers] == ["image", "labels"]
    image, labels = layers
    np.testing.assert_allclose(image.scale, labels.scale)
    assert image.scale[0] > image.scale[1]
    assert set(np.unique(labels.data)) >= {0, 7}


def test_demo_screenshot_is_not_blank(qtbot, tmp_path):
    from napari_ssl._napari.demo import make_demo_viewer

    viewer = make_demo_viewer(show=True)
    try:
        shot = viewer.screenshot(str(tmp_path / "demo.png"), canvas_only=True, flash=False)
    finally:
        viewer.close()
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    rgb = shot[..., :3].astype(int)
    assert rgb.std() > 20  # not a flat canvas
    # the lesion label (red) is drawn over the image
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 140) & (rgb[..., 2] < 140)
    grey = (np.abs(rgb[..., 0] - rgb[..., 1]) < 8) & (rgb[..., 0] > 60)
    assert grey.sum() > 1000
    assert red.sum() > 0 or (shot[..., 0] > shot[..., 2] + 40).sum() > 0


def test_demo_command_writes_screenshot(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "demo.png"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_ssl.cli", "demo", "--screenshot", str(out)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert pixels.shape[0] > 400 and pixels.std() > 20
