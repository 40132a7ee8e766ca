"""MONAI bundles (napari_ssl.inference.formats.bundle): a bundle written in the test with monai.bundle's config format
and a real MONAI network is described from its metadata, refused without trust, refused in one sentence without its
weights or with the wrong number of channels, and gives the masks of its own workflow (LoadImaged -> ... ->
SaveImaged run by monai.bundle) on a scan with a non-identity direction."""

from __future__ import annotations

import numpy as np
import pytest
from monai_bundles import run_bundle_workflow, write_zoo_bundle

from napari_ssl import io
from napari_ssl.inference.segmenter import (
    SegmenterError,
    SegmentProgress,
    SegmentResult,
    TrustRequired,
    describe_segmenter,
    open_segmenter,
    predict_iter,
)
from napari_ssl.io.volume import Volume
from napari_ssl.phantom import make_phantom


@pytest.fixture(scope="module")
def oblique_scan(tmp_path_factory):
    image, _ = make_phantom(shape=(24, 56, 48), spacing=(3.0, 1.7, 1.4), seed=5)
    direction = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    path = tmp_path_factory.mktemp("scan") / "oblique.nii.gz"
    io.write(Volume(image.array, image.spacing, (12.0, -30.0, 7.5), direction), path)
    return path


def test_describe_reads_the_metadata_and_asks_for_trust(tmp_path) -> None:
    root = write_zoo_bundle(tmp_path / "zoo")
    info = describe_segmenter(root)
    assert info.format == "monai-bundle" and info.title == "Test phantom segmentation"
    assert info.channel_names == ("mr0",) and info.channels[0].modality == "MR"
    assert info.names == {0: "background", 1: "scalp", 2: "lesion"}
    assert info.spacing == (2.0, 1.5, 1.5) and info.orientation == "RAS"
    assert info.needs_trust and "expressions" in info.trust_reason
    with pytest.raises(TrustRequired) as err:
        open_segmenter(root, device="cpu")
    assert "expressions" in str(err.value) and "\n" not in str(err.value)


def test_a_missing_weight_file_is_one_sentence_naming_it(tmp_path) -> None:
    root = write_zoo_bundle(tmp_path / "zoo", weights=False)
    with pytest.raises(SegmenterError) as err:
        describe_segmenter(root)
    assert "models/model.pt" in str(err.value) and "models/model.ts" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_four_channel_bundle_given_one_layer_is_one_sentence(tmp_path, oblique_scan) -> None:
    root = write_zoo_bundle(tmp_path / "brats", in_channels=4)
    model = open_segmenter(root, device="cpu", trust=True)
    assert model.info.channel_names == ("mr0", "mr1", "mr2", "mr3")
    with pytest.raises(SegmenterError, match=r"takes 4 input channel\(s\) \(mr0, mr1, mr2, mr3\), got 1"):
        model.predict([io.read(oblique_scan)])


def test_the_in_memory_image_is_what_loadimage_reads(oblique_scan) -> None:
    from monai.transforms import LoadImage

    from napari_ssl.inference.formats.bundle import _meta_tensor, volume_of

    scan = io.read(oblique_scan)
    loaded = LoadImage(image_only=True)(str(oblique_scan))
    ours = _meta_tensor([scan], np.float32)
    assert tuple(ours.shape) == tuple(loaded.shape) and np.array_equal(ours.numpy(), loaded.numpy())
    assert np.allclose(ours.affine.numpy(), loaded.affine.numpy(), atol=1e-5)
    back = volume_of(loaded.numpy(), loaded.affine.numpy())
    assert back.same_geometry(scan, atol=1e-4) and np.array_equal(back.array, scan.array)


def test_bundle_masks_equal_the_bundles_own_workflow(tmp_path, oblique_scan) -> None:
    root = write_zoo_bundle(tmp_path / "zoo")
    reference = io.read(run_bundle_workflow(root, oblique_scan, tmp_path / "out"))
    scan = io.read(oblique_scan)
    model = open_segmenter(root, device="cpu", trust=True)
    events = list(predict_iter(model, [scan]))
    assert isinstance(events[-1], SegmentResult) and sum(isinstance(e, SegmentProgress) for e in events) >= 3
    labels = events[-1].labels
    assert labels.same_geometry(scan) and reference.same_geometry(scan, atol=1e-3)
    counts = np.bincount(labels.array.ravel(), minlength=3)
    assert (counts > 100).sum() >= 2  # the untrained network still draws two classes or more
    assert (labels.array == reference.array).mean() >= 0.999
    assert events[-1].names == {0: "background", 1: "scalp", 2: "lesion"}
    from napari_ssl.inference.sliding import SegmentationCancelled

    with pytest.raises(SegmentationCancelled):
        model.predict([scan], should_stop=lambda: True)
