"""The network's answer on one pretext sample (napari_ssl.study.answers): what the explorer shows of a checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_ssl.io.volume import Volume
from napari_ssl.phantom import make_phantom
from napari_ssl.pretext import ContextRestoration, ImagingPlanes, RubikCube
from napari_ssl.pretext._restoration.answer import answer_restoration
from napari_ssl.pretext.planes.answer import answer_planes
from napari_ssl.pretext.rubik.answer import answer_rubik
from napari_ssl.study.answers import answer, describe, load_network


def pretrain_tiny(out: Path, pretexts=("rubik", "context", "planes"), steps: int = 2) -> Path:
    """A few steps of napari_ssl.training.pretrain.pretrain: tiny backbone, 32^3 patches, 6 planes of 32 px."""
    from napari_ssl.training.pretrain import PretrainConfig, pretrain

    image, _ = make_phantom(shape=(32, 40, 40), spacing=(2.0, 2.0, 2.0))
    options = {"rubik": {"n_permutations": 10}, "planes": {"n_stack": 4, "n_oblique": 2}}
    config = PretrainConfig(
        pretexts=tuple(pretexts), volumes=(image,), out=str(out), steps=steps, batch_size=1, patch_size=32,
        backbone="tiny", spacing=(2.0, 2.0, 2.0), seed=0, num_threads=1, num_workers=0, save_every=0,
        val_samples=1, pretext_options={k: v for k, v in options.items() if k in pretexts},
    )
    for _ in pretrain(config):
        pass
    return out


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return pretrain_tiny(tmp_path_factory.mktemp("answers") / "ssl")


@pytest.fixture(scope="module")
def scan() -> Volume:
    image, _ = make_phantom(shape=(20, 36, 40), spacing=(2.0, 1.5, 1.5), seed=3)
    return image.with_array(image.array * 1000.0 + 50.0)  # scan units unlike the normalised ones


def test_context_identity_network_returns_the_corrupted_scan(tiny_ckpt, scan) -> None:
    net = load_network(tiny_ckpt)
    head = net.net.backbone3d.net.final_conv
    head = head.conv if hasattr(head, "conv") else head
    with torch.no_grad():  # a residual network with a zero output layer is the identity
        head.weight.zero_()
        head.bias.zero_()
    task = ContextRestoration(patch_size=4, n_swaps=6)
    params = task.sample(scan.spatial_shape, np.random.default_rng(1))
    out = answer_restoration(net, scan, task, params)
    corrupted = task.apply(scan.array, params)
    assert out["restored"].shape == scan.spatial_shape
    np.testing.assert_allclose(out["restored"], corrupted, rtol=0, atol=1e-3 * np.ptp(scan.array))
    assert abs(out["psnr_gain"]) < 1e-4 and math.isfinite(out["psnr_input"])
    assert out["network_shape"] == (20, 27, 30)  # resampled to the checkpoint's 2 mm spacing


def test_context_answer_is_deterministic_and_measured_against_the_original(tiny_ckpt, scan) -> None:
    net = load_network(tiny_ckpt)
    task = ContextRestoration(patch_size=4, n_swaps=6)
    params = task.sample(scan.spatial_shape, np.random.default_rng(2))
    first = answer(net, "context", scan, task, params)
    second = answer(net, "context", scan, task, params)
    np.testing.assert_array_equal(first["restored"], second["restored"])
    assert first["psnr_gain"] == pytest.approx(first["psnr"] - first["psnr_input"])
    assert not np.array_equal(first["restored"], first["corrupted"])  # a trained net changes something
    no_swap = answer_restoration(net, scan, task, type(params)(**{**params.__dict__, "pairs": ()}))
    assert no_swap["psnr_input"] > first["psnr_input"]  # an unswapped input is the original itself
    assert "dB" in describe("context", first)


def _force_rubik(net, perm_class: int, flags: np.ndarray) -> None:
    """Make the Rubik head answer ``perm_class`` and the rotation ``flags`` whatever the cubes."""
    head = net.net.rubik_head
    with torch.no_grad():
        head.cells[-1].weight.zero_()  # the shared cube classifier undecided: it adds the same to every answer
        head.cells[-1].bias.zero_()
        for layer, bias in ((head.perm[-1], np.eye(head.perm[-1].out_features)[perm_class]),
                            (head.rot[-1], np.asarray(flags, float).reshape(-1))):
            layer.weight.zero_()
            layer.bias.copy_(torch.as_tensor((bias - 0.5) * 20, dtype=layer.bias.dtype))


def test_rubik_cube_correctness_follows_the_prediction(tiny_ckpt, scan) -> None:
    net = load_network(tiny_ckpt)
    task = RubikCube(grid=2, n_permutations=10, gap=2)
    params = task.sample(scan.spatial_shape, np.random.default_rng(4))
    truth = np.asarray(params.rotations, bool)
    _force_rubik(net, params.permutation_index, truth)
    out = answer_rubik(net, scan, task, params)
    assert out["perm_pred"] == out["perm_true"] == params.permutation_index
    assert out["right"].all() and out["perm_prob"] > 0.99
    wrong = (params.permutation_index + 1) % 10
    flipped = truth.copy()
    flipped[3, 0] = ~flipped[3, 0]
    _force_rubik(net, wrong, flipped)
    out = answer_rubik(net, scan, task, params)
    expected_pos = task.permutations[wrong] == np.asarray(params.permutation)
    np.testing.assert_array_equal(out["position_right"], expected_pos)
    assert not expected_pos.all()
    np.testing.assert_array_equal(out["rotation_right"], np.arange(8) != 3)
    np.testing.assert_array_equal(out["right"], expected_pos & (np.arange(8) != 3))
    assert f"true {params.permutation_index}" in describe("rubik", out)


def test_planes_answer_places_predictions_on_their_planes(tiny_ckpt, scan) -> None:
    net = load_network(tiny_ckpt)
    task = ImagingPlanes(n_stack=4, n_oblique=2, size=24)
    params = task.sample(scan, np.random.default_rng(5))
    targets = task.targets(params)

    class Oracle(torch.nn.Module):  # answers the targets at the network's 32 px: checks order and resizing
        spec = net.net.spec

        def forward(self, batch):
            images = batch["planes.images"]
            assert images.shape[-2:] == (32, 32)  # resized to the size the network was trained on
            heat = torch.nn.functional.interpolate(torch.as_tensor(targets["heatmaps"]), size=(32, 32),
                                                   mode="bilinear", align_corners=False, antialias=True)
            return {"planes.heatmaps": heat[None], "planes.position": torch.as_tensor(targets["slice_position"])[None]}

    net.net = Oracle()
    out = answer_planes(net, scan, task, params)
    assert out["heatmaps"].shape == (6, 6, 24, 24)
    assert np.isnan(out["angle_error"][~out["has_line"]]).all()
    assert out["has_line"].sum() > 0 and out["angle_error_deg"] < 5.0
    assert out["position_mae"] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_array_equal(out["in_stack"], np.asarray(targets["in_stack"], bool))
    assert "angle error" in describe("planes", out)


def test_planes_answer_of_the_trained_network(tiny_ckpt, scan) -> None:
    net = load_network(tiny_ckpt)
    task = ImagingPlanes(n_stack=4, n_oblique=2, size=16)
    params = task.sample(scan, np.random.default_rng(6))
    out = answer(net, "planes", scan, task, params)
    finite = out["angle_error"][out["has_line"]]
    assert np.isfinite(finite).all() and (finite >= 0).all() and (finite <= 90).all()
    assert np.isfinite(out["positions"]).all()


def test_bad_networks_and_mismatched_parameters_are_one_clear_line(tiny_ckpt, scan, tmp_path) -> None:
    from test_segment_shared import random_checkpoint

    seg = random_checkpoint(tmp_path / "seg")
    with pytest.raises(ValueError, match="segment checkpoint; .* napari-ssl pretrain"):
        load_network(seg)
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "nothing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt meta.json"):
        load_network(tmp_path / "junk")
    net = load_network(tiny_ckpt)
    task = RubikCube(grid=3, n_permutations=10, gap=1)
    params = task.sample(scan.spatial_shape, np.random.default_rng(0))
    with pytest.raises(ValueError, match="trained with grid 2 and 10 permutations"):
        answer_rubik(net, scan, task, params)
    planes = ImagingPlanes(n_stack=2, n_oblique=1, size=16)
    with pytest.raises(ValueError, match="predicts lines for 6 planes"):
        answer_planes(net, scan, planes, planes.sample(scan, np.random.default_rng(0)))


def test_a_pretext_the_network_did_not_learn_is_refused(tmp_path, scan) -> None:
    net = load_network(pretrain_tiny(tmp_path / "ctx", pretexts=("context",), steps=1))
    task = RubikCube(grid=2, n_permutations=10, gap=2)
    with pytest.raises(ValueError, match="not trained on Rubik's cube .*learned context"):
        answer(net, "rubik", scan, task, task.sample(scan.spatial_shape, np.random.default_rng(0)))


def test_genesis_answers_through_its_registry_record(tmp_path, scan, tiny_ckpt) -> None:
    """Models Genesis registers the restoration answer: the network restores a Genesis sample of the scan."""
    from napari_ssl.pretext import registry

    net = load_network(pretrain_tiny(tmp_path / "genesis", pretexts=("genesis",), steps=2))
    task = registry.get("genesis").make({"p_paint": 1.0, "p_inpaint": 1.0, "n_boxes": 3})
    params = task.sample(scan.spatial_shape, np.random.default_rng(5))
    out = answer(net, "genesis", scan, task, params)
    np.testing.assert_array_equal(out["corrupted"], task.apply(scan.array.astype(np.float32), params))
    assert out["restored"].shape == scan.spatial_shape
    assert not np.array_equal(out["restored"], out["corrupted"])  # the genesis head changed something
    assert out["psnr_gain"] == pytest.approx(out["psnr"] - out["psnr_input"])
    assert math.isfinite(out["psnr_patches"])  # inside the in-painted boxes
    assert "Models Genesis" in describe("genesis", out)
    with pytest.raises(ValueError, match="not trained on Models Genesis"):
        answer(load_network(tiny_ckpt), "genesis", scan, task, params)


def test_a_pretext_without_an_answer_view_is_refused(tiny_ckpt, scan) -> None:
    import toy_pretext

    with toy_pretext.registered():
        task = toy_pretext.FLIP.make({"p_flip": 1.0})
        params = task.sample(scan.spatial_shape, 0)
        with pytest.raises(ValueError, match="Flip \\(toy\\) has no network answer view"):
            answer(load_network(tiny_ckpt), "flip", scan, task, params)
