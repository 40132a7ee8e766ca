"""A multi-channel segmenter end to end: two modalities per case from files (``--images t1,flair``), fine-tuned, then
segmenting a case it never saw with both channels; its inputs are named by modality and a wrong channel count is a
sentence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_segment_shared import phantom

from napari_ssl import io
from napari_ssl.inference.segment import load_model, segment, uses_modality_ensemble
from napari_ssl.training.finetune import FinetuneConfig, finetune


def _case(folder, seed: int) -> tuple[str, str]:
    """A case as two modality files and its labels: t1 shows the lesion bright, flair dark (each alone suffices)."""
    image, labels = phantom(seed=seed)
    t1 = image.with_array(image.array.astype(np.float32))
    flair = image.with_array((200.0 - image.array).astype(np.float32))
    case = folder / f"case{seed}"
    case.mkdir()
    io.write(t1, case / "t1.nii.gz")
    io.write(flair, case / "flair.nii.gz")
    io.write(labels, case / "seg.nii.gz")
    return f"{case / 't1.nii.gz'},{case / 'flair.nii.gz'}", str(case / "seg.nii.gz")


@pytest.mark.slow
def test_two_modalities_train_and_segment_an_unseen_case(tmp_path) -> None:
    cases = [_case(tmp_path, seed) for seed in (0, 1, 2)]
    config = FinetuneConfig(images=tuple(c[0] for c in cases[:2]), labels=tuple(c[1] for c in cases[:2]),
                            classes="lesion=1", out=str(tmp_path / "model"), steps=80, backbone="tiny",
                            patch_size=32, device="cpu", val_fraction=0.0)
    events = list(finetune(config))
    assert type(events[-1]).__name__ == "Finished"
    model = load_model(tmp_path / "model")
    assert model.checkpoint.channels == ("t1", "flair")  # named by modality, never after a case
    unseen = [io.read(p) for p in cases[2][0].split(",")]
    truth = io.read(cases[2][1]).array > 0
    masks = segment(unseen, model, device="cpu")
    assert masks.same_geometry(unseen[0]) and masks.array.shape == truth.shape
    found = masks.array == 1
    dice = 2 * (found & truth).sum() / (found.sum() + truth.sum())
    trivial = 2 * truth.sum() / (truth.size + truth.sum())  # all foreground
    assert dice > max(0.5, trivial + 0.2), (dice, trivial)
    with pytest.raises(ValueError, match="t1, flair"):  # one channel for a two-channel model: a sentence
        segment(unseen[:1], model, device="cpu")


def test_modality_dropout_blanks_one_channel_of_a_patch_and_is_on_by_default_for_several(tmp_path) -> None:
    from napari_ssl.training.augment import CHANNEL_DROPOUT, Case, PatchSampler

    rng = np.random.default_rng(0)
    image = rng.normal(1.0, 1.0, (3, 24, 24, 24)).astype(np.float32) + 5.0  # no voxel equals a background
    labels = np.zeros((24, 24, 24), np.uint8)
    labels[8:16, 8:16, 8:16] = 1
    case = Case("c", image, labels, [-1.0, -2.0, -3.0])

    def blanked(p: float) -> list[int]:
        sampler = PatchSampler([case], (16, 16, 16), 1, augment=True, channel_dropout=p, seed=0)
        out = []
        for step in range(12):
            patch = sampler.batch(step, 2)["image"]
            for sample in patch:
                flat = [int(np.all(ch == bg)) for ch, bg in zip(sample, case.background, strict=True)]
                out.append(sum(flat))
        return out

    assert set(blanked(1.0)) == {1}  # every patch: exactly one channel shows nothing (its background)
    assert set(blanked(0.0)) == {0}
    some = blanked(0.3)
    assert 0 < sum(some) < len(some)

    cases = [_case(tmp_path, seed) for seed in (0, 1)]
    common = {"classes": "lesion=1", "steps": 1, "backbone": "tiny", "patch_size": 32, "device": "cpu",
              "val_fraction": 0.0, "amp": False}
    *_, two = finetune(FinetuneConfig(images=tuple(c[0] for c in cases), labels=tuple(c[1] for c in cases),
                                      out=str(tmp_path / "two"), **common))
    *_, one = finetune(FinetuneConfig(images=tuple(c[0].split(",")[0] for c in cases),
                                      labels=tuple(c[1] for c in cases), out=str(tmp_path / "one"), **common))
    ck2, ck1 = (load_model(p.path).checkpoint for p in (two, one))
    assert any(f"blanked in {CHANNEL_DROPOUT:.0%}" in n for n in ck2.plan.notes)
    assert not any("modality dropout" in n for n in ck1.plan.notes)
    # the checkpoint says so, and segmenting it then runs the modality ensemble by default (never for one channel)
    assert (ck2.modality_dropout, ck1.modality_dropout) == (CHANNEL_DROPOUT, 0.0)
    assert uses_modality_ensemble(ck2) and not uses_modality_ensemble(ck2, False)
    assert not uses_modality_ensemble(ck1) and not uses_modality_ensemble(ck1, True)


def test_checkpoints_written_before_the_dropout_was_stored_read_it_from_their_config() -> None:
    from napari_ssl.meta import SegmenterCheckpoint

    def ck(config: dict, channels: int = 4, **kw) -> SegmenterCheckpoint:
        return SegmenterCheckpoint(config=config, in_channels=channels, **kw)

    assert ck({"channel_dropout": None, "augment": True}).modality_dropout == 0.3  # the default of that time
    assert ck({"channel_dropout": 0.6, "augment": True}).modality_dropout == 0.6
    assert ck({"channel_dropout": None, "augment": False}).modality_dropout == 0.0
    assert ck({"augment": True}).modality_dropout == 0.0  # a config older than the option: never trained with it
    assert ck({"channel_dropout": None, "augment": True}, channels=1).modality_dropout == 0.0
    assert ck({"channel_dropout": 0.6}, channel_dropout=0.0).modality_dropout == 0.0  # what was stored wins


class _SeesTheCubeOnlyWithoutChannelZero(torch.nn.Module):
    """Foreground where channel 1 is bright and channel 0 is blanked (0): a structure channel 0 hides."""

    def forward(self, x):
        fg = 8.0 * ((x[:, 1] > 0.5) & (x[:, 0].abs() < 1e-6)).float() - 4.0
        return torch.stack([torch.zeros_like(fg), fg], 1)


class _CallsAWindowWithoutChannelZeroTumour(torch.nn.Module):
    """Foreground everywhere in a window whose channel 0 is blank throughout (0), background elsewhere."""

    def forward(self, x):
        blank = (x[:, 0].abs().amax(dim=(1, 2, 3)) < 1e-6).float()[:, None, None, None]
        fg = (8.0 * blank - 4.0).expand(-1, *x.shape[2:])
        return torch.stack([torch.zeros_like(fg), fg], 1)


def test_outside_the_body_the_modality_ensemble_keeps_the_as_is_answer() -> None:
    """Where every channel is at its background (outside the body) no modality hides anything: a blanked variant's
    answer there does not count, so blanking channel 0 of a window does not turn the space around the body into
    foreground."""
    from napari_ssl.inference.sliding import any_modality, predict_labels

    image = np.stack([np.zeros((24, 16, 16), np.float32), np.full((24, 16, 16), -1.0, np.float32)])
    image[0, :12], image[1, :12] = 1.0, 2.0  # the body: the first 12 slices; outside it both channels blank
    labels = predict_labels(_CallsAWindowWithoutChannelZeroTumour(), image, roi=(24, 16, 16), n_classes=2, amp=False,
                            blank_values=[0.0, -1.0])
    assert labels[:12].all() and not labels[12:].any()
    logits = torch.zeros(2, 1, 2, 4, 4, 4)
    logits[1, :, 1] = 5.0  # the blanked variant calls everything foreground, the as-is one nothing
    inside = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    inside[..., :2, :, :] = True
    found = any_modality(logits, inside).argmax(1) == 1
    assert torch.equal(found, inside[:, 0]) and any_modality(logits).argmax(1).all()


def test_the_modality_ensemble_finds_what_one_modality_hides() -> None:
    from napari_ssl.inference.sliding import any_modality, predict_labels

    image = np.ones((2, 24, 24, 24), np.float32)
    image[1] = -1.0
    image[1, 8:16, 8:16, 8:16] = 1.0  # the cube: bright on channel 1, unremarkable on channel 0
    net = _SeesTheCubeOnlyWithoutChannelZero()
    kw = {"roi": (16, 16, 16), "n_classes": 2, "amp": False}
    plain = predict_labels(net, image, **kw)
    both = predict_labels(net, image, blank_values=[0.0, -1.0], **kw)
    assert plain.sum() == 0  # as it is, channel 0 hides the cube
    assert (both == 1).sum() == 8**3 and both[8:16, 8:16, 8:16].all()  # with channel 0 blanked in turn it is found
    assert predict_labels(net, image, blank_values=[0.5, -1.0], **kw).sum() == 0  # channel 0 blanked to its own value

    # identical variants give back each one's probabilities; different ones: foreground where any variant finds it
    logits = torch.randn(1, 3, 4, 5, 5, 5)
    same = any_modality(logits.expand(3, -1, -1, -1, -1, -1))
    assert torch.allclose(torch.softmax(same, 1), torch.softmax(logits[0], 1), atol=1e-5)
    logits = torch.randn(4, 2, 2, 6, 6, 6) * 3
    union = (logits.argmax(2) == 1).any(0)
    assert torch.equal(any_modality(logits).argmax(1) == 1, union)
    # several classes: foreground where any variant finds it, its class the one the variant with every channel
    # prefers among the classes (a variant without T1ce cannot tell enhancing tumour from core)
    logits = torch.randn(5, 2, 4, 6, 6, 6) * 3
    labels = any_modality(logits).argmax(1)
    found = (logits.argmax(2) > 0).any(0)
    assert torch.equal(labels > 0, found)
    assert torch.equal(labels[found], logits[0, :, 1:].argmax(1)[found] + 1)
