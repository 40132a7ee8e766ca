"""Checkpoint meta: one typed, versioned dataclass; old checkpoints load, incomplete or newer ones get a sentence."""

from __future__ import annotations

import json

import pytest
from test_segment_shared import random_checkpoint

from napari_ssl import checkpoint
from napari_ssl.meta import META_VERSION, CheckpointMeta, read
from napari_ssl.segment import load_model


def _rewrite(path, change) -> None:
    meta_file = path / checkpoint.META_FILE
    meta = json.loads(meta_file.read_text())
    change(meta)
    state, _ = checkpoint.load(path)
    checkpoint.save(path, state, {k: v for k, v in meta.items() if k not in ("format", "format_version", "files", "versions")})


def test_a_version_1_checkpoint_still_loads(tmp_path) -> None:
    path = random_checkpoint(tmp_path / "old")  # written as before the plan: no meta_version, no plan
    raw = checkpoint.read_meta(path)
    assert "meta_version" not in raw and "plan" not in raw
    info = read(path)
    assert info.version == META_VERSION and info.kind == "segment" and info.plan is None
    assert info.names == {0: "background", 1: "lesion"} and info.patch_size == (32, 32, 32)
    model = load_model(path)
    assert model.patch_size == (32, 32, 32) and model.normalization().mode == "zscore"


def test_incomplete_or_newer_checkpoints_are_refused_in_words(tmp_path) -> None:
    path = random_checkpoint(tmp_path / "m")
    _rewrite(path, lambda m: m.pop("backbone"))
    with pytest.raises(checkpoint.CheckpointError, match=r"an incomplete segment checkpoint \(no backbone\); fine-tune"):
        load_model(path)
    newer = random_checkpoint(tmp_path / "n")
    _rewrite(newer, lambda m: m.update(meta_version=META_VERSION + 1))
    with pytest.raises(checkpoint.CheckpointError, match="written by a newer napari-ssl"):
        load_model(newer)


def test_round_trip_of_the_typed_meta() -> None:
    meta = CheckpointMeta(kind="pretrain", step=3, total=5, pretexts=("rubik",), model={"backbone": "tiny"},
                          backbones={"3d": {"size": "tiny"}}, patch_size=(32, 32, 32), spacing=(1.0, 2.0, 2.0))
    data = json.loads(json.dumps(meta.to_dict()))
    assert data["meta_version"] == META_VERSION
    assert CheckpointMeta.from_dict(data) == meta
    with pytest.raises(checkpoint.CheckpointError, match="unknown checkpoint kind"):
        CheckpointMeta(kind="weird")
