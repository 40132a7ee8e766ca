"""Shared dock pieces: metrics in words, fixed pretext colours, the checkpoint hub."""

from __future__ import annotations

import pytest

from napari_ssl._napari.widgets import PRETEXT_COLORS, PRETEXTS, metric_words

pytestmark = [pytest.mark.gui]


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("context/psnr_gain", 3.14, "Context restoration: restores 3.1 dB better than the corrupted input"),
        ("context/psnr_gain", -57.6, "Context restoration: restores 57.6 dB worse than the corrupted input"),
        ("rubik/perm_top1", 0.5, "Rubik's cube: finds the cube order 50% of the time"),
        ("planes/angle_error_deg", 12.34, "Imaging planes: intersection lines off by 12.3 degrees on average"),
        ("rubik/something_new", 0.25, "Rubik's cube: something new 0.25"),
    ],
)
def test_metrics_in_words(name, value, words) -> None:
    assert metric_words(name, value) == words


def test_every_pretext_has_its_own_colour() -> None:
    colours = [PRETEXT_COLORS[name] for name in PRETEXTS]
    assert len(set(colours)) == len(colours)


def test_hub_publishes_path_and_kind(qtbot) -> None:
    from napari_ssl._napari.hub import CheckpointHub

    hub = CheckpointHub()
    with qtbot.waitSignal(hub.published, check_params_cb=lambda p, k: (p, k) == ("/a", "segment")):
        hub.publish("/a", "segment")
    assert hub.latest("segment") == "/a" and hub.latest("pretrain") is None
    with pytest.raises(ValueError, match="kind must be one of"):
        hub.publish("/b", "other")
