"""Backbones (MONAI BasicUNet in four sizes), encoder lift-out and transfer, pretext heads, losses and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.networks.nets import BasicUNet

from napari_ssl.models import (
    SIZES,
    BackboneSpec,
    ModelSpec,
    PretrainModel,
    UNet,
    build_unet,
    load_parts,
    sub_state,
)
from napari_ssl.models.heads import psnr
from napari_ssl.pretext.planes.network import LineHead, heatmap_angles, planes_losses, planes_metrics
from napari_ssl.pretext.rubik import permutation_set
from napari_ssl.pretext.rubik.network import RubikCellHead, RubikHead, cube_levels, rubik_metrics


@pytest.mark.parametrize("size", list(SIZES))
def test_sizes_grow(size: str) -> None:
    spec = BackboneSpec(size=size)
    assert spec.features == SIZES[size]
    assert BackboneSpec.from_dict(spec.to_dict()) == spec


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="backbone size must be one of"):
        BackboneSpec(size="huge")
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        BackboneSpec(size="tiny", spatial_dims=1)
    with pytest.raises(ValueError, match="6 positive ints"):
        BackboneSpec(features=(1, 2, 3))


@pytest.mark.parametrize("dims", [2, 3])
def test_unet_matches_monai_basicunet(dims: int) -> None:
    torch.manual_seed(0)
    ours = build_unet(BackboneSpec(size="tiny", spatial_dims=dims), out_channels=2)
    ref = BasicUNet(spatial_dims=dims, in_channels=1, out_channels=2, features=SIZES["tiny"])
    ref.load_state_dict({k.removeprefix("net."): v for k, v in ours.state_dict().items()})
    x = torch.randn(1, 1, *([32] * dims))
    torch.testing.assert_close(ours(x), ref(x))
    feats = ours.encode(x)
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    assert [f.shape[1] for f in feats] == list(SIZES["tiny"][:5])


def test_encoder_lift_out_shares_weights() -> None:
    unet = UNet(BackboneSpec(size="tiny"), out_channels=1)
    encoder = unet.encoder()
    assert {k.split(".")[0] for k in encoder.state_dict()} == {
        "conv_0",
        "down_1",
        "down_2",
        "down_3",
        "down_4",
    }
    x = torch.randn(1, 1, 32, 32, 32)
    for a, b in zip(encoder(x), unet.encode(x), strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        unet.net.conv_0.conv_0.conv.weight.add_(1.0)
    assert encoder.conv_0.conv_0.conv.weight is unet.net.conv_0.conv_0.conv.weight


def test_transfer_encoder_and_decoder_into_a_segmenter() -> None:
    model = PretrainModel(ModelSpec(pretexts=("context",), backbone="tiny"))
    state = model.state_dict()
    seg = build_unet(BackboneSpec(size="tiny"), out_channels=5)  # 5 classes: only final_conv differs
    loaded = load_parts(seg, state, prefix="backbone3d.", parts=("encoder", "decoder"))
    assert loaded and not any("final_conv" in k for k in loaded)
    for key in loaded:
        torch.testing.assert_close(seg.state_dict()[key], state["backbone3d." + key])
    assert seg(torch.randn(1, 1, 32, 32, 32)).shape == (1, 5, 32, 32, 32)
    enc = sub_state(state, "backbone3d.", ("encoder",))
    assert enc and all(k.split(".")[1] in {"conv_0", "down_1", "down_2", "down_3", "down_4"} for k in enc)
    bigger = build_unet(BackboneSpec(size="small"), out_channels=2)
    with pytest.raises(ValueError, match="different backbone size"):
        load_parts(bigger, state, prefix="backbone3d.")
    with pytest.raises(ValueError, match="no encoder weights"):
        load_parts(seg, state, prefix="nothing.")


def _batch(b: int = 2, v: int = 3, cube: int = 12, patch: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "rubik.cubes": torch.randn(b, 8, 1, cube, cube, cube, generator=g),
        "rubik.perm": torch.tensor([1, 4][:b]),
        "rubik.rot": torch.randint(0, 2, (b, 8, 2), generator=g).float(),
        "context.input": torch.randn(b, 1, patch, patch, patch, generator=g),
        "context.target": torch.randn(b, 1, patch, patch, patch, generator=g),
        "planes.images": torch.randn(b, v, 1, patch, patch, generator=g),
        "planes.heatmaps": torch.rand(b, v, v, patch, patch, generator=g),
        "planes.has_line": torch.ones(b, v, v, dtype=torch.bool),
        "planes.position": torch.rand(b, v, generator=g),
        "planes.position_mask": torch.tensor([[1.0, 1.0, 0.0]] * b),
    }


def test_pretrain_model_outputs_losses_and_gradients() -> None:
    spec = ModelSpec(
        pretexts=("rubik", "context", "planes"),
        backbone="tiny",
        heads={"rubik": {"cube_shape": (12, 12, 12), "n_permutations": 10}, "planes": {"n_views": 3}},
    )
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert spec.heads["rubik"] == {"cube_shape": (12, 12, 12), "n_cubes": 8, "n_permutations": 10, "n_axes": 2,
                                   "alpha": 0.5, "head": "cells"}  # the unit's defaults filled in
    assert cube_levels(spec.heads["rubik"]["cube_shape"]) == 2  # 12 -> 6 -> 3: the deepest level with >= 2 voxels
    model = PretrainModel(spec)
    batch = _batch()
    out = model(batch)
    assert out["rubik.perm"].shape == (2, 10) and out["rubik.rot"].shape == (2, 8, 2)
    assert out["context.restored"].shape == (2, 1, 32, 32, 32)
    assert out["planes.heatmaps"].shape == (2, 3, 3, 32, 32) and out["planes.position"].shape == (2, 3)
    losses = model.losses(out, batch, {"rubik": 2.0})
    total = 2.0 * losses["rubik"] + losses["context"] + losses["planes"]
    torch.testing.assert_close(losses["loss"], total)
    torch.testing.assert_close(losses["rubik"], 0.5 * losses["rubik/perm"] + 0.5 * losses["rubik/rot"])
    losses["loss"].backward()
    shared = model.backbone3d.net.conv_0.conv_0.conv.weight.grad
    assert shared is not None and shared.abs().sum() > 0
    metrics = model.metrics(out, batch)
    assert set(metrics) >= {
        "rubik/perm_top1",
        "rubik/rot_acc",
        "context/psnr_gain",
        "planes/angle_error_deg",
        "planes/position_mae",
    }
    assert not model.unused_parameters_possible()
    assert PretrainModel(
        ModelSpec(pretexts=("rubik",), backbone="tiny", heads={"rubik": {"cube_shape": (12,) * 3}})
    ).unused_parameters_possible()


def test_a_flat_model_dict_from_before_the_heads_builds_the_same_network() -> None:
    """meta.json written before ``ModelSpec.heads`` kept every head field flat: it still opens, as the same network
    (same fields, same weights from the same seed); the new form is written back."""
    spec = ModelSpec(pretexts=("rubik", "context", "planes"), backbone="tiny",
                     heads={"rubik": {"cube_shape": (12, 12, 12), "n_permutations": 10}, "planes": {"n_views": 3}})
    flat = {"pretexts": ["rubik", "context", "planes"], "backbone": "tiny", "in_channels": 1,
            "cube_shape": [12, 12, 12], "n_cubes": 8, "n_permutations": 10, "n_axes": 2, "n_views": 3, "alpha": 0.5,
            "context_residual": True, "rubik_head": "cells", "planes_head": "conv"}
    old = ModelSpec.from_dict(flat)
    assert old == spec and old.to_dict() == spec.to_dict() and "heads" in old.to_dict()
    torch.manual_seed(0)
    new_state = PretrainModel(spec).state_dict()
    torch.manual_seed(0)
    old_state = PretrainModel(old).state_dict()
    assert new_state.keys() == old_state.keys() and all(torch.equal(new_state[k], old_state[k]) for k in new_state)


def test_model_spec_validation() -> None:
    with pytest.raises(ValueError, match="pretexts must be distinct names"):
        ModelSpec(pretexts=("rubik", "rubik"), heads={"rubik": {"cube_shape": (8, 8, 8)}})
    with pytest.raises(ValueError, match="rubik needs cube_shape"):
        ModelSpec(pretexts=("rubik",))
    with pytest.raises(ValueError, match="rubik has no head field n_views"):  # each pretext owns its fields
        ModelSpec(pretexts=("rubik",), heads={"rubik": {"cube_shape": (8, 8, 8), "n_views": 3}})
    with pytest.raises(ValueError, match=r"head fields given for \['planes'\]"):
        ModelSpec(pretexts=("context",), heads={"planes": {"n_views": 3}})
    with pytest.raises(ValueError, match="rubik alpha must be in"):
        ModelSpec(pretexts=("rubik",), heads={"rubik": {"cube_shape": (8, 8, 8), "alpha": 2.0}})


def test_rubik_metrics_perfect_and_wrong() -> None:
    perm = torch.tensor([2, 0])
    rot = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    logits = torch.nn.functional.one_hot(perm, 3).float() * 10
    m = rubik_metrics(logits, rot * 20 - 10, perm, rot)
    assert m == {"rubik/perm_top1": 1.0, "rubik/rot_acc": 1.0}
    m = rubik_metrics(-logits, 10 - rot * 20, perm, rot)
    assert m == {"rubik/perm_top1": 0.0, "rubik/rot_acc": 0.0}


def test_rubik_cell_head_reads_the_permutation_and_turns_from_each_cubes_answer() -> None:
    """Cubes that each say where they came from and how they are turned give the right permutation and flags."""
    n, k, turns = 8, 10, 4
    perms = permutation_set(n, k)
    head = RubikCellHead(n * turns, n, k, 2, perms, cell_hidden=n * turns)
    with torch.no_grad():  # the paper's FC heads silent; the shared classifier passes a one-hot answer through
        for layer in (head.perm[-1], head.rot[-1]):
            layer.weight.zero_()
            layer.bias.zero_()
        head.cells[0].weight.copy_(torch.eye(n * turns) * 10)
        head.cells[0].bias.zero_()
        head.cells[2].weight.copy_(torch.eye(n * turns))
        head.cells[2].bias.zero_()
    rng = np.random.default_rng(0)
    classes = rng.integers(0, k, 6)
    flags = rng.integers(0, 2, (6, n, 2))
    answer = torch.zeros(6, n, n, turns)  # cube in cell i: from cell perms[c, i], turned (flag x, flag y)
    for b, c in enumerate(classes):
        for i in range(n):
            answer[b, i, perms[c, i], 2 * flags[b, i, 0] + flags[b, i, 1]] = 1.0
    perm, rot = head(answer.flatten(2))
    assert perm.shape == (6, k) and rot.shape == (6, n, 2)
    np.testing.assert_array_equal(perm.argmax(1).numpy(), classes)
    np.testing.assert_array_equal((rot > 0).numpy(), flags.astype(bool))
    with pytest.raises(ValueError, match="permutations must be"):
        RubikCellHead(4, n, k + 1, 2, perms)


def test_rubik_checkpoints_from_before_the_cell_head_still_load() -> None:
    spec = ModelSpec(pretexts=("rubik",), backbone="tiny",
                     heads={"rubik": {"cube_shape": (8, 8, 8), "n_permutations": 10}})
    assert spec.heads["rubik"]["head"] == "cells" and isinstance(PretrainModel(spec).rubik_head, RubikCellHead)
    old = spec.to_dict()
    del old["heads"]["rubik"]["head"]  # meta.json written before it
    old_spec = ModelSpec.from_dict(old)
    assert old_spec.heads["rubik"]["head"] == "concat"
    flat = {"pretexts": ["rubik"], "backbone": "tiny", "in_channels": 1, "cube_shape": [8, 8, 8], "n_cubes": 8,
            "n_permutations": 10, "n_axes": 2, "n_views": 3, "alpha": 0.5, "context_residual": True,
            "planes_head": "conv"}  # the flat meta.json of that time, before ModelSpec.heads
    assert ModelSpec.from_dict(flat) == old_spec
    model = PretrainModel(old_spec)
    assert type(model.rubik_head) is RubikHead
    state = {k: v for k, v in PretrainModel(spec).state_dict().items() if not k.startswith("rubik_head.cells")}
    model.load_state_dict(state)  # the old weights are exactly the FC heads'
    with pytest.raises(ValueError, match="rubik head must be one of"):
        ModelSpec(pretexts=("rubik",), heads={"rubik": {"cube_shape": (8, 8, 8), "head": "bogus"}})


def test_planes_line_head_replaces_the_output_conv_and_old_checkpoints_still_load() -> None:
    """The default planes network draws its line maps with a LineHead on the last decoder level (the U-Net's 1x1
    output conv, a linear map of 4-8 features to every view's map, is gone); a meta.json from before it rebuilds the
    1x1 conv and loads its weights."""
    spec = ModelSpec(pretexts=("planes",), backbone="tiny", heads={"planes": {"n_views": 3}})
    assert spec.heads["planes"]["head"] == "conv"
    model = PretrainModel(spec)
    assert isinstance(model.line_head, LineHead)
    assert not any(k.startswith("backbone2d.net.final_conv") for k in model.state_dict())  # no unused weights
    batch = {k: v for k, v in _batch().items() if k.startswith("planes.")}
    out = model(batch)
    assert out["planes.heatmaps"].shape == (2, 3, 3, 32, 32)
    model.losses(out, batch)["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())  # every weight trains (DDP needs no unused search)
    old = spec.to_dict()
    del old["heads"]["planes"]["head"]  # meta.json written before the line head
    old_spec = ModelSpec.from_dict(old)
    assert old_spec.heads["planes"]["head"] == "linear"
    flat = {"pretexts": ["planes"], "backbone": "tiny", "in_channels": 1, "cube_shape": [], "n_cubes": 8,
            "n_permutations": 100, "n_axes": 2, "n_views": 3, "alpha": 0.5, "context_residual": True,
            "rubik_head": "cells"}  # the flat meta.json of that time
    assert ModelSpec.from_dict(flat) == old_spec
    old = PretrainModel(old_spec)
    assert not hasattr(old, "line_head") and old.backbone2d.net.final_conv(torch.zeros(1, 4, 8, 8)).shape[1] == 3
    state = {k: torch.randn_like(v) for k, v in old.state_dict().items()}
    reloaded = PretrainModel(old_spec)
    reloaded.load_state_dict(state)  # strict: the old weights are exactly this network's
    assert torch.equal(reloaded.backbone2d.net.final_conv.weight, state["backbone2d.net.final_conv.weight"])
    with pytest.raises(ValueError, match="planes head must be one of"):
        ModelSpec(pretexts=("planes",), heads={"planes": {"head": "bogus"}})


def test_psnr() -> None:
    ref = torch.zeros(1, 1, 4, 4)
    ref[..., 0, 0] = 1.0
    x = ref + 0.1
    assert float(psnr(x, ref)) == pytest.approx(20.0, abs=1e-4)  # range 1, mse 0.01


def _line_heatmap(angle_deg: float, size: int = 48, sigma: float = 2.0) -> torch.Tensor:
    yy, xx = np.mgrid[0:size, 0:size].astype(float) - (size - 1) / 2
    a = math.radians(angle_deg)
    d = np.abs(-math.sin(a) * xx + math.cos(a) * yy)  # distance to the line through the centre
    return torch.from_numpy(np.exp(-(d**2) / (2 * sigma**2))).float()


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 135.0])
def test_heatmap_angle_and_error(angle: float) -> None:
    est, _ = heatmap_angles(_line_heatmap(angle))
    diff = (math.degrees(float(est)) - angle) % 180
    assert min(diff, 180 - diff) < 1.0  # a line clipped by a square biases the moments slightly
    target = torch.stack([_line_heatmap(angle)])[None, None]  # (1, 1, 1, h, w)
    pred = torch.stack([_line_heatmap(angle + 20)])[None, None]
    m = planes_metrics(pred, torch.tensor([[0.3]]), target, torch.tensor([[0.5]]), torch.tensor([[1.0]]))
    assert m["planes/angle_error_deg"] == pytest.approx(20.0, abs=1.5)
    assert m["planes/position_mae"] == pytest.approx(0.2)


def test_planes_heatmap_loss_weights_the_lines() -> None:
    """Missing a line costs (1 + line_weight) times the same error on the background (default weight 10: a plain MSE
    is nearly minimal for a flat map, since a line covers a few percent of its map); line_weight 0 is plain MSE."""
    target = _line_heatmap(30.0)[None, None]  # (1, 1, h, w)
    zero, one = torch.zeros(1, 1), torch.ones(1, 1)
    on = (target == target.max()).float()  # the pixels of the line itself (target 1)
    off = (target < 1e-6).float()  # far from it (target 0)
    on_loss = planes_losses(target - 0.1 * on / on.sum().sqrt(), zero, target, zero, one)["planes/heatmap"]
    off_loss = planes_losses(target + 0.1 * off / off.sum().sqrt(), zero, target, zero, one)["planes/heatmap"]
    assert float(on_loss / off_loss) == pytest.approx(11.0, rel=1e-4)
    pred = torch.rand_like(target)
    plain = planes_losses(pred, zero, target, zero, one, line_weight=0.0)["planes/heatmap"]
    assert float(plain) == pytest.approx(float(torch.nn.functional.mse_loss(pred, target)), rel=1e-6)


def test_context_restoration_starts_as_the_identity() -> None:
    """A fresh context network returns its input: PSNR gain 0 at step 0, not the loss of a random decoder."""
    import torch

    from napari_ssl.models import ModelSpec, PretrainModel

    torch.manual_seed(0)
    model = PretrainModel(ModelSpec(pretexts=("context",), backbone="tiny"))
    target = torch.randn(2, 1, 32, 32, 32)
    corrupted = target.clone()
    corrupted[:, :, :8, :8, :8], corrupted[:, :, 16:24, 16:24, 16:24] = target[:, :, 16:24, 16:24, 16:24], target[:, :, :8, :8, :8]
    batch = {"context.input": corrupted, "context.target": target}
    metrics = model.metrics(model(batch), batch)
    assert abs(metrics["context/psnr_gain"]) < 1e-4
    assert metrics["context/psnr"] == pytest.approx(metrics["context/psnr_input"], abs=1e-4)
    old = ModelSpec.from_dict({"pretexts": ["context"], "backbone": "tiny"})  # a checkpoint from before: not residual
    assert old.heads["context"]["residual"] is False
    assert ModelSpec.from_dict({"pretexts": ["context"], "heads": {"context": {}}}).heads["context"]["residual"] is False
    assert ModelSpec(pretexts=("genesis",)).heads["genesis"]["residual"] is True  # the same head, its own field
