"""Helpers shared by the fine-tuning / segmentation tests (no tests here).

- :func:`random_checkpoint` writes a valid segmentation checkpoint with seeded random weights in a second
  (for dock and bad-input tests, where the mask's content does not matter).
- :func:`liver_model` fine-tunes the liver once per session on ``ct_organs`` (the issue's required test) and
  caches the folder, for the Dice test and the geometry test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_ssl.io.volume import Volume

_LIVER: dict[str, object] = {}

#: the liver run: tiny U-Net, 3 x 6 x 6 mm voxels (30 x 50 x 61), 30 steps of 2 patches of 32^3; the last
#: quarter of the slices (the cranial end) is held out.
LIVER_STEPS = 30


def random_checkpoint(path: Path, *, in_channels: int = 1, classes=(("lesion", (1,)),), spacing=(2.0, 2.0, 2.0),
                      patch=(32, 32, 32), seed: int = 0, normalization=None, fingerprint=None,
                      channel_dropout: float | None = None) -> Path:
    """``normalization`` (a :class:`~napari_ssl.preprocess.Normalization`, default z-score), ``fingerprint`` (the
    training data's, as ``meta.json`` holds it; default none, as in older checkpoints) and ``channel_dropout``
    (modality dropout's share; default none recorded) go into the meta."""
    import torch

    from napari_ssl import checkpoint
    from napari_ssl.models import BackboneSpec, build_unet
    from napari_ssl.training.data import Normalization
    from napari_ssl.training.finetune import PALETTE

    spec = BackboneSpec(size="tiny", in_channels=in_channels)
    torch.manual_seed(seed)
    net = build_unet(spec, out_channels=len(classes) + 1)
    meta = {
        "kind": "segment",
        "classes": [{"index": i + 1, "name": n, "ids": list(ids), "color": PALETTE[i]} for i, (n, ids) in enumerate(classes)],
        "backbone": spec.to_dict(),
        "in_channels": in_channels,
        "out_channels": len(classes) + 1,
        "channels": [f"ch{i}" for i in range(in_channels)],
        "patch_size": list(patch),
        "spacing": list(spacing),
        "orientation": "LPS",
        "normalization": (normalization or Normalization()).to_dict(),
        "step": 0,
    }
    if fingerprint is not None:
        meta["fingerprint"] = dict(fingerprint)
    if channel_dropout is not None:
        meta["channel_dropout"] = channel_dropout
    return checkpoint.save(path, net.state_dict(), meta)


def phantom(shape=(24, 40, 36), spacing=(2.0, 1.5, 1.5), seed: int = 0) -> tuple[Volume, Volume]:
    """A noisy scan with a bright ellipsoid, and its label volume (1 inside)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = (z / 0.6) ** 2 + ((y - 0.1) / 0.5) ** 2 + ((x + 0.2) / 0.4) ** 2 < 1
    image = (100 * inside + rng.normal(0, 10, shape)).astype(np.int16)
    direction = np.diag([1.0, -1.0, 1.0])
    img = Volume(image, spacing=spacing, origin=(10.0, 50.0, -20.0), direction=direction, name="phantom")
    return img, img.with_array(inside.astype(np.uint8), name="phantom labels")


def finetune_from_pretraining(tmp_path: Path, pretexts: tuple[str, ...], **changes):
    """One pretraining step of ``pretexts`` (tiny backbone, 32^3) on a phantom, then one fine-tuning step from it
    (a learning rate too small to move the weights): ``(pretrained state, fine-tuned model, its config)``."""
    from napari_ssl import checkpoint
    from napari_ssl.inference.segment import load_model
    from napari_ssl.training.finetune import FinetuneConfig, finetune
    from napari_ssl.training.pretrain import PretrainConfig, pretrain

    image, labels = phantom(shape=(34, 36, 36))
    pre = PretrainConfig(pretexts=pretexts, volumes=(image,), out=str(tmp_path / "ssl"), steps=1, batch_size=1,
                         patch_size=32, backbone="tiny", device="cpu", val_samples=0, num_workers=0)
    list(pretrain(pre))
    state, _ = checkpoint.load(tmp_path / "ssl")
    config = FinetuneConfig(pairs=((image, labels),), classes="1", out=str(tmp_path / "seg"), steps=1, device="cpu",
                            pretrained=str(tmp_path / "ssl"), val_fraction=0.0, lr=1e-12, **changes)
    *_, done = finetune(config)
    return state, load_model(done.path), config


def liver_model(shared_data: Path, root: Path) -> tuple[Path, list]:
    """Fine-tune liver once per session; returns the checkpoint folder and the events."""
    if "path" not in _LIVER:
        from napari_ssl.training.data import Normalization
        from napari_ssl.training.finetune import FinetuneConfig, finetune

        data = shared_data / "ct_organs"
        config = FinetuneConfig(
            images=(str(data / "ct.nii.gz"),), labels=(str(data / "labels.nii.gz"),), classes="liver",
            classes_file=str(data / "classes.json"), pretrained=None, out=str(root / "liver"), steps=LIVER_STEPS,
            backbone="tiny", patch_size=32, spacing=(3.0, 6.0, 6.0), device="cpu", seed=0, lr=1e-2,
            val_fraction=0.25, val_every=LIVER_STEPS // 2, normalization=Normalization(mode="ct", window=(-200, 300)),
            num_threads=2, amp=False, mirror=True,  # float32: the same model on every run (bfloat16 kernels vary)
        )
        _LIVER["events"] = list(finetune(config))
        _LIVER["path"] = root / "liver"
    return _LIVER["path"], _LIVER["events"]  # type: ignore[return-value]
