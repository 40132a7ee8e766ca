"""Checkpoint meta: one typed, versioned dataclass; old checkpoints load, incomplete or newer ones get a sentence."""

from __future__ import annotations

import json

import pytest
from test_segment_shared import random_checkpoint

from napari_ssl import checkpoint
from napari_ssl.checkpoint import open_checkpoint
from napari_ssl.inference.segment import load_model
from napari_ssl.meta import FORMAT_VERSION, PretrainCheckpoint, SegmenterCheckpoint, build, from_dict


def _rewrite(path, change) -> None:
    """Change ``meta.json`` in place (its checksums cover the other files only)."""
    meta_file = path / checkpoint.META_FILE
    meta = json.loads(meta_file.read_text())
    change(meta)
    meta_file.write_text(json.dumps(meta))


def test_a_version_1_checkpoint_still_loads(tmp_path) -> None:
    path = random_checkpoint(tmp_path / "old")  # written as before the plan: no plan, spacing at the top
    _rewrite(path, lambda m: m.update(format_version=1))
    raw = checkpoint._read_meta(path)
    assert "meta_version" not in raw and "plan" not in raw
    info = open_checkpoint(path)
    assert isinstance(info, SegmenterCheckpoint) and info.version == FORMAT_VERSION and info.plan is None
    assert info.names == {0: "background", 1: "lesion"} and info.patch_size == (32, 32, 32)
    assert info.spacing == (2.0, 2.0, 2.0)
    model = load_model(path)
    assert model.checkpoint == info and model.checkpoint.normalization.mode == "zscore"


def _plan(spacing):
    return {"spacing": list(spacing), "patch_size": [32, 32, 32], "batch_size": 2, "steps": 10, "backbone": "tiny",
            "normalization": {"mode": "zscore_nonzero"}}


def test_a_version_2_checkpoint_with_two_versions_and_spacing_twice_opens(tmp_path) -> None:
    """Files written before one version: ``format_version`` 1 beside ``meta_version`` 2, the spacing at the top and
    in the plan (the bundled demonstration model is one)."""
    path = random_checkpoint(tmp_path / "v2", spacing=(2.0, 1.5, 1.5))
    _rewrite(path, lambda m: m.update(format_version=1, meta_version=2, plan=_plan((2.0, 1.5, 1.5))))
    info = open_checkpoint(path)
    assert info.version == FORMAT_VERSION and info.spacing == info.plan.spacing == (2.0, 1.5, 1.5)
    assert "spacing" not in info.to_dict() and "meta_version" not in info.to_dict()  # written again: once, one version
    _rewrite(path, lambda m: m.update(meta_version=FORMAT_VERSION + 1))
    with pytest.raises(checkpoint.CheckpointError, match="written by a newer napari-ssl"):
        open_checkpoint(path)


def test_the_plan_is_stored_once_and_spacing_read_from_it(tmp_path) -> None:
    info = from_dict({"kind": "segment", "classes": [{"index": 1, "name": "a", "ids": [1], "color": "#ffffff"}],
                      "backbone": {"size": "tiny"}, "in_channels": 1, "out_channels": 2, "patch_size": [32] * 3,
                      "spacing": [3.0, 1.0, 1.0], "plan": _plan((3.0, 1.0, 1.0))})
    data = info.to_dict()
    assert "spacing" not in data and data["plan"]["spacing"] == [3.0, 1.0, 1.0]
    assert from_dict(json.loads(json.dumps(data))).spacing == (3.0, 1.0, 1.0)
    # a pretraining run that resampled elsewhere than its plan (or not at all) keeps its own spacing
    pre = build("pretrain", pretexts=("context",), model={"backbone": "tiny"}, backbones={"3d": {"size": "tiny"}},
                patch_size=(32, 32, 32), spacing=None, plan=_plan((3.0, 1.0, 1.0)))
    assert pre.to_dict()["spacing"] is None and from_dict(pre.to_dict()).spacing is None
    path = checkpoint.save(tmp_path / "ck", {}, info)
    raw = checkpoint._read_meta(path)
    assert raw["format_version"] == FORMAT_VERSION and "meta_version" not in raw and "spacing" not in raw


def test_incomplete_or_newer_checkpoints_are_refused_in_words(tmp_path) -> None:
    path = random_checkpoint(tmp_path / "m")
    _rewrite(path, lambda m: m.pop("backbone"))
    with pytest.raises(checkpoint.CheckpointError, match=r"an incomplete segment checkpoint \(no backbone\); fine-tune"):
        load_model(path)
    newer = random_checkpoint(tmp_path / "n")
    _rewrite(newer, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(checkpoint.CheckpointError, match="is newer than this napari-ssl"):
        load_model(newer)
    with pytest.raises(checkpoint.CheckpointKindError, match="is a segment checkpoint") as err:
        open_checkpoint(random_checkpoint(tmp_path / "k"), kinds=("pretrain",))
    assert err.value.kind == "segment"


def test_round_trip_of_the_typed_meta() -> None:
    meta = build("pretrain", step=3, total=5, pretexts=("rubik",), model={"backbone": "tiny"},
                 backbones={"3d": {"size": "tiny"}}, patch_size=(32, 32, 32), spacing=(1.0, 2.0, 2.0))
    assert isinstance(meta, PretrainCheckpoint) and meta.backbone.size == "tiny"
    data = json.loads(json.dumps(meta.to_dict()))
    assert data["kind"] == "pretrain" and "meta_version" not in data
    assert from_dict(data) == meta
    with pytest.raises(checkpoint.CheckpointError, match="unknown checkpoint kind"):
        build("weird")


def test_opening_a_checkpoint_needs_no_torch() -> None:
    import subprocess
    import sys

    from napari_ssl.inference.bundled import PHANTOM_DEMO, bundled_path

    code = ("import sys\nfrom napari_ssl.checkpoint import open_checkpoint\n"
            f"ck = open_checkpoint({str(bundled_path(PHANTOM_DEMO))!r})\n"
            "assert ck.kind == 'segment' and ck.backbone.size == 'tiny'\n"
            "print(sorted(m for m in ('torch', 'monai', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
