"""``finetune --from``: a segmenter continued as a new version, with its plan, classes and channels, the old one untouched."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_segment_shared import phantom

from napari_ssl import checkpoint, io
from napari_ssl.training.finetune import FinetuneConfig, FinetuneTask, finetune

FAST = {"steps": 2, "backbone": "tiny", "patch_size": 32, "device": "cpu", "val_fraction": 0.0, "num_threads": 1,
        "amp": False, "warmup": 0}


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> Path:
    """A tiny segmenter, 2 steps on one phantom (named class, MR-style z-score normalisation)."""
    root = tmp_path_factory.mktemp("from")
    image, labels = phantom(seed=0)
    config = FinetuneConfig(pairs=((image, labels),), classes="lesion=1", out=str(root / "v1"), spacing=(2.0, 2.0, 2.0),
                            **FAST)
    *_, done = finetune(config)
    return Path(done.path)


def test_from_keeps_plan_classes_channels_and_the_old_version(first, tmp_path, monkeypatch) -> None:
    import torch

    old = checkpoint.open_checkpoint(first)
    before = _hashes(first)
    old_state = checkpoint.load_weights(first)
    started: dict[str, torch.Tensor] = {}
    setup = FinetuneTask.setup

    def spy(self, trainer):  # the network the continued run's optimizer starts from
        net = setup(self, trainer)
        started.update({k: v.detach().clone() for k, v in net.state_dict().items()})
        return net

    monkeypatch.setattr(FinetuneTask, "setup", spy)
    image, labels = phantom(seed=1)  # another case
    config = FinetuneConfig(pairs=((image, labels),), from_model=str(first), out=str(tmp_path / "v2"),
                            **{**FAST, "patch_size": None, "backbone": None, "lr": 1e-2})
    *_, done = finetune(config)

    assert started.keys() == old_state.keys()
    assert all(torch.equal(started[k], old_state[k]) for k in old_state)  # encoder, decoder and head all loaded
    new = checkpoint.open_checkpoint(done.path)
    assert new.spacing == old.spacing == (2.0, 2.0, 2.0) and new.patch_size == old.patch_size == (32, 32, 32)
    assert new.normalization == old.normalization and new.orientation == old.orientation
    assert new.plan.sources["spacing"] == "checkpoint" and new.plan.sources["patch_size"] == "checkpoint"
    assert [c.to_dict() for c in new.classes] == [c.to_dict() for c in old.classes]
    assert new.names == {0: "background", 1: "lesion"} and new.colors == old.colors
    assert new.in_channels == old.in_channels == 1 and new.channels == old.channels
    assert new.backbone == old.backbone and new.out_channels == old.out_channels
    assert new.step == 2 and new.total == 2  # the new run's budget
    assert new.model_version == 2 and old.model_version == 1
    assert new.continued_from["path"] == str(first) and new.continued_from["step"] == old.step
    assert new.continued_from["sha256"] == old.files["model.safetensors"]["sha256"]
    new_state = checkpoint.load_weights(done.path)
    assert any(not torch.equal(new_state[k], old_state[k]) for k in old_state)  # it trained
    assert _hashes(first) == before  # the previous version is untouched

    # a 3rd version counts on; --classes given and agreeing is accepted
    again = replace(config, from_model=done.path, out=str(tmp_path / "v3"), classes="lesion=1", steps=1)
    monkeypatch.setattr(FinetuneTask, "setup", setup)
    *_, third = finetune(again)
    assert checkpoint.open_checkpoint(third.path).model_version == 3


def test_from_refusals(first, tmp_path) -> None:
    image, labels = phantom(seed=1)
    base = {"pairs": ((image, labels),), "from_model": str(first), "out": str(tmp_path / "v2"), **FAST}
    before = _hashes(first)
    with pytest.raises(ValueError, match="is the --from folder"):
        FinetuneConfig(**{**base, "out": str(first)})
    with pytest.raises(ValueError, match="is the --from folder"):  # the same folder spelled otherwise
        FinetuneConfig(**{**base, "out": str(first) + "/."})
    with pytest.raises(ValueError, match="is inside the --from folder"):
        FinetuneConfig(**{**base, "out": str(first / "v2")})
    with pytest.raises(ValueError, match="either --from .* or --pretrained"):
        FinetuneConfig(**{**base, "pretrained": str(first)})
    two = ((image, image.with_array(image.array * 2)), labels)
    with pytest.raises(ValueError, match=r"takes 1 input channel\(s\) .* the images give 2"):
        next(finetune(FinetuneConfig(**{**base, "pairs": (two,)})))
    with pytest.raises(ValueError, match=r"--classes tumour \(ids 1\) differ from the classes of .*lesion \(ids 1\)"):
        next(finetune(FinetuneConfig(**{**base, "classes": "tumour=1"})))
    with pytest.raises(ValueError, match="--spacing differs from the plan"):
        next(finetune(FinetuneConfig(**{**base, "spacing": (1.0, 1.0, 1.0)})))
    pre = checkpoint.save(tmp_path / "ssl", {}, {"kind": "pretrain", "pretexts": ["rubik"], "model": {"x": 1},
                                                 "backbones": {"3d": {"size": "tiny"}}, "patch_size": 32})
    with pytest.raises(ValueError, match="is a pretraining checkpoint: give it to --pretrained"):
        next(finetune(FinetuneConfig(**{**base, "from_model": str(pre)})))
    assert not (tmp_path / "v2").exists()
    assert _hashes(first) == before


def test_cli_from_through_the_console_script(first, tmp_path) -> None:
    image, labels = phantom(seed=2)
    img = io.write(image, tmp_path / "img.nii.gz")
    lab = io.write(labels, tmp_path / "lab.nii.gz")
    before = _hashes(first)
    beside = Path(sys.executable).with_name("napari-ssl")
    exe = str(beside) if beside.is_file() else "napari-ssl"
    root = str(Path(__file__).resolve().parents[1])  # this checkout's package, as the tests import it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    argv = [exe, "finetune", "--from", str(first), "--images", str(img), "--labels", str(lab), "--steps", "2",
            "--val-fraction", "0", "--device", "cpu", "--threads", "1", "--no-amp", "--quiet"]
    out = subprocess.run([*argv, "--out", str(tmp_path / "v2")], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "finished step 2" in out.stdout
    new = checkpoint.open_checkpoint(tmp_path / "v2")
    old = checkpoint.open_checkpoint(first)
    assert new.continued_from["path"] == str(first) and new.config["from_model"] == str(first)
    assert new.patch_size == old.patch_size and new.classes == old.classes and new.normalization == old.normalization
    refused = subprocess.run([*argv, "--out", str(first)], capture_output=True, text=True, timeout=300, env=env)
    err = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(err) == 1 and "is the --from folder" in err[0], refused.stderr
    assert _hashes(first) == before
    assert np.isfinite(new.history["loss"]).all()
