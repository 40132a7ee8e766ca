"""Fine-tuning from an imaging-planes checkpoint: its 2D U-Net is inflated to 3D (I3D) so every pretext of the study
can initialise the 3D segmenter."""

from __future__ import annotations

import torch
from test_segment_shared import finetune_from_pretraining

from napari_ssl.models import BackboneSpec, build_unet
from napari_ssl.models.backbone import inflate_2d


def test_inflated_convolution_matches_the_2d_one_on_z_constant_input() -> None:
    torch.manual_seed(0)
    net2 = build_unet(BackboneSpec(size="tiny", spatial_dims=2), out_channels=1)
    net3 = build_unet(BackboneSpec(size="tiny", spatial_dims=3), out_channels=1)
    state = inflate_2d(net2.state_dict())
    net3.load_state_dict(state)
    assert state["net.upcat_1.upsample.deconv.weight"].shape[2:] == (2, 2, 2)
    with torch.no_grad():
        for name in ("down_2.convs.conv_0.conv", "upcat_2.upsample.deconv"):
            conv2 = net2.net.get_submodule(name)
            image = torch.randn(1, conv2.in_channels, 16, 16)
            volume = image[:, :, None].repeat(1, 1, 16, 1, 1)  # the same slice at every z
            a = conv2(image)
            b = net3.net.get_submodule(name)(volume)
            inner = b[:, :, 2:-2] if "deconv" in name else b[:, :, 1:-1]  # zero padding at the z borders
            assert torch.allclose(inner, a[:, :, None].expand_as(inner), atol=1e-5), name

def test_finetune_from_a_planes_checkpoint_inflates_its_2d_unet(tmp_path) -> None:
    state, model, _ = finetune_from_pretraining(tmp_path, ("planes",), warmup=0)
    info = model.checkpoint.pretrained
    assert info["inflated_2d"] and info["parts"] == ["encoder", "decoder"]
    key = "net.down_2.convs.conv_0.conv.weight"
    expected = inflate_2d({key: state["backbone2d." + key]})[key]
    assert torch.allclose(model.net.state_dict()[key], expected, atol=1e-6)
