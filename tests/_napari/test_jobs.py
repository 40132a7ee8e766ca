"""The docks' child-process jobs (Qt-free): the Segment job sends at most ~10 progress updates a second."""

from __future__ import annotations

import time

import napari_ssl.inference.segmenter as seg
from napari_ssl._napari.jobs import PROGRESS_INTERVAL, ModelLoaded, SegmentRequest, segment_job


class FakeModel:
    device = "cpu"


def test_segment_progress_is_throttled(monkeypatch) -> None:
    def many_windows(volumes, model, **options):
        for i in range(1, 2001):  # ~1 s of 0.5 ms windows: the measured GUI run had ~1,800 updates
            time.sleep(0.0005)
            yield seg.SegmentProgress(i / 2000)
        yield seg.SegmentResult(labels=None)

    monkeypatch.setattr(seg, "open_segmenter", lambda path, device, trust: FakeModel())
    monkeypatch.setattr(seg, "predict_iter", many_windows)
    t0 = time.monotonic()
    events = list(segment_job(SegmentRequest(model="m", volumes=())))
    elapsed = time.monotonic() - t0
    progress = [e for e in events if isinstance(e, seg.SegmentProgress)]
    assert isinstance(events[0], ModelLoaded) and isinstance(events[-1], seg.SegmentResult)
    assert len(progress) <= elapsed / PROGRESS_INTERVAL + 2
    assert progress[-1].fraction == 1.0  # the last update always goes through
