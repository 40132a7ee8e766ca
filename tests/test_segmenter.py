"""The segmenter contract (napari_ssl.inference.segmenter): one description read without loading, one predict, the
same masks as the native pipeline, and one sentence for a folder of no known format."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_ssl.inference.segmenter import (
    SegmenterError,
    SegmentProgress,
    SegmentResult,
    describe_segmenter,
    find_format,
    open_segmenter,
    predict_iter,
)
from napari_ssl.phantom import make_phantom


def test_describe_reads_the_bundled_model_without_torch(tmp_path) -> None:
    import subprocess

    code = ("import sys; from napari_ssl.inference.segmenter import describe_segmenter as d; i = d('phantom-demo'); "
            "print(i.format, i.title, i.channel_names, i.names, i.spacing, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["napari-ssl", "phantom-demo", "('phantom',)", "{0:", "'background',", "1:",
                                  "'lesion'}", "(2.5,", "1.5,", "1.5)", "False"]


def test_a_folder_of_no_format_names_what_was_looked_for(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(SegmenterError) as err:
        describe_segmenter(tmp_path)
    assert "meta.json" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SegmenterError, match="no such model"):
        find_format(tmp_path / "missing")


def test_contract_masks_equal_the_native_pipeline_and_check_channels() -> None:
    from napari_ssl.inference.bundled import resolve_model
    from napari_ssl.inference.segment import load_model, segment

    image, _ = make_phantom(shape=(32, 64, 64), seed=3)
    native = segment(image, load_model(resolve_model("phantom-demo"), device="cpu"), overlap=0.25).array
    model = open_segmenter("phantom-demo", device="cpu")
    assert model.info.format == "napari-ssl" and model.device == "cpu"
    events = list(predict_iter(model, [image], overlap=0.25))
    assert isinstance(events[-1], SegmentResult) and any(isinstance(e, SegmentProgress) for e in events)
    labels = events[-1].labels
    assert labels.same_geometry(image) and np.array_equal(labels.array, native) and (native == 1).any()
    assert events[-1].names == {0: "background", 1: "lesion"}
    with pytest.raises(SegmenterError, match="takes 1 input channel"):
        model.predict([image, image])


def test_classes_without_a_colour_get_one_no_other_class_has() -> None:
    from napari_ssl.classes import PALETTE
    from napari_ssl.inference.segmenter import InputChannel, OutputClass, SegmenterInfo

    info = SegmenterInfo(path="m", format="torchscript", title="m", channels=(InputChannel("t1"),),
                         classes=(OutputClass(1, "edema", PALETTE[1]), OutputClass(2, "core"), OutputClass(4, "et")))
    colours = info.colors
    assert colours[1] == PALETTE[1] and len(set(colours.values())) == 3  # was: core took edema's green
    assert set(colours) == {1, 2, 4}
