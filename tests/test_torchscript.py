"""TorchScript segmenters (napari_ssl.inference.formats.torchscript): a module scripted with torch.jit and the sidecar
this tool defines give the masks of the checkpoint it came from; a file without its sidecar is one sentence."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ssl.inference.segmenter import SegmenterError, describe_segmenter, open_segmenter
from napari_ssl.io.volume import Volume
from napari_ssl.phantom import make_phantom


def _oblique(image: Volume) -> Volume:
    """The phantom with its axes permuted and flipped (a non-identity direction) and an origin off zero."""
    direction = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    return Volume(np.ascontiguousarray(image.array), image.spacing, (12.0, -30.0, 7.5), direction, name="oblique")


def _script(tmp_path, name="lesion.ts"):
    import torch

    from napari_ssl.inference.bundled import resolve_model
    from napari_ssl.inference.formats.torchscript import Sidecar, write_sidecar
    from napari_ssl.inference.segment import load_model

    model = load_model(resolve_model("phantom-demo"), device="cpu")
    ck = model.checkpoint
    path = tmp_path / name
    torch.jit.save(torch.jit.script(model.net.net), str(path))
    sidecar = Sidecar(channels=describe_segmenter("phantom-demo").channels,
                      classes=describe_segmenter("phantom-demo").classes, spacing=tuple(ck.spacing),
                      orientation=ck.orientation, normalization=ck.normalization, patch=tuple(ck.patch_size))
    return path, sidecar, write_sidecar


def test_scripted_module_with_sidecar_gives_the_native_masks(tmp_path, monkeypatch) -> None:
    from napari_ssl.inference.bundled import resolve_model
    from napari_ssl.inference.segment import segment

    monkeypatch.setenv("NAPARI_SSL_AMP", "0")
    path, sidecar, write = _script(tmp_path)
    write(path, sidecar)
    info = describe_segmenter(path)
    assert info.format == "torchscript" and not info.needs_trust
    assert info.channel_names == ("phantom",) and info.names == {0: "background", 1: "lesion"}
    assert info.spacing == (2.5, 1.5, 1.5) and info.orientation == "LPS"
    image = _oblique(make_phantom(shape=(24, 56, 48), spacing=(3.0, 1.7, 1.4), seed=5)[0])
    native = segment(image, resolve_model("phantom-demo"), overlap=0.25, sw_device="cpu")
    model = open_segmenter(tmp_path, device="cpu")  # the folder holding the file and its sidecar
    got = model.predict([image], overlap=0.25)
    assert got.same_geometry(image) and (native.array == 1).sum() > 50
    assert np.array_equal(got.array, native.array)
    with pytest.raises(SegmenterError, match="takes 1 input channel"):
        model.predict([image, image])


def test_a_scripted_module_without_its_sidecar_is_one_sentence(tmp_path) -> None:
    path, _, _ = _script(tmp_path)
    with pytest.raises(SegmenterError) as err:
        describe_segmenter(path)
    message = str(err.value)
    assert "lesion.json" in message and "\n" not in message and "no sidecar" in message


def test_a_pickled_state_dict_is_no_torchscript_archive(tmp_path) -> None:
    import torch

    from napari_ssl.inference.formats.torchscript import Sidecar, write_sidecar
    from napari_ssl.inference.segmenter import InputChannel, OutputClass
    from napari_ssl.preprocess import Normalization

    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    write_sidecar(path, Sidecar((InputChannel("ct", "CT"),), (OutputClass(1, "liver"),), None, None,
                                Normalization("none"), (16, 16, 16)))
    assert describe_segmenter(path).spacing is None
    with pytest.raises(SegmenterError, match="not a TorchScript archive"):
        open_segmenter(path, device="cpu")
