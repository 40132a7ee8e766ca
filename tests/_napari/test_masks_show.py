"""A segmentation's masks layer is shown in event-loop turns (added hidden, made visible, then each editing
overlay's visual), ending as napari's own add leaves a layer; the one-time warm-up collects garbage once, only
when due and told, and leaves the collector on."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from napari_ssl._napari.segment import masks as masks_show
from napari_ssl._napari.segment.info import MaskTarget, prepare_masks
from napari_ssl.inference.segment import SegmentResult
from napari_ssl.io.volume import Volume

pytestmark = [pytest.mark.gui]


def _prepared(shape=(6, 8, 8)):
    labels = np.zeros(shape, np.uint8)
    labels[2:4, 2:6, 3:5] = 1
    result = SegmentResult(Volume(labels, spacing=(2.0, 1.5, 1.5)), names={0: "background", 1: "lesion"},
                           colors={1: "#e6194b"})
    return prepare_masks(result, MaskTarget(name="scan masks", model_path="model"))


def _overlay_visuals(viewer, layer) -> list[str]:
    """The vispy visuals napari's canvas has built for ``layer``'s overlays."""
    visuals = viewer.window._qt_viewer.canvas._layer_overlay_to_visual.get(layer, {})
    return sorted(type(visual).__name__ for visual in visuals.values())


def test_masks_are_added_first_then_shown_and_overlays_built_in_later_turns(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    plain = viewer.add_labels(np.zeros((6, 8, 8), np.uint8), name="plain")  # napari's own add, for reference
    prepared = _prepared()
    layer = prepared.layer
    assert prepared.steps == ("visible", "polygon", "brush_stroke")  # staged in the worker thread
    staged = masks_show.StagedShow(viewer)
    with qtbot.waitSignal(staged.done, timeout=10_000):
        assert staged.show(layer, prepared.steps) is layer and layer in viewer.layers
        assert staged.pending == 3 and not layer.visible and _overlay_visuals(viewer, layer) == []
        assert viewer.layers.selection.active is layer  # napari's select-on-insert, in the same turn
    assert staged.pending == 0 and layer.visible
    assert viewer.layers.selection.active is layer and set(viewer.layers.selection) == {layer}  # as napari's add
    assert _overlay_visuals(viewer, layer) == _overlay_visuals(viewer, plain) == [
        "VispyLabelsBrushStrokeOverlay", "VispyLabelsPolygonOverlay"]
    state = lambda lay: (lay.visible, lay.mode, {k: (o.visible, getattr(o, "enabled", None))  # noqa: E731
                                                 for k, o in lay._overlays.items()})
    assert state(layer) == state(plain)
    layer.mode = plain.mode = "polygon"  # the tools work as on napari's own layer
    assert state(layer) == state(plain) and layer._overlays["polygon"].enabled


def test_finish_and_a_removed_layer_leave_the_layer_shown(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    staged = masks_show.StagedShow(viewer)
    first = _prepared()
    staged.show(first.layer, first.steps)
    second = _prepared((4, 8, 8))
    second.layer.name = "other masks"
    staged.show(second.layer, second.steps)  # a new result first runs the steps left of the previous one
    assert first.layer.visible and all(first.layer._overlays[key].visible for key in masks_show.EDIT_OVERLAYS)
    assert len(_overlay_visuals(viewer, first.layer)) == 2
    viewer.layers.remove(second.layer)
    with qtbot.waitSignal(staged.done, timeout=10_000):
        pass
    assert second.layer.visible and all(second.layer._overlays[key].visible for key in masks_show.EDIT_OVERLAYS)
    assert _overlay_visuals(viewer, second.layer) == []  # none built for a layer outside the viewer


def test_warm_up_collects_once_only_when_due_and_told(monkeypatch) -> None:
    calls: list[int] = []
    full = [0]  # full collections so far, as gc.get_stats reports them
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(1) or 0)
    monkeypatch.setattr(gc, "get_stats", lambda: [{"collections": 0}, {"collections": 0}, {"collections": full[0]}])
    monkeypatch.setattr(masks_show, "_WARM", [])
    monkeypatch.setattr(masks_show, "WARMED", threading.Event())
    assert masks_show.warm_up(lambda: False) is False  # a segmentation started meanwhile: no collection
    assert calls == [] and masks_show.WARMED.is_set()
    assert masks_show.warm_up(lambda: True) is False  # once per process
    assert calls == []
    monkeypatch.setattr(masks_show, "_WARM", [])
    assert masks_show.warm_up() is True and calls == [1]
    monkeypatch.setattr(masks_show, "_WARM", [])
    monkeypatch.setattr(masks_show, "stage", lambda layer: full.__setitem__(0, 1) or ())  # a full one ran meanwhile
    assert masks_show.warm_up() is False and calls == [1]


def test_warm_up_collects_on_the_gui_thread_and_only_for_a_docked_widget(make_napari_viewer, qtbot, monkeypatch) -> None:
    """The collection destroys whatever cyclic garbage exists, Qt objects included: it runs on the GUI thread. A
    widget that is not in a window (closed, removed, never docked) starts no warm-up."""
    from qtpy.QtWidgets import QWidget

    threads: list[bool] = []
    monkeypatch.setattr(gc, "collect", lambda *a: threads.append(threading.current_thread() is threading.main_thread()))
    monkeypatch.setattr(masks_show, "_WARM", [])
    monkeypatch.setattr(masks_show, "WARMED", threading.Event())
    loose = QWidget()
    timer = masks_show.start_warm_up(loose, delay_ms=0)
    qtbot.waitUntil(lambda: not timer.isActive(), timeout=5_000)
    qtbot.wait(50)
    assert masks_show._WARM == [] and not masks_show.WARMED.is_set()  # fired, started nothing
    viewer = make_napari_viewer()
    docked = QWidget()
    viewer.window.add_dock_widget(docked, name="x")
    assert masks_show.start_warm_up(docked, delay_ms=0) is not None
    qtbot.waitUntil(masks_show.WARMED.is_set, timeout=30_000)
    assert threads == [True]
    assert masks_show.start_warm_up(docked) is None  # once per process


def test_a_step_that_raises_lets_the_other_steps_run_in_finish_and_in_the_turns(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    staged = masks_show.StagedShow(viewer)
    ran: list[str] = []

    def boom() -> None:
        ran.append("boom")
        raise RuntimeError("step failed")

    staged._steps = [boom, lambda: ran.append("after")]
    with qtbot.waitSignal(staged.done, timeout=1000), pytest.raises(RuntimeError, match="step failed"):
        staged.finish()
    assert ran == ["boom", "after"] and staged.pending == 0

    ran.clear()
    staged._steps = [boom, lambda: ran.append("after")]
    with pytest.raises(RuntimeError, match="step failed"):
        staged._next()  # one turn: the failing step; the timer is still started for the rest
    with qtbot.waitSignal(staged.done, timeout=2000):
        pass
    assert ran == ["boom", "after"] and staged.pending == 0
